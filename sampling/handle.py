"""The caller's side of one request to the sampling engine (sampling/engine.py): its text as
it is delivered, its logprobs, how it ended."""

from __future__ import annotations

import asyncio
import time

from sampling.scheduler import Sequence


class SequenceHandle:
    """The caller's side of one request: async iteration over text chunks, or `result()`."""

    def __init__(self, sequence: Sequence):
        self.sequence = sequence
        self._queue: asyncio.Queue[str | None] = asyncio.Queue()
        self._finished = asyncio.Event()  # result() waits for this alone, not for each chunk
        # One entry per delivered character when the request asked for logprobs (see
        # char_logprobs): a reader of `n` characters so far finds theirs at [:n].
        self.logprobs: list[tuple] = []
        self.submitted_at = time.perf_counter()
        self.first_char_at: float | None = None
        self.finished_at: float | None = None
        # Once finished: "length", "stop" (a stop string), "cancelled", "deadline", or "error"
        # (a step failed).
        self.reason: str | None = None

    # Called on the event loop thread when the engine delivers a batch of steps' output.
    def _emit(self, text: str, logprobs: list[tuple]) -> None:
        if self.first_char_at is None:
            self.first_char_at = time.perf_counter()
        self.logprobs += logprobs
        self._queue.put_nowait(text)

    def _finish(self, reason: str) -> None:
        if self.finished_at is None:
            self.finished_at, self.reason = time.perf_counter(), reason
            self._queue.put_nowait(None)
            self._finished.set()

    @property
    def prompt_logprobs(self) -> list[tuple | None]:
        """With logprobs asked: one entry per prime character (as `logprobs`' entries; None
        for the first, which nothing predicts, and for characters outside the vocabulary),
        complete once the first character is delivered. Empty without logprobs."""
        return self.sequence.prompt_logprobs or []

    def cancel(self) -> None:
        self.sequence.cancelled = True

    def __aiter__(self):
        return self

    async def __anext__(self) -> str:
        text = await self._queue.get()
        if text is None:
            self._queue.put_nowait(None)  # stay finished for later readers
            raise StopAsyncIteration
        return text + self._piled_up()  # fewer, larger chunks cost less to stream

    async def result(self) -> str:
        """The text not read yet, once the request has ended: its caller wakes once, not
        once per delivery (with 64 requests in flight, a wake-up of each per delivery took
        the GIL from the engine's worker thread for ~1 ms every few milliseconds)."""
        await self._finished.wait()
        return self._piled_up()

    def _piled_up(self) -> str:
        """Every chunk waiting in the queue, up to the end (which stays queued)."""
        pieces = []
        while not self._queue.empty():
            more = self._queue.get_nowait()
            if more is None:
                self._queue.put_nowait(None)
                break
            pieces.append(more)
        return "".join(pieces)

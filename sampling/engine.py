"""The sampling engine: scheduler + runner + sampler, and the async loop that drives them.

Each `step()` runs ONE batched runner step over every active sequence of the model: those
still reading their prime and those generating. Requests join and leave between steps
(continuous batching), so a short request never waits for a long one to finish.

Prime characters outside the vocabulary map to the unknown id 0 (the model has seen that id
for rare characters in training); the sampler never emits id 0. An empty prime starts from a
newline when the vocabulary has one (the start of a paragraph), else from id 0.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import numpy as np

from models.config import SampleConfig
from models.runner import StepRunner
from models.vocab import Vocab
from sampling.scheduler import Scheduler, Sequence
from sampling.stops import release_held

logger = logging.getLogger(__name__)


def sample_next(logits: np.ndarray, sequences: list[Sequence]) -> np.ndarray:
    """One id per row from softmax(logits / temperature), restricted to the top_k and then to
    the top_p nucleus, drawn with each sequence's own RNG so a seed gives the same text
    whatever else shares the batch."""
    logits = logits.astype(np.float64)
    logits[:, 0] = -np.inf  # never emit the unknown symbol
    temperature = np.array([s.temperature for s in sequences])[:, None]
    scaled = logits / temperature
    for row, sequence in enumerate(sequences):
        k = sequence.top_k
        if 0 < k < scaled.shape[1]:
            threshold = np.partition(scaled[row], -k)[-k]
            scaled[row, scaled[row] < threshold] = -np.inf
        if sequence.top_p < 1.0:
            _keep_nucleus(scaled[row], sequence.top_p)
    scaled -= scaled.max(axis=1, keepdims=True)
    probs = np.exp(scaled)
    cumulative = np.cumsum(probs, axis=1)
    draws = np.array([s.rng.random() for s in sequences]) * cumulative[:, -1]
    choice = (cumulative < draws[:, None]).sum(axis=1)
    return np.minimum(choice, logits.shape[1] - 1)


def _keep_nucleus(scaled: np.ndarray, top_p: float) -> None:
    """In place: keep the fewest most likely ids whose probabilities reach top_p (at least one)."""
    order = np.argsort(-scaled, kind="stable")
    probs = np.exp(scaled[order] - scaled[order[0]])
    cumulative = np.cumsum(probs / probs.sum())
    keep = int(np.searchsorted(cumulative, top_p)) + 1
    scaled[order[keep:]] = -np.inf


def char_logprobs(logits: np.ndarray, chosen: int, top: int, chars: list[str]) -> tuple:
    """`(logprob of the chosen id, ((char, logprob), ...) for the `top` most likely)`, from the
    model's own distribution (temperature 1, no top-k/top-p) over the ids it may emit."""
    row = logits.astype(np.float64)
    row[0] = -np.inf
    row -= row.max()
    logprobs = row - np.log(np.exp(row).sum())
    best = np.argsort(-logprobs, kind="stable")[:top]
    return float(logprobs[chosen]), tuple((chars[i], float(logprobs[i])) for i in best)


class SequenceHandle:
    """The caller's side of one request: async iteration over text chunks, or `result()`."""

    def __init__(self, sequence: Sequence):
        self.sequence = sequence
        self._queue: asyncio.Queue[str | None] = asyncio.Queue()
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

    def cancel(self) -> None:
        self.sequence.cancelled = True

    def __aiter__(self):
        return self

    async def __anext__(self) -> str:
        text = await self._queue.get()
        if text is None:
            self._queue.put_nowait(None)  # stay finished for later readers
            raise StopAsyncIteration
        # Coalesce what has piled up: fewer, larger chunks cost less to stream.
        while not self._queue.empty():
            more = self._queue.get_nowait()
            if more is None:
                self._queue.put_nowait(None)
                break
            text += more
        return text

    async def result(self) -> str:
        return "".join([chunk async for chunk in self])


class SamplingEngine:
    def __init__(self, runner: StepRunner, vocab: Vocab, max_batch: int = 64,
                 max_waiting: int = 1024, on_finish: Callable[[str], None] | None = None):
        self.runner, self.vocab = runner, vocab
        self.on_finish = on_finish  # called with each request's finish reason, on the loop
        self.scheduler = Scheduler(max_batch, max_waiting)
        runner.allocate(max_batch)
        self.start_id = vocab.encode("\n")[0] if "\n" in vocab.chars else 0
        self.handles: dict[int, SequenceHandle] = {}
        self.occupancy: list[int] = []  # batch size of each step since the last drain
        # Output of the steps run since the last delivery, handed to the handles on the event
        # loop in one go: a thread-safe wake-up per character cost more than the step itself.
        self._chars: dict[SequenceHandle, list[str]] = {}
        self._logprobs: dict[SequenceHandle, list[tuple]] = {}
        self._ended: list[tuple[SequenceHandle, str]] = []
        self._wake = asyncio.Event()
        self._closed = False

    @property
    def queue_depth(self) -> int:
        return len(self.scheduler.waiting)

    def submit(self, sample: SampleConfig, deadline_s: float | None = None) -> SequenceHandle:
        """Queue a request (raises QueueFull at the bound); it joins at the next step."""
        prompt = [int(i) for i in self.vocab.encode(sample.prime)] or [self.start_id]
        sequence = Sequence(
            prompt_ids=prompt, max_length=sample.max_length, temperature=sample.temperature,
            top_k=sample.top_k, top_p=sample.top_p, stop=sample.stop, logprobs=sample.logprobs,
            rng=np.random.default_rng(sample.seed),
            deadline=time.monotonic() + deadline_s if deadline_s else None)
        handle = SequenceHandle(sequence)
        self.scheduler.add(sequence)
        self.handles[sequence.request_id] = handle
        self._wake.set()
        return handle

    def step(self) -> int:
        """Run one batched step; returns how many sequences it advanced."""
        running, admitted, dropped = self.scheduler.schedule()
        for sequence in dropped:
            if not sequence.cancelled:
                self._release(sequence, len(sequence.held))  # text so far, ended by the deadline
            self._end(sequence, "cancelled" if sequence.cancelled else "deadline")
        for sequence in admitted:
            self.runner.reset(sequence.slot)
        if not running:
            return 0
        slots = np.fromiter((s.slot for s in running), np.int64, len(running))
        ids = np.fromiter((s.next_input() for s in running), np.int64, len(running))
        logits = self.runner.step(slots, ids)
        sampling = [i for i, s in enumerate(running) if s.sampling]
        for sequence in running:
            sequence.fed = min(sequence.fed + 1, len(sequence.prompt_ids))
        if sampling:
            chosen = sample_next(logits[sampling], [running[i] for i in sampling])
            for row, char_id in zip(sampling, chosen, strict=True):
                self._accept(running[row], int(char_id), logits[row])
        self.occupancy.append(len(running))
        return len(running)

    def _accept(self, sequence: Sequence, char_id: int, logits: np.ndarray) -> None:
        """A sampled character: deliver it (or hold it back while it may start a stop string),
        and retire the sequence at its length or its first stop string."""
        sequence.generated.append(char_id)
        entry = None if sequence.logprobs is None else char_logprobs(
            logits, char_id, sequence.logprobs, self.vocab.chars)
        sequence.held.append((self.vocab.chars[char_id], entry))
        if sequence.stop:
            ready, stopped = release_held("".join(c for c, _ in sequence.held), sequence.stop)
        else:
            ready, stopped = 1, False
        finished = "stop" if stopped else (
            "length" if len(sequence.generated) >= sequence.max_length else None)
        if finished == "length":
            ready = len(sequence.held)  # no stop string can complete any more
        self._release(sequence, ready)
        if finished:
            sequence.held.clear()  # after a stop: the stop string, never delivered
            self.scheduler.retire(sequence)
            self._end(sequence, finished)

    def _release(self, sequence: Sequence, count: int) -> None:
        """Deliver the first `count` held characters at the next `deliver()`."""
        if not count:
            return
        released, sequence.held = sequence.held[:count], sequence.held[count:]
        handle = self.handles[sequence.request_id]
        self._chars.setdefault(handle, []).extend(c for c, _ in released)
        if sequence.logprobs is not None:
            self._logprobs.setdefault(handle, []).extend(e for _, e in released)

    def _end(self, sequence: Sequence, reason: str) -> None:
        self._ended.append((self.handles.pop(sequence.request_id), reason))

    def deliver(self) -> None:
        """On the event loop: pass the text sampled since the last call to its handles, then
        end the finished ones (text first, so a finished stream is complete)."""
        chars, self._chars = self._chars, {}
        logprobs, self._logprobs = self._logprobs, {}
        ended, self._ended = self._ended, []
        for handle, pieces in chars.items():
            handle._emit("".join(pieces), logprobs.get(handle, []))
        for handle, reason in ended:
            handle._finish(reason)
            if self.on_finish is not None:
                self.on_finish(reason)

    def drain_occupancy(self) -> list[int]:
        taken, self.occupancy = self.occupancy, []
        return taken

    async def run(self) -> None:
        """Step while there is work (in a thread, so streaming goes on); sleep when idle."""
        while not self._closed:
            if not self.scheduler.has_work:
                self._wake.clear()
                await self._wake.wait()
                continue
            try:
                await asyncio.to_thread(self._steps_for, 0.005)
            except Exception:  # noqa: BLE001 - one bad step must not leave every caller waiting
                logger.exception("a sampling step failed; ending the requests it held")
                self._end_all("error")
            self.deliver()

    def _end_all(self, reason: str) -> None:
        for sequence in self.scheduler.clear():
            if sequence.request_id in self.handles:
                self._end(sequence, reason)

    def _steps_for(self, seconds: float) -> None:
        """Several steps per hop to the worker thread: the hop costs more than a small step.
        Each step still schedules first, so arrivals join at the very next step boundary."""
        until = time.perf_counter() + seconds
        while self.step() and time.perf_counter() < until and not self._closed:
            pass

    def close(self) -> None:
        """Stop after the sequences already admitted or queued have finished."""
        self._closed = not self.scheduler.has_work
        if not self._closed:
            try:
                asyncio.get_running_loop().create_task(self._close_when_idle())
            except RuntimeError:  # no loop (interpreter shutdown): nothing left to serve
                self._closed = True
        self._wake.set()

    async def _close_when_idle(self) -> None:
        while self.scheduler.has_work:
            await asyncio.sleep(0.05)
        self._closed = True
        self._wake.set()

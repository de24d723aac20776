"""The sampling engine: scheduler + runner + sampler, and the async loop that drives them.

Each `step()` runs ONE batched runner step over every active sequence of the model: those
still reading their prime and those generating. Requests join and leave between steps
(continuous batching), so a short request never waits for a long one to finish. The step's
bookkeeping is vectorised over the batch (sampling/slots.py, sampling/sampler.py); only
sequences with stop strings or logprobs take a per-character Python path.

A long prime need not cost one shared step per character: with `prefill_chars` > 0, a
sequence still reading its prime first feeds up to that many prime characters per step through
the runner's `prefill` (a pass over many characters of one sequence), the budget shared by all
sequences reading a prime, so a step's extra work stays bounded (a cancelled request stops
within one step) and generating sequences keep a steady pace. The text is the same either way.

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
from models.runner import StepRunner, slot_rows
from models.vocab import Vocab
from sampling.sampler import char_logprobs, random_key
from sampling.scheduler import QueueFull, Scheduler, Sequence
from sampling.slots import SlotTable
from sampling.stops import release_held

logger = logging.getLogger(__name__)

# Prime characters per step fed outside the shared batch (see the module's docstring; measured
# in BENCHMARKS.md, Sampling engine: long primes).
DEFAULT_PREFILL_CHARS = 64


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
                 max_waiting: int = 1024, on_finish: Callable[[str], None] | None = None,
                 prefill_chars: int = DEFAULT_PREFILL_CHARS):
        self.runner, self.vocab = runner, vocab
        self.on_finish = on_finish  # called with each request's finish reason, on the loop
        self.prefill_chars = prefill_chars  # 0: a prime is fed one character per shared step
        self.scheduler = Scheduler(max_batch, max_waiting)
        runner.allocate(max_batch)
        self.table = SlotTable(max_batch)
        self.start_id = vocab.encode("\n")[0] if "\n" in vocab.chars else 0
        # Each id's character as a UTF-32 code unit: a hop's ids become text in one decode.
        self._char_units = np.array(vocab.chars, dtype="<U1")
        self.handles: dict[int, SequenceHandle] = {}  # by request id, until its end is delivered
        self.occupancy: list[int] = []  # batch size of each step since the last drain
        self._batch: _Batch | None = None  # the running sequences as arrays; None: changed
        self._prefilling: list[Sequence] = []  # running, with more prompt than the next id
        # Output of the steps run since the last delivery, handed to the handles on the event
        # loop in one go: a thread-safe wake-up per character cost more than the step itself.
        # Sequences without stop strings or logprobs: (request ids, char ids) per step.
        self._sampled: list[tuple[np.ndarray, np.ndarray]] = []
        self._chars: dict[SequenceHandle, list[str]] = {}  # the others' released text
        self._logprobs: dict[SequenceHandle, list[tuple]] = {}
        self._ended: list[tuple[int, str]] = []  # (request id, reason)
        self._wake = asyncio.Event()
        self._closed = False

    @property
    def queue_depth(self) -> int:
        return len(self.scheduler.waiting)

    def submit(self, sample: SampleConfig, deadline_s: float | None = None) -> SequenceHandle:
        """Queue a request (raises QueueFull at the bound); it joins at the next step."""
        prompt = [int(i) for i in self.vocab.encode(sample.prime)] or [self.start_id]
        asks_logprobs = sample.logprobs is not None
        sequence = Sequence(
            prompt_ids=prompt, max_length=sample.max_length, temperature=sample.temperature,
            top_k=sample.top_k, top_p=sample.top_p, stop=sample.stop, logprobs=sample.logprobs,
            key=random_key(sample.seed),
            deadline=time.monotonic() + deadline_s if deadline_s else None,
            prompt_logprobs=([None] if sample.prime else []) if asks_logprobs else None)
        handle = SequenceHandle(sequence)
        self.handles[sequence.request_id] = handle
        try:  # the handle first: the worker thread may admit the sequence at once
            self.scheduler.add(sequence)
        except QueueFull:
            del self.handles[sequence.request_id]
            raise
        self._wake.set()
        return handle

    def step(self) -> int:
        """Run one batched step; returns how many sequences it advanced."""
        batch = self._schedule()
        if batch is None:
            return 0
        self._prefill()
        logits = self.runner.step(batch.slots, self.table.next_id[batch.index])
        reading = self.table.prompt_left[batch.index] > 1  # fed a prompt id that is not the last
        if reading.any():
            for row in np.flatnonzero(reading):
                self._prompt_fed(batch.sequences[row], logits[row:row + 1])
            rows = np.flatnonzero(~reading)
            self._sample(logits[rows], rows, batch.slots[rows])
        else:
            self._sample(logits, batch.rows, batch.index)
        self.occupancy.append(len(batch.slots))
        return len(batch.slots)

    def _schedule(self) -> _Batch | None:
        """Admit and drop at the step boundary; the running sequences as arrays (rebuilt only
        when they changed), or None when nothing runs."""
        running, admitted, dropped = self.scheduler.schedule()
        for sequence in dropped:
            if not sequence.cancelled:
                self._release(sequence, len(sequence.held))  # text so far, ended by the deadline
            self._end(sequence, "cancelled" if sequence.cancelled else "deadline")
        for sequence in admitted:
            self.runner.reset(sequence.slot)
            self.table.load(sequence)
            if len(sequence.prompt_ids) > 1:
                self._prefilling.append(sequence)
        if admitted or dropped or self._batch is None:
            self._batch = _Batch(running) if running else None
        return self._batch

    def _prefill(self) -> None:
        """Feed sequences reading a prime up to `prefill_chars` prime characters in all, each
        keeping its last prime character for the shared step (whose logits it samples)."""
        self._prefilling = [s for s in self._prefilling
                            if not s.done and self.table.prompt_left[s.slot] > 1]
        budget = self.prefill_chars
        for sequence in self._prefilling:
            if budget <= 0:
                break
            fed = self.table.prompt_fed(sequence)
            count = min(budget, len(sequence.prompt_ids) - 1 - fed)
            ids = np.asarray(sequence.prompt_ids[fed:fed + count], np.int64)
            self._prompt_fed(sequence, self.runner.prefill(sequence.slot, ids))
            budget -= count

    def _prompt_fed(self, sequence: Sequence, logits: np.ndarray) -> None:
        """The next `len(logits)` prompt ids were fed: note the logprobs of the prompt
        characters they predict, if asked, and move to the next prompt id."""
        if sequence.prompt_logprobs is not None:
            fed = self.table.prompt_fed(sequence)
            predicted = sequence.prompt_ids[fed + 1:fed + 1 + len(logits)]
            sequence.prompt_logprobs += [
                None if char_id == 0 else  # outside the vocabulary: the model never emits it
                char_logprobs(row, char_id, sequence.logprobs, self.vocab.chars)
                for row, char_id in zip(logits, predicted, strict=True)]
        self.table.advance_prompt(sequence, len(logits))

    def _sample(self, logits: np.ndarray, rows: np.ndarray, slots: np.ndarray | slice) -> None:
        """Sample the next character of the sequences in `rows` of the batch (in `slots`, or
        a slice of them when consecutive; one row of `logits` each), record it, retire those
        that are done."""
        if not len(rows):
            return
        batch, table = self._batch, self.table
        chosen = table.sample(logits, slots)
        owners = np.array(table.owner[slots])  # a copy: the slots may be reloaded before delivery
        at_length = table.generated[slots] >= table.max_length[slots]
        if not batch.any_slow:  # the usual batch: no per-row Python
            self._sampled.append((owners, chosen))
            for row in np.flatnonzero(at_length):
                self._retire(batch.sequences[rows[row]], "length")
            return
        slow = batch.slow[rows]
        fast = ~slow
        if fast.any():
            self._sampled.append((owners[fast], chosen[fast]))
        for row in np.flatnonzero(fast & at_length):
            self._retire(batch.sequences[rows[row]], "length")
        for row in np.flatnonzero(slow):
            self._accept(batch.sequences[rows[row]], int(chosen[row]), logits[row])

    def _accept(self, sequence: Sequence, char_id: int, logits: np.ndarray) -> None:
        """A sampled character of a sequence with stop strings or logprobs: deliver it (or
        hold it back while it may start a stop string), and retire the sequence at its length
        or its first stop string."""
        entry = None if sequence.logprobs is None else char_logprobs(
            logits, char_id, sequence.logprobs, self.vocab.chars)
        sequence.held.append((self.vocab.chars[char_id], entry))
        if sequence.stop:
            ready, stopped = release_held("".join(c for c, _ in sequence.held), sequence.stop)
        else:
            ready, stopped = 1, False
        at_length = self.table.generated[sequence.slot] >= sequence.max_length
        if at_length and not stopped:
            ready = len(sequence.held)  # no stop string can complete any more
        self._release(sequence, ready)
        if stopped or at_length:
            sequence.held.clear()  # after a stop: the stop string, never delivered
            self._retire(sequence, "stop" if stopped else "length")

    def _retire(self, sequence: Sequence, reason: str) -> None:
        self._end(sequence, reason)
        self.scheduler.retire(sequence)
        self._batch = None

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
        if sequence.slot is not None:  # its slot is not reloaded before this step's admissions
            sequence.generated = int(self.table.generated[sequence.slot])
        self._ended.append((sequence.request_id, reason))

    def _sampled_text(self) -> dict[SequenceHandle, str]:
        """The fast path's characters since the last delivery, as text per request (in the
        order sampled)."""
        if not self._sampled:
            return {}
        owners, ids = (np.concatenate(part) for part in zip(*self._sampled, strict=True))
        self._sampled = []
        order = np.argsort(owners, kind="stable")
        owners = owners[order]
        text = self._char_units[ids[order]].tobytes().decode("utf-32-le")
        starts = np.flatnonzero(np.r_[True, owners[1:] != owners[:-1]])
        ends = np.r_[starts[1:], len(owners)]
        return {self.handles[int(owners[start])]: text[start:end]
                for start, end in zip(starts.tolist(), ends.tolist(), strict=True)}

    def deliver(self) -> None:
        """On the event loop: pass the text sampled since the last call to its handles, then
        end the finished ones (text first, so a finished stream is complete)."""
        sampled = self._sampled_text()
        chars, self._chars = self._chars, {}
        logprobs, self._logprobs = self._logprobs, {}
        ended, self._ended = self._ended, []
        for handle, text in sampled.items():
            handle._emit(text, [])
        for handle, pieces in chars.items():
            handle._emit("".join(pieces), logprobs.get(handle, []))
        for request_id, reason in ended:
            self.handles.pop(request_id)._finish(reason)
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
            try:
                self.deliver()
            except Exception:  # noqa: BLE001 - nor must a failed delivery end this loop
                logger.exception("delivering sampled text failed; ending every request")
                self._fail_every_handle()

    def _end_all(self, reason: str) -> None:
        for sequence in self.scheduler.clear():  # the ones not ended yet
            self._end(sequence, reason)
        self._batch, self._prefilling = None, []

    def _fail_every_handle(self) -> None:
        """After a delivery failed midway, which text reached whom is unknown: every request
        still held ends with "error" (a caller sees an error, never a text that looks whole),
        and the engine starts clean for the next ones."""
        self._end_all("error")
        self._sampled, self._chars, self._logprobs, self._ended = [], {}, {}, []
        handles, self.handles = self.handles, {}
        for handle in handles.values():
            if handle.finished_at is None:
                handle._finish("error")
                if self.on_finish is not None:
                    self.on_finish("error")

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


class _Batch:
    """The running sequences of a step, in row order, with their slots and which of them take
    the per-character path (stop strings, logprobs). Rows are in slot order: a full batch is
    then one run of slots, whose state the NumPy runner reads as views (models/runner.py)."""

    def __init__(self, sequences: list[Sequence]):
        sequences = sorted(sequences, key=lambda s: s.slot)
        self.sequences = sequences
        self.slots = np.fromiter((s.slot for s in sequences), np.int64, len(sequences))
        # The slot table's rows of the batch: a slice when its slots are consecutive.
        self.index = slot_rows(self.slots)
        self.slow = np.fromiter((s.slow for s in sequences), bool, len(sequences))
        self.any_slow = bool(self.slow.any())
        self.rows = np.arange(len(sequences))

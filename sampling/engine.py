"""The sampling engine: scheduler + runner + sampler, a worker thread that steps them, and the
async loop that hands their text to the requests.

Each `step()` runs ONE batched runner step over every active sequence of the model: those
still reading their prime and those generating. Requests join and leave between steps
(continuous batching), so a short request never waits for a long one to finish. The step's
bookkeeping is vectorised over the batch (sampling/slots.py, sampling/sampler.py); only
sequences with stop strings or logprobs take a per-character Python path.

The steps run on the engine's own worker thread in hops of a few milliseconds; after each hop
the event loop (`run()`) delivers the hop's text while the worker already computes the next
steps, so delivering no longer adds to a step's time (most of a step is matrix products that
release the GIL). The two threads share only the published output (sampling/output.py) and
the scheduler's queue, each under its lock.

With the compiled runner, steps in which nothing happens per character in Python (no stop
strings, logprobs or prime being read) run several at a time in one compiled call that also
samples (sampling/fused_steps.py), about half a hop of them; the text is the same.

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
import threading
import time
from collections.abc import Callable

import numpy as np

from models.compiled_runner import CompiledStepRunner
from models.config import SampleConfig
from models.runner import StepRunner, slot_rows
from models.vocab import Vocab
from sampling.fused_steps import load_fused_kernels, run_fused_steps
from sampling.handle import SequenceHandle
from sampling.output import StepOutput
from sampling.sampler import char_logprobs, random_key
from sampling.scheduler import QueueFull, Scheduler, Sequence
from sampling.slots import SlotTable
from sampling.stops import release_held

logger = logging.getLogger(__name__)

# Prime characters per step fed outside the shared batch (see the module's docstring; measured
# in BENCHMARKS.md, Sampling engine: long primes).
DEFAULT_PREFILL_CHARS = 64
# Steps per hand-off to the event loop: the worker thread runs steps for this long before it
# hands their text over (a hand-off per character cost more than the step itself), while the
# loop delivers the previous hop's text.
HOP_SECONDS = 0.005
# ...and for at least this many runner steps: a big model's step at a full batch takes about a
# hop (2x512 at 64 streams: ~5 ms), and a hand-off after each step had the event loop's
# delivery share the cores with every step's threads (measured: BENCHMARKS.md, Sampling
# engine, issue 18.4). A small model's hop holds more steps than this anyway.
MIN_HOP_STEPS = 4
TAKE_TIMEOUT_S = 0.1  # the worker steps on if the event loop is this late to take a hop's text
# Fused steps (the compiled runner, sampling/fused_steps.py): a call runs for about this long of
# the worker thread's CPU time, so joins, cancels and deadlines still take effect within a hop.
# CPU time, not the clock's: on cores shared with the HTTP path, the worker waits in the run
# queue for longer than it runs (measured at 32 users: about 3 times as long), and a pace by
# the clock cut the calls to ~6 steps, each paying the engine's Python and a GIL hand-off.
FUSED_CALL_SECONDS = HOP_SECONDS / 2
# A bound on a call's steps whatever the pace says, should the pace be wrong (measured on a
# smaller batch, or with the weights still in cache). Above what the pace allows the reference
# 2x128 model (~13 us a one-row step: ~190 steps): at 64, its 200-character requests took 3.6-3.8
# calls each under load, at 256 2.8-3.0, each call paying the engine's Python and a GIL
# hand-off once (BENCHMARKS.md, End to end, stop 24).
MAX_FUSED_STEPS = 256


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
        # The compiled runner splitting its rows over the cores fuses steps; a big model's
        # step, split by units, takes a fused call's whole time alone.
        self._fuses = isinstance(runner, CompiledStepRunner) and not runner.splits_units
        self._load_kernels()
        self.start_id = vocab.encode("\n")[0] if "\n" in vocab.chars else 0
        # Each id's character as a UTF-32 code unit: a hop's ids become text in one decode.
        self._char_units = np.array(vocab.chars, dtype="<U1")
        self.handles: dict[int, SequenceHandle] = {}  # by request id, until its end is delivered
        # Batch size of each call (a step, or fused steps) delivered since the last drain.
        self.occupancy: list[int] = []
        self.steps_run = 0  # runner steps since the start, a fused call's each counted
        self._batch: _Batch | None = None  # the running sequences as arrays; None: changed
        self._prefilling: list[Sequence] = []  # running, with more prompt than the next id
        # CPU seconds per fused step (0: not measured yet, one step a call), as measured on a
        # batch of `_fused_pace_rows` sequences.
        self._fused_pace, self._fused_pace_rows = 0.0, 1
        # The steps' output: the worker thread's since its last step (`_pending`), published
        # after each step to `_outbox`, which the event loop takes in `deliver()` (under
        # `_lock`: the only state both threads write).
        self._pending, self._outbox = StepOutput(), StepOutput()
        self._lock = threading.Lock()
        self._has_work = threading.Event()  # set by submit() and close(): the worker wakes
        self._closing = False  # close() was called: the worker ends once idle
        self._worker_done = False
        self._loop: asyncio.AbstractEventLoop | None = None  # run()'s, for the worker's wake-ups
        self._published: asyncio.Event | None = None
        # Set when run() takes the output: the worker wakes run() once per take, and never gets
        # more than one hop ahead of it. A worker that steps on regardless can starve the event
        # loop of the GIL (measured: a tiny model's 10,000 characters went out in one chunk,
        # after 0.8 s, past the client's cancel).
        self._taken = threading.Event()
        self._taken.set()  # nothing handed over yet

    def _load_kernels(self) -> None:
        """Load the compiled sampler (and, for the compiled runner, the fused steps) now, at
        model load, not in a request: each is read from numba's cache at its first call."""
        no_slots = np.zeros(0, np.int64)
        self.table.sample(np.zeros((0, self.vocab.size), np.float32), no_slots)
        if self._fuses:
            load_fused_kernels(self.runner, self.table)

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
        self._has_work.set()
        return handle

    def step(self) -> int:
        """Run one batched step; returns how many sequences it advanced. Its output is
        published for the next `deliver()` even when the step fails midway."""
        try:
            return self._step()
        finally:
            self._publish()

    def _step(self) -> int:
        batch = self._schedule()
        if batch is None:
            return 0
        # The prefill first: a sequence left with only its prime's last character fuses at
        # once, rather than making its batch take one single step per new request.
        self._prefill()
        if self._fusable(batch):
            return self._fused(batch)
        logits = self.runner.step(batch.slots, self.table.next_id[batch.index])
        reading = self.table.prompt_left[batch.index] > 1  # fed a prompt id that is not the last
        if reading.any():
            for row in np.flatnonzero(reading):
                self._prompt_fed(batch.sequences[row], logits[row:row + 1])
            rows = np.flatnonzero(~reading)
            self._sample(logits[rows], rows, batch.slots[rows])
        else:
            self._sample(logits, batch.rows, batch.index)
        self._pending.occupancy.append(len(batch.slots))
        self.steps_run += 1
        return len(batch.slots)

    def _fusable(self, batch: _Batch) -> bool:
        """Whether the next steps can run as one compiled call (sampling/fused_steps.py):
        a runner that fuses steps, and nothing per character in Python."""
        return (self._fuses and not batch.any_slow
                and not (self.table.prompt_left[batch.index] > 1).any())

    def _fused(self, batch: _Batch) -> int:
        """Several steps of the batch in one call, as many as fit in `FUSED_CALL_SECONDS`
        (by the last calls' pace, in CPU time) and end before any sequence reaches its length;
        returns the sequence steps run."""
        table, rows = self.table, len(batch.slots)
        left = int((table.max_length[batch.index] - table.generated[batch.index]).min())
        expected = self._step_seconds(rows)
        fit = int(FUSED_CALL_SECONDS / expected) if expected else 1
        steps = max(1, min(left, MAX_FUSED_STEPS, fit))
        started = time.thread_time()
        chosen = run_fused_steps(self.runner, table, batch.slots, steps)
        self.steps_run += steps
        pace = (time.thread_time() - started) / steps
        # A moving average of the last calls (the first call's pace as it is): a shared
        # machine's speed changes.
        self._fused_pace = expected + (pace - expected) / 4 if expected else pace
        self._fused_pace_rows = rows
        self._pending.sampled.append((np.tile(table.owner[batch.index], steps), chosen.ravel()))
        self._pending.occupancy.append(rows)  # once per call: each is a metric observation
        for row in np.flatnonzero(table.generated[batch.index] >= table.max_length[batch.index]):
            self._retire(batch.sequences[row], "length")
        return rows * steps

    def _step_seconds(self, rows: int) -> float:
        """A fused step's expected CPU seconds for a batch of `rows` sequences, from the pace
        measured on the last calls' batch; never an underestimate, so a call ends within its
        time when the batch changed. A step's cost grows with the rows, but less than in
        proportion (a small batch's step mostly reads the weights): a larger batch is expected
        to cost in proportion, a smaller one as much as the measured batch."""
        return self._fused_pace * max(1.0, rows / self._fused_pace_rows)

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
            self._pending.sampled.append((owners, chosen))
            for row in np.flatnonzero(at_length):
                self._retire(batch.sequences[rows[row]], "length")
            return
        slow = batch.slow[rows]
        fast = ~slow
        if fast.any():
            self._pending.sampled.append((owners[fast], chosen[fast]))
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
        self._pending.release(sequence.request_id, released, sequence.logprobs is not None)

    def _end(self, sequence: Sequence, reason: str) -> None:
        if sequence.slot is not None:  # its slot is not reloaded before this step's admissions
            sequence.generated = int(self.table.generated[sequence.slot])
        self._pending.ended.append((sequence.request_id, reason))

    def _publish(self) -> None:
        """Hand the output since the last call to the next `deliver()`."""
        with self._lock:
            self._outbox.absorb(self._pending)
        self._pending = StepOutput()

    def deliver(self) -> None:
        """On the event loop: pass the text published since the last call to its handles,
        then end the finished ones (text first, so a finished stream is complete). A request
        whose handle is gone (ended by a failed delivery) is skipped."""
        output = self._take_output()
        self.occupancy += output.occupancy
        for request_id, text in output.sampled_text(self._char_units).items():
            if handle := self.handles.get(request_id):
                handle._emit(text, [])
        for request_id, chars in output.chars.items():
            if handle := self.handles.get(request_id):
                handle._emit("".join(chars), output.logprobs.get(request_id, []))
        for request_id, reason in output.ended:
            if handle := self.handles.pop(request_id, None):
                handle._finish(reason)
                if self.on_finish is not None:
                    self.on_finish(reason)

    def _take_output(self) -> StepOutput:
        """The output published so far, for the event loop; the next hop may wake it again."""
        with self._lock:
            output, self._outbox = self._outbox, StepOutput()
        self._taken.set()
        return output

    def drain_occupancy(self) -> list[int]:
        taken, self.occupancy = self.occupancy, []
        return taken

    async def run(self) -> None:
        """Steps run on a worker thread of this engine while there is work; here, on the event
        loop, each hop's text goes to its requests while the worker runs the next steps.
        Returns once `close()` was called and the work left has finished."""
        self._loop, self._published = asyncio.get_running_loop(), asyncio.Event()
        threading.Thread(target=self._work, name="sampling-engine", daemon=True).start()
        while True:
            await self._published.wait()
            self._published.clear()
            finished = self._worker_done  # read first: what it published before is delivered now
            try:
                self.deliver()
            except Exception:  # noqa: BLE001 - a failed delivery must not end this loop
                logger.exception("delivering sampled text failed; ending every request")
                self._fail_every_handle()
            if finished:
                return

    def _work(self) -> None:
        """The worker thread: hops of steps while there is work, sleeping when idle, until
        `close()` and no work left."""
        try:
            while True:
                if not self.scheduler.has_work:
                    if self._closing:
                        return
                    self._has_work.wait()
                    self._has_work.clear()  # has_work is checked again before any wait
                    continue
                try:
                    self._steps_for(HOP_SECONDS, MIN_HOP_STEPS)
                except Exception:  # noqa: BLE001 - one bad step must not leave every caller waiting
                    logger.exception("a sampling step failed; ending the requests it held")
                    self._end_all("error")
                    self._publish()
                # At most one hop ahead of the loop: this hop's steps ran while the loop
                # delivered the previous one's text; its own is handed over once that was taken
                # (a loop that late has the previous wake-up still to take, which covers it).
                if self._taken.wait(TAKE_TIMEOUT_S):
                    self._taken.clear()
                    self._wake_run()
        finally:
            self._worker_done = True
            self._wake_run()  # always: run() may have read _worker_done just before this

    def _wake_run(self) -> None:
        """From the worker: have `run()` deliver what is published."""
        try:
            self._loop.call_soon_threadsafe(self._published.set)
        except RuntimeError:  # the event loop is closed: nobody is left to deliver to
            pass

    def _end_all(self, reason: str) -> None:
        """On the worker thread: end every sequence not ended yet."""
        for sequence in self.scheduler.clear():
            self._end(sequence, reason)
        self._batch, self._prefilling = None, []

    def _fail_every_handle(self) -> None:
        """After a delivery failed midway, which text reached whom is unknown: every request
        still held ends with "error" now (a caller sees an error, never a text that looks
        whole), and is cancelled so that the worker drops its sequence at its next step."""
        self._take_output()  # theirs: undeliverable now
        handles, self.handles = self.handles, {}
        for handle in handles.values():
            handle.cancel()
            if handle.finished_at is None:
                handle._finish("error")
                if self.on_finish is not None:
                    self.on_finish("error")

    def _steps_for(self, seconds: float, min_steps: int) -> None:
        """Several steps per hop, for `seconds` and at least `min_steps` runner steps while
        there is work: each still schedules first, so arrivals join at the very next step
        boundary."""
        until = time.perf_counter() + seconds
        enough = self.steps_run + min_steps
        while self.step() and (time.perf_counter() < until or self.steps_run < enough):
            pass

    def close(self) -> None:
        """Stop after the sequences already admitted or queued have finished (the worker ends
        once idle, and `run()` after delivering their text)."""
        self._closing = True
        self._has_work.set()


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

"""The scheduler: which sequences run in the next batched step (continuous batching).

Plain Python, no I/O. Waiting sequences are admitted FIFO into free slots at step
boundaries; a finished or cancelled sequence leaves at once and its slot is reused by the
next step. No request starves: admission is first come first served, and every running
sequence frees its slot within `max_length` (+ prime) steps.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from sampling.sampler import random_key


class QueueFull(Exception):
    """The waiting queue is at its bound: the caller should retry later (HTTP 503)."""


_ids = itertools.count()


@dataclass(eq=False)
class Sequence:
    prompt_ids: list[int]  # fed before sampling starts (never empty)
    max_length: int
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()  # the text ends before the first of these (sampling/stops.py)
    logprobs: int | None = None  # alternatives to report per character (None: no logprobs)
    key: int = field(default_factory=lambda: random_key(None))  # its random stream (sampler.py)
    deadline: float | None = None  # time.monotonic() after which it is retired unfinished
    request_id: int = field(default_factory=lambda: next(_ids))
    slot: int | None = None
    generated: int = 0  # characters sampled: the engine counts them per slot, this when it ends
    # Sampled characters not delivered yet (each with its logprobs, or None): they may be the
    # start of a stop string.
    held: list[tuple[str, tuple | None]] = field(default_factory=list)
    # Per prompt character when logprobs are asked (the first has none): filled while the
    # prompt is fed, so complete before the first sampled character.
    prompt_logprobs: list[tuple | None] | None = None
    cancelled: bool = False
    done: bool = False

    def expired(self, now: float) -> bool:
        return self.deadline is not None and now > self.deadline

    @property
    def slow(self) -> bool:
        """Needs per-character Python after sampling: stop strings to watch, or logprobs."""
        return bool(self.stop) or self.logprobs is not None


class Scheduler:
    def __init__(self, max_batch: int, max_waiting: int):
        self.max_batch, self.max_waiting = max_batch, max_waiting
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.free_slots = list(range(max_batch - 1, -1, -1))  # pop() hands out slot 0 first
        # Requests arrive on the event loop while steps run in a worker thread.
        self._lock = threading.RLock()

    def add(self, sequence: Sequence) -> None:
        with self._lock:
            if len(self.waiting) >= self.max_waiting:
                raise QueueFull(f"{len(self.waiting)} requests already waiting")
            self.waiting.append(sequence)

    def schedule(self) -> tuple[list[Sequence], list[Sequence], list[Sequence]]:
        """At a step boundary: retire cancelled/expired sequences, admit waiting ones into
        free slots. Returns (sequences to run this step, just admitted, just dropped)."""
        with self._lock:
            now = time.monotonic()
            dropped = [s for s in [*self.running, *self.waiting] if s.cancelled or s.expired(now)]
            for sequence in dropped:
                self.retire(sequence)
            if dropped:
                self.waiting = deque(s for s in self.waiting if not s.done)
            admitted = []
            while self.waiting and self.free_slots:
                sequence = self.waiting.popleft()
                sequence.slot = self.free_slots.pop()
                self.running.append(sequence)
                admitted.append(sequence)
            return list(self.running), admitted, dropped

    def retire(self, sequence: Sequence) -> None:
        """Remove a running sequence at once and free its slot for the next step."""
        with self._lock:
            sequence.done = True
            if sequence in self.running:
                self.running.remove(sequence)
                self.free_slots.append(sequence.slot)

    def clear(self) -> list[Sequence]:
        """Retire every running and waiting sequence (after a failed step); returns them."""
        with self._lock:
            everything = [*self.running, *self.waiting]
            for sequence in everything:
                self.retire(sequence)
            self.waiting.clear()
            return everything

    @property
    def has_work(self) -> bool:
        return bool(self.running or self.waiting)

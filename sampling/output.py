"""What the engine's steps produced for its requests, on its way from the worker thread that
runs the steps to the event loop that hands it to the requests (sampling/engine.py).

Everything is keyed by request id, never by the request's handle: the handles belong to the
event loop, and a request the loop has already ended (a failed delivery) simply finds no
reader when its last text arrives.
"""

from __future__ import annotations

import numpy as np


class StepOutput:
    def __init__(self):
        # Sequences without stop strings or logprobs: (request ids, char ids) per step, turned
        # into text per request once per delivery (a wake-up per character cost more than a step).
        self.sampled: list[tuple[np.ndarray, np.ndarray]] = []
        self.chars: dict[int, list[str]] = {}  # the others' released characters
        self.logprobs: dict[int, list[tuple]] = {}  # theirs, when asked
        self.ended: list[tuple[int, str]] = []  # (request id, reason), after their text
        self.occupancy: list[int] = []  # sequences in each call (a step, or fused steps)

    def release(self, request_id: int, released: list[tuple[str, tuple | None]],
                with_logprobs: bool) -> None:
        """Characters of a sequence with stop strings or logprobs, each with its entry."""
        self.chars.setdefault(request_id, []).extend(c for c, _ in released)
        if with_logprobs:
            self.logprobs.setdefault(request_id, []).extend(e for _, e in released)

    def absorb(self, later: StepOutput) -> None:
        """Append what `later` steps produced (their order kept)."""
        self.sampled += later.sampled
        for request_id, chars in later.chars.items():
            self.chars.setdefault(request_id, []).extend(chars)
        for request_id, entries in later.logprobs.items():
            self.logprobs.setdefault(request_id, []).extend(entries)
        self.ended += later.ended
        self.occupancy += later.occupancy

    def sampled_text(self, char_units: np.ndarray) -> dict[int, str]:
        """The fast path's characters as text per request id, in the order sampled;
        `char_units` holds each id's character as a UTF-32 code unit (one decode for all)."""
        if not self.sampled:
            return {}
        owners, ids = (np.concatenate(part) for part in zip(*self.sampled, strict=True))
        order = np.argsort(owners, kind="stable")
        owners = owners[order]
        text = char_units[ids[order]].tobytes().decode("utf-32-le")
        starts = np.flatnonzero(np.r_[True, owners[1:] != owners[:-1]])
        ends = np.r_[starts[1:], len(owners)]
        return {int(owners[start]): text[start:end]
                for start, end in zip(starts.tolist(), ends.tolist(), strict=True)}

"""What a batched step needs of each running sequence, as arrays indexed by batch slot.

A step reads and updates every running sequence at once (the next input, the sampling
parameters, the random stream's position, how much prompt is left, whether it is done) with a
few array operations instead of a Python loop over the sequences: at 64 streams of a small
model that loop cost more than the model's own matrix products.
"""

from __future__ import annotations

import numpy as np

from sampling.sampler import sample_slots
from sampling.scheduler import Sequence


class SlotTable:
    def __init__(self, slots: int):
        self.key = np.zeros(slots, np.uint64)  # the sequence's random stream
        self.generated = np.zeros(slots, np.int64)  # characters sampled: the stream position
        self.max_length = np.zeros(slots, np.int64)
        self.temperature = np.ones(slots)
        self.top_k = np.zeros(slots, np.int64)
        self.top_p = np.ones(slots)
        self.next_id = np.zeros(slots, np.int64)  # what the next shared step feeds
        self.prompt_left = np.zeros(slots, np.int64)  # prompt ids not fed yet
        # The request in each slot: a hop's output is grouped by request, not by slot, since a
        # slot freed in the middle of a hop may already hold the next request.
        self.owner = np.zeros(slots, np.int64)

    def load(self, sequence: Sequence) -> None:
        """A sequence just admitted into its slot."""
        slot = sequence.slot
        self.key[slot] = sequence.key
        self.generated[slot] = 0
        self.max_length[slot] = sequence.max_length
        self.temperature[slot] = sequence.temperature
        self.top_k[slot] = sequence.top_k
        self.top_p[slot] = sequence.top_p
        self.next_id[slot] = sequence.prompt_ids[0]
        self.prompt_left[slot] = len(sequence.prompt_ids)
        self.owner[slot] = sequence.request_id

    def prompt_fed(self, sequence: Sequence) -> int:
        return len(sequence.prompt_ids) - int(self.prompt_left[sequence.slot])

    def advance_prompt(self, sequence: Sequence, count: int) -> None:
        """`count` more prompt ids were fed (never the last one: it is fed by a shared step,
        whose logits give the first sampled character)."""
        slot = sequence.slot
        self.prompt_left[slot] -= count
        self.next_id[slot] = sequence.prompt_ids[len(sequence.prompt_ids) - self.prompt_left[slot]]

    def sample(self, logits: np.ndarray, slots: np.ndarray | slice) -> np.ndarray:
        """The next character of the sequences in `slots` (an array, or a slice of consecutive
        slots; one logits row each); they become the next inputs and the streams move on by
        one."""
        if isinstance(slots, slice):
            slots = np.arange(slots.start, slots.stop)
        chosen = np.empty(len(slots), np.int64)
        sample_slots(np.ascontiguousarray(logits), slots, *self.sampling_arrays(), chosen)
        self.sampled(slots)
        return chosen

    def sampled(self, slots: np.ndarray) -> None:
        """The sequences in `slots` sampled a character (here or in the fused steps): their
        prompt is all fed."""
        self.prompt_left[slots] = 0

    def sampling_arrays(self) -> tuple:
        """What the compiled sampler reads and moves on, per slot (sampling/sampler.py's
        `sample_slots` takes them in this order)."""
        return (self.key, self.generated, self.temperature, self.top_k, self.top_p,
                self.next_id)

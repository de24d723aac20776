"""Sampling one character per row of a batch's logits, as compiled code (numba).

Each row has its own temperature, top_k and top_p, and its own random stream: a counter-based
one, `uniform(key, position)`, a hash of (the sequence's key, the character's position). A
draw depends only on the request's seed and how far its text has got, never on which other
sequences share the batch or in which row the sequence sits. A batch's rows are one compiled
call that holds no GIL (as NumPy calls over the batch they cost ~100 us a step at 64 rows,
more than a small model's step on two cores), and the compiled runner samples inside its own
step kernel with the same code (sampling/fused_steps.py).
"""

from __future__ import annotations

import random

import numpy as np
from numba import njit

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1, _MIX2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
# Compiled (numba), GIL-free: the same code samples for every runner, per row, and inside the
# compiled runner's fused steps (sampling/fused_steps.py). Exact IEEE arithmetic (no fastmath):
# -inf must stay -inf, and a seed's text must not depend on how the loops were vectorised.
_KERNEL = dict(nogil=True, cache=True)


@njit(**_KERNEL)
def _splitmix64(z):
    """SplitMix64's finaliser: a bijection of uint64 whose outputs pass statistical tests
    even for consecutive inputs (uint64 arithmetic wraps, as the algorithm wants)."""
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


# Keys of requests without a seed: a generator of this process's own, seeded from the OS's
# entropy once (a library seeding Python's shared one cannot make them repeat), and drawn
# without a system call per request (one, on the event loop, gave the GIL away each time).
_FRESH_KEYS = random.Random()


def random_key(seed: int | None) -> int:
    """A sequence's stream key: from its seed, or fresh randomness without one."""
    if seed is None:
        return _FRESH_KEYS.getrandbits(64)
    return int(_splitmix64(np.uint64(seed)))


@njit(**_KERNEL)
def uniform(key, position):
    """The uniform draw in (0, 1) of a sequence's stream (`key`) at `position`: never 0, so id
    0 stays out of reach."""
    bits = _splitmix64(key + (np.uint64(position) + np.uint64(1)) * _GOLDEN) >> np.uint64(11)
    return (np.float64(bits) + 0.5) * 2.0 ** -53  # 53 bits: a float64's mantissa


@njit(**_KERNEL)
def sample_row(logits, temperature, top_k, top_p, draw, scratch):
    """One id from softmax(logits / temperature), restricted to the `top_k` most likely
    (0: all) and then to the `top_p` nucleus, chosen by `draw` (inverse CDF); never id 0, the
    unknown symbol. `scratch`: float64 [vocab], overwritten."""
    vocab = logits.shape[0]
    for j in range(vocab):
        scratch[j] = np.float64(logits[j]) / temperature
    scratch[0] = -np.inf
    if top_k > 0 or top_p < 1.0:
        _truncate(scratch, top_k, top_p)
    largest = scratch.max()
    total = 0.0
    for j in range(vocab):  # the cumulative distribution, in place
        total += np.exp(scratch[j] - largest)
        scratch[j] = total
    target = draw * total
    choice = 0
    for j in range(vocab):
        if scratch[j] < target:
            choice += 1
    return min(choice, vocab - 1)


@njit(**_KERNEL)
def _truncate(scaled, top_k, top_p):
    """In place: keep the top_k most likely ids (0: all), then the fewest of those whose
    probabilities reach top_p (at least one)."""
    vocab = scaled.shape[0]
    ranked = -np.sort(-scaled)  # descending
    k = top_k if 0 < top_k < vocab else vocab
    cumulative = np.zeros(vocab)
    total = 0.0
    for j in range(k):
        total += np.exp(ranked[j] - ranked[0])
        cumulative[j] = total
    for j in range(k, vocab):
        cumulative[j] = total
    keep = k
    if top_p < 1.0:
        nucleus = 1
        for j in range(vocab):
            if cumulative[j] / total < top_p:
                nucleus += 1
        keep = min(nucleus, k)
    threshold = ranked[keep - 1]
    for j in range(vocab):
        if scaled[j] < threshold:
            scaled[j] = -np.inf


@njit(**_KERNEL)
def sample_slots(logits, slots, key, generated, temperature, top_k, top_p, next_id, chosen):
    """`sample_row` for each row of `logits` (the sequence in `slots[row]`), from the per-slot
    arrays of sampling/slots.py's table, which move on: the chosen id becomes the slot's next
    input and its stream advances by one. `chosen` [rows] receives the ids."""
    scratch = np.empty(logits.shape[1])
    for row in range(slots.shape[0]):
        slot = slots[row]
        chosen[row] = sample_row(logits[row], temperature[slot], top_k[slot], top_p[slot],
                                 uniform(key[slot], generated[slot]), scratch)
        next_id[slot] = chosen[row]
        generated[slot] += 1


def char_logprobs(logits: np.ndarray, chosen: int, top: int, chars: list[str]) -> tuple:
    """`(logprob of the chosen id, ((char, logprob), ...) for the `top` most likely)`, from the
    model's own distribution (temperature 1, no top-k/top-p) over the ids it may emit."""
    row = logits.astype(np.float64)
    row[0] = -np.inf
    row -= row.max()
    logprobs = row - np.log(np.exp(row).sum())
    best = np.argsort(-logprobs, kind="stable")[:top]
    return float(logprobs[chosen]), tuple((chars[i], float(logprobs[i])) for i in best)

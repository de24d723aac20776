"""Sampling one character per row of a batch's logits, vectorised over the rows.

Each row has its own temperature, top_k and top_p, and its own random stream: a counter-based
one, `uniforms(keys, positions)`, a hash of (the sequence's key, the character's position). A
draw depends only on the request's seed and how far its text has got, never on which other
sequences share the batch or in which row the sequence sits, and a whole batch's draws are one
vectorised call instead of one generator call per row.
"""

from __future__ import annotations

import secrets

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1, _MIX2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def _splitmix64(z: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser: a bijection of uint64 whose outputs pass statistical tests
    even for consecutive inputs (uint64 arithmetic wraps, as the algorithm wants)."""
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


def random_key(seed: int | None) -> int:
    """A sequence's stream key: from its seed, or fresh randomness without one."""
    if seed is None:
        return secrets.randbits(64)
    return int(_splitmix64(np.array([seed], np.uint64))[0])


def uniforms(keys: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """One uniform draw in (0, 1) per (key, position): the stream of each key."""
    counters = keys + (positions.astype(np.uint64) + np.uint64(1)) * _GOLDEN
    bits = _splitmix64(counters) >> np.uint64(11)  # 53 bits: a float64's mantissa
    return (bits.astype(np.float64) + 0.5) * 2.0 ** -53  # never 0: id 0 stays out of reach


def sample_rows(logits: np.ndarray, temperature: np.ndarray, top_k: np.ndarray,
                top_p: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """One id per row from softmax(logits / temperature), restricted to the top_k and then to
    the top_p nucleus, chosen by the row's uniform draw (inverse CDF). Never id 0, the
    unknown symbol."""
    scaled = logits.astype(np.float64) / temperature[:, None]
    scaled[:, 0] = -np.inf
    if top_k.any() or (top_p < 1.0).any():  # (top_k <= 0 means all ids, as in _truncate)
        _truncate(scaled, top_k, top_p)
    scaled -= scaled.max(axis=1, keepdims=True)
    cumulative = np.cumsum(np.exp(scaled, out=scaled), axis=1)
    targets = draws * cumulative[:, -1]
    choice = (cumulative < targets[:, None]).sum(axis=1)
    return np.minimum(choice, logits.shape[1] - 1)


def _truncate(scaled: np.ndarray, top_k: np.ndarray, top_p: np.ndarray) -> None:
    """In place: per row, keep the top_k most likely ids (0: all), then the fewest of those
    whose probabilities reach top_p (at least one)."""
    rows, vocab = np.arange(len(scaled)), scaled.shape[1]
    ranked = -np.sort(-scaled, axis=1)  # descending
    k = np.where((top_k > 0) & (top_k < vocab), top_k, vocab)
    probs = np.exp(ranked - ranked[:, :1])
    probs[np.arange(vocab)[None, :] >= k[:, None]] = 0.0
    cumulative = np.cumsum(probs, axis=1)
    cumulative /= cumulative[:, -1:]
    nucleus = (cumulative < top_p[:, None]).sum(axis=1) + 1
    keep = np.where(top_p >= 1.0, k, np.minimum(nucleus, k))
    threshold = ranked[rows, keep - 1]
    scaled[scaled < threshold[:, None]] = -np.inf


def char_logprobs(logits: np.ndarray, chosen: int, top: int, chars: list[str]) -> tuple:
    """`(logprob of the chosen id, ((char, logprob), ...) for the `top` most likely)`, from the
    model's own distribution (temperature 1, no top-k/top-p) over the ids it may emit."""
    row = logits.astype(np.float64)
    row[0] = -np.inf
    row -= row.max()
    logprobs = row - np.log(np.exp(row).sum())
    best = np.argsort(-logprobs, kind="stable")[:top]
    return float(logprobs[chosen]), tuple((chars[i], float(logprobs[i])) for i in best)

"""Corpus handling for the char-RNN: split, per-worker training batches, validation loss.

Training batches are random windows of `num_steps + 1` characters (input and the same window
shifted by one as target). Each worker draws from its own RNG stream, seeded by (seed, worker,
start step), so workers see different batches and a resumed run does not replay old ones.
Validation uses fixed, non-overlapping windows of the held-out tail, so the same weights always
give the same validation loss: the reloaded artifact reproduces the reported figure exactly.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

EVAL_WINDOW = 100  # characters per validation window, the same for every model so losses compare


class CorpusTooShort(ValueError):
    pass


def split_corpus(ids: np.ndarray, val_frac: float, num_seqs: int,
                 num_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """The first (1 - val_frac) of the text for training, the tail for validation."""
    val_len = check_corpus_length(len(ids), val_frac, num_seqs, num_steps)
    return ids[: len(ids) - val_len], ids[len(ids) - val_len:]


def check_corpus_length(num_chars: int, val_frac: float, num_seqs: int, num_steps: int) -> int:
    """Raise CorpusTooShort unless the text fills one batch after the split; returns val length.

    The server calls this on an upload before storing it, so a hopeless job is never queued.
    """
    val_len = int(num_chars * val_frac)
    train_len = num_chars - val_len
    needed = num_seqs * num_steps + 1
    if train_len < needed:
        raise CorpusTooShort(
            f"the training part of the text has {train_len} characters; num_seqs * num_steps + 1"
            f" = {needed} are needed (upload more text or lower num_seqs/num_steps)")
    if val_frac > 0 and val_len < 2:
        raise CorpusTooShort(f"the validation part ({val_frac:.0%} of the text) has fewer than"
                             " 2 characters; upload more text or lower val_frac")
    return val_len


def train_batches(train: np.ndarray, num_seqs: int, num_steps: int, seed: int, worker: int,
                  start_step: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng([seed, worker, start_step])
    window = np.arange(num_steps + 1)
    while True:
        starts = rng.integers(0, len(train) - num_steps, size=num_seqs)
        chunk = train[starts[:, None] + window]
        yield chunk[:, :-1], chunk[:, 1:]


def validation_windows(val: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Non-overlapping windows covering the held-out text (the ragged tail is dropped)."""
    window = min(EVAL_WINDOW, len(val) - 1)
    count = (len(val) - 1) // window
    x = val[: count * window].reshape(count, window)
    y = val[1: count * window + 1].reshape(count, window)
    return x, y


def validation_loss(model, val: np.ndarray, batch_size: int = 256) -> dict:
    """Mean cross-entropy per character in nats and bits over the validation windows."""
    import tensorflow as tf

    x, y = validation_windows(val)

    @tf.function(reduce_retracing=True)
    def batch_loss(xb, yb):
        logits = model(xb, training=False)
        losses = tf.keras.losses.sparse_categorical_crossentropy(yb, logits, from_logits=True)
        return tf.reduce_sum(tf.cast(losses, tf.float64))

    total = 0.0
    for start in range(0, len(x), batch_size):
        total += float(batch_loss(tf.constant(x[start:start + batch_size]),
                                  tf.constant(y[start:start + batch_size])))
    nats = total / y.size
    return {"val_loss": nats, "val_bpc": nats / math.log(2)}

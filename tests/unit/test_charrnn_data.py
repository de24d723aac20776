"""Corpus split, per-worker batching and validation windows (no Ray)."""

import numpy as np
import pytest

from trainers.charrnn_data import (
    EVAL_WINDOW,
    CorpusTooShort,
    split_corpus,
    train_batches,
    validation_windows,
)


def test_split_holds_out_the_tail():
    ids = np.arange(1000)
    train, val = split_corpus(ids, 0.1, num_seqs=4, num_steps=10)
    assert np.array_equal(train, np.arange(900)) and np.array_equal(val, np.arange(900, 1000))


def test_split_rejects_corpus_shorter_than_one_batch():
    with pytest.raises(CorpusTooShort, match="41 are needed"):
        split_corpus(np.arange(44), 0.1, num_seqs=4, num_steps=10)


def test_batches_are_shifted_windows_of_the_corpus():
    ids = np.arange(500)
    x, y = next(train_batches(ids, num_seqs=8, num_steps=20, seed=1, worker=0, start_step=0))
    assert x.shape == y.shape == (8, 20)
    assert np.array_equal(y, x + 1)  # target is the next character
    assert np.all(np.diff(x, axis=1) == 1)  # each row is a contiguous window


def test_workers_and_resumed_runs_draw_different_batches():
    ids = np.arange(10_000)
    first = next(train_batches(ids, 8, 20, seed=1, worker=0, start_step=0))[0]
    same = next(train_batches(ids, 8, 20, seed=1, worker=0, start_step=0))[0]
    other_worker = next(train_batches(ids, 8, 20, seed=1, worker=1, start_step=0))[0]
    resumed = next(train_batches(ids, 8, 20, seed=1, worker=0, start_step=100))[0]
    assert np.array_equal(first, same)
    assert not np.array_equal(first, other_worker)
    assert not np.array_equal(first, resumed)


def test_validation_windows_cover_the_held_out_text_once():
    val = np.arange(1000)
    x, y = validation_windows(val)
    assert x.shape == (9, EVAL_WINDOW)
    assert np.array_equal(x.ravel(), np.arange(900)) and np.array_equal(y.ravel(), np.arange(1, 901))
    short_x, _ = validation_windows(np.arange(30))
    assert short_x.shape == (1, 29)

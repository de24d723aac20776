"""Classifier data: IDX and .npz parsing, validation, split, batches (no Ray)."""

import gzip
import io
import struct

import numpy as np
import pytest

from trainers.classifier_data import prepare, read_idx, read_npz, split, train_batches
from trainers.training_job import UserError


def idx_bytes(array: np.ndarray) -> bytes:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def test_idx_raw_and_gzip_round_trip():
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28)).astype(np.uint8)
    assert np.array_equal(read_idx(idx_bytes(images)), images)
    assert np.array_equal(read_idx(gzip.compress(idx_bytes(images))), images)


@pytest.mark.parametrize("data", [b"", b"PK\x03\x04junk", idx_bytes(np.zeros((3, 4)))[:-1]])
def test_bad_idx_is_a_user_error(data):
    with pytest.raises(UserError):
        read_idx(data)


def test_npz_needs_x_and_y_and_no_pickles():
    buffer = io.BytesIO()
    np.savez(buffer, x=np.zeros((4, 2, 3)), y=np.arange(4))
    x, y = read_npz(buffer.getvalue())
    assert x.shape == (4, 2, 3) and list(y) == [0, 1, 2, 3]
    missing = io.BytesIO()
    np.savez(missing, images=np.zeros(3))
    with pytest.raises(UserError, match="'x' and 'y'"):
        read_npz(missing.getvalue())
    pickled = io.BytesIO()
    np.savez(pickled, x=np.array([{"a": 1}], dtype=object), y=np.arange(1))
    with pytest.raises(UserError):
        read_npz(pickled.getvalue())
    with pytest.raises(UserError):
        read_npz(b"not a zip at all")


def test_prepare_scales_pixels_and_checks_labels():
    x, y = prepare(np.full((3, 28, 28), 255, np.uint8), np.array([0, 9, 3]), classes=10)
    assert x.dtype == np.float32 and x.max() == 1.0 and y.dtype == np.int32
    with pytest.raises(UserError, match="labels must be in"):
        prepare(np.zeros((2, 4, 4)), np.array([0, 10]), classes=10)
    with pytest.raises(UserError, match="NaN"):
        prepare(np.full((2, 4, 4), np.nan), np.array([0, 1]), classes=10)
    with pytest.raises(UserError, match=r"\[N, T, F\]"):
        prepare(np.zeros((2, 16)), np.array([0, 1]), classes=10)


def test_split_is_seeded_and_disjoint():
    x, y = np.arange(100).reshape(100, 1, 1).astype(np.float32), np.arange(100) % 10
    (xt, _), (xv, _) = split(x, y, 0.2, seed=3)
    assert len(xt) == 80 and len(xv) == 20
    assert not set(xt.ravel()) & set(xv.ravel())
    (xt2, _), _ = split(x, y, 0.2, seed=3)
    assert np.array_equal(xt, xt2)


def test_batches_differ_per_worker():
    x, y = np.arange(50).reshape(50, 1, 1), np.arange(50)
    a = next(train_batches(x, y, 8, seed=0, worker=0, start_step=0))
    b = next(train_batches(x, y, 8, seed=0, worker=1, start_step=0))
    assert a[0].shape == (8, 1, 1) and np.array_equal(a[0].ravel(), a[1])
    assert not np.array_equal(a[1], b[1])

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


def test_prepare_keeps_values_and_checks_labels():
    x, y = prepare(np.full((3, 28, 28), 255, np.uint8), np.array([0, 9, 3]), classes=10)
    assert x.dtype == np.float32 and x.max() == 255.0 and y.dtype == np.int32
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


# ---- hostile .npz uploads: sizes checked from the headers before anything is unpacked -----

def npy_header(shape, descr="<f8", version=(1, 0)) -> bytes:
    buffer = io.BytesIO()
    write = {(1, 0): np.lib.format.write_array_header_1_0,
             (2, 0): np.lib.format.write_array_header_2_0}[version]
    write(buffer, {"descr": descr, "fortran_order": False, "shape": shape})
    return buffer.getvalue()


def npz(members: dict[str, bytes | list[bytes]], compress: bool = True) -> bytes:
    """A zip of raw members; a list is written chunk by chunk (big members, small memory)."""
    import zipfile

    buffer = io.BytesIO()
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(buffer, "w", method) as archive:
        for name, content in members.items():
            info = zipfile.ZipInfo(name)
            info.compress_type = method
            with archive.open(info, "w", force_zip64=True) as member:
                for chunk in content if isinstance(content, list) else [content]:
                    member.write(chunk)
    return buffer.getvalue()


LABELS = npy_header((4,), "<i8") + np.arange(4).tobytes()


def test_compressed_npz_round_trips():
    buffer = io.BytesIO()
    np.savez_compressed(buffer, x=np.arange(24.0).reshape(4, 2, 3), y=np.arange(4))
    x, y = read_npz(buffer.getvalue(), max_bytes=1000)
    assert x.shape == (4, 2, 3) and x[3, 1, 2] == 23 and list(y) == [0, 1, 2, 3]
    fortran = io.BytesIO()
    np.savez(fortran, x=np.asfortranarray(np.arange(24.0).reshape(4, 2, 3)), y=np.arange(4))
    assert read_npz(fortran.getvalue())[0][3, 1, 2] == 23


def test_a_tiny_npz_claiming_a_huge_shape_is_a_user_error():
    for shape in [(10**6, 10**6, 1), (2**40, 2**40, 2**40)]:
        data = npz({"x.npy": npy_header(shape), "y.npy": LABELS})
        assert len(data) < 1000
        with pytest.raises(UserError, match="header"):  # not MemoryError
            read_npz(data)
        with pytest.raises(UserError):
            read_npz(data, max_bytes=10**6)


def test_a_decompression_bomb_is_refused_before_it_is_unpacked():
    import time
    import tracemalloc

    rows = 200  # 200 x 100 x 100 float64: 16 MB of zeros, deflated to a few kB
    data = npz({"x.npy": [npy_header((rows, 100, 100))] + [bytes(80_000)] * rows,
                "y.npy": LABELS})
    assert len(data) < 100_000
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(UserError, match="unpack to"):
            read_npz(data, max_bytes=1_000_000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000, f"{peak} bytes allocated to refuse it"
    assert time.perf_counter() - started < 0.5
    assert read_npz(data, max_bytes=20_000_000)[0].shape == (rows, 100, 100)  # honest, allowed


@pytest.mark.parametrize("members", [
    # the header's size disagrees with what the zip entry declares
    {"x.npy": npy_header((4, 2, 3)) + bytes(10), "y.npy": LABELS},
    {"x.npy": npy_header((4, 2, 3)) + bytes(8 * 24 + 8), "y.npy": LABELS},
    # not .npy at all, an unknown format version, a pickled object array
    {"x.npy": b"hello", "y.npy": LABELS},
    {"x.npy": b"\x93NUMPY\x09\x00" + bytes(100), "y.npy": LABELS},
    {"x.npy": npy_header((4,), "|O") + bytes(32), "y.npy": LABELS},
    {"x.npy": npy_header((4, 2, 3), version=(2, 0))[:-5], "y.npy": LABELS},
    # arrays under other names
    {"x": npy_header((4, 2, 3)) + bytes(192), "y.npy": LABELS},
])
def test_malformed_members_are_user_errors(members):
    with pytest.raises(UserError):
        read_npz(npz(members))


def test_corrupt_archives_are_user_errors():
    buffer = io.BytesIO()
    np.savez_compressed(buffer, x=np.random.default_rng(0).random((50, 4, 4)), y=np.arange(50))
    good = buffer.getvalue()
    middle = len(good) // 3
    for bad in (good[:middle], good[:middle] + bytes(200) + good[middle + 200:], good[:-30]):
        with pytest.raises(UserError):
            read_npz(bad)


def test_the_upload_check_applies_the_cap():
    from trainers.families import FAMILIES

    family = FAMILIES["lstm-classifier"]
    buffer = io.BytesIO()
    np.savez(buffer, x=np.zeros((8, 4, 4), np.uint8), y=np.arange(8) % 2)
    params = family.parse_params({})
    assert family.check_upload(buffer.getvalue(), params, max_unpacked_bytes=1000)
    with pytest.raises(UserError, match="unpack to"):
        family.check_upload(buffer.getvalue(), params, max_unpacked_bytes=100)

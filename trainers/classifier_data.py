"""Labelled sequences for the LSTM classifier: .npz uploads or MNIST IDX files, split, batches.

Images [N, H, W] are read row by row: H timesteps of W features. Values are kept as given (the
model scales its inputs itself, see ClassifierConfig.input_scale); labels must be integers in
[0, classes).
"""

from __future__ import annotations

import gzip
import io
import math
import struct
import zipfile
import zlib
from collections.abc import Iterator

import numpy as np

from trainers.training_job import UserError

_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(data: bytes) -> np.ndarray:
    """An IDX array (the MNIST file format), gzip-compressed or raw."""
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] not in _IDX_TYPES:
        raise UserError("not an IDX file (bad magic number)")
    dims = data[3]
    shape = struct.unpack(f">{dims}I", data[4:4 + 4 * dims])
    dtype = np.dtype(_IDX_TYPES[data[2]])
    body = data[4 + 4 * dims:]
    if len(body) != int(np.prod(shape)) * dtype.itemsize:
        raise UserError(f"IDX file truncated: header says {shape}, body has {len(body)} bytes")
    return np.frombuffer(body, dtype=dtype).reshape(shape)


def read_npz(data: bytes, max_bytes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """`x` and `y` of an .npz (as np.savez or np.savez_compressed write it).

    Each array's .npy header is read first, and its size checked against what the zip entry
    declares and against `max_bytes` (both arrays together) before any data is unpacked: a
    small compressed file cannot unpack to gigabytes, nor a header claim a shape that does
    not fit. Anything unreadable, pickled objects included, is a UserError.
    """
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            try:
                entries = [archive.getinfo(f"{name}.npy") for name in ("x", "y")]
            except KeyError:
                raise UserError("the .npz upload needs arrays named 'x' and 'y'") from None
            sizes = [_npy_size(archive, entry) for entry in entries]
            if max_bytes is not None and sum(sizes) > max_bytes:
                raise UserError(f"the arrays would unpack to {sum(sizes):,} bytes; at most "
                                f"{max_bytes:,} are accepted")
            x, y = (_read_npy(archive, entry) for entry in entries)
            return x, y
    except UserError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error, NotImplementedError,
            RuntimeError) as error:  # not a zip, corrupt, encrypted, a bad .npy
        raise UserError(f"not a readable .npz file: {error}") from None


def _npy_header(stream) -> tuple[tuple[int, ...], bool, np.dtype]:
    version = np.lib.format.read_magic(stream)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(stream)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(stream)
    raise UserError(f"unsupported .npy format version {version[0]}.{version[1]}")


def _npy_size(archive: zipfile.ZipFile, entry: zipfile.ZipInfo) -> int:
    """The bytes an .npy entry unpacks to, from its header alone (nothing else is read)."""
    with archive.open(entry) as stream:
        shape, _, dtype = _npy_header(stream)
        header_bytes = stream.tell()
    if dtype.hasobject:
        raise UserError(f"{entry.filename} holds Python objects; only numbers are accepted")
    size = math.prod(shape) * dtype.itemsize  # Python ints: no overflow
    if entry.file_size != header_bytes + size:
        raise UserError(f"{entry.filename}: its header says shape {list(shape)} of {dtype} "
                        f"({size:,} bytes), the archive says {entry.file_size - header_bytes:,}")
    return size


def _read_npy(archive: zipfile.ZipFile, entry: zipfile.ZipInfo) -> np.ndarray:
    # The zip entry yields at most its declared size (checked above) and checks its CRC.
    with archive.open(entry) as stream:
        return np.lib.format.read_array(stream, allow_pickle=False)


def prepare(x: np.ndarray, y: np.ndarray, classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Validated float32 [N, T, F] (values as given: the model scales them) and int32 labels."""
    if x.ndim != 3:
        raise UserError(f"x must be [N, T, F] or [N, H, W]; got shape {list(x.shape)}")
    if y.ndim != 1 or len(y) != len(x):
        raise UserError(f"y must be [N] labels matching x; got {list(y.shape)} for {len(x)} rows")
    if not np.issubdtype(x.dtype, np.number) or not np.issubdtype(y.dtype, np.integer):
        raise UserError("x must be numbers and y integer labels")
    if len(x) < 2:
        raise UserError("need at least 2 examples")
    x = x.astype(np.float32)
    if not np.all(np.isfinite(x)):
        raise UserError("x holds NaN or infinite values")
    if y.min() < 0 or y.max() >= classes:
        raise UserError(f"labels must be in [0, {classes}); found {int(y.min())}..{int(y.max())}")
    return x, y.astype(np.int32)


def split(x: np.ndarray, y: np.ndarray, val_frac: float, seed: int):
    """Shuffle once (seeded), hold out `val_frac` for validation."""
    order = np.random.default_rng(seed).permutation(len(x))
    val_len = int(len(x) * val_frac)
    train, val = order[val_len:], order[:val_len]
    return (x[train], y[train]), (x[val], y[val])


def train_batches(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int, worker: int,
                  start_step: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Endless random minibatches; each worker and each resumed start has its own stream."""
    rng = np.random.default_rng([seed, worker, start_step])
    while True:
        rows = rng.integers(0, len(x), size=batch_size)
        yield x[rows], y[rows]


def evaluate(model, x: np.ndarray, y: np.ndarray, batch_size: int = 500) -> dict:
    """Mean cross-entropy and accuracy over a labelled set."""
    import tensorflow as tf

    @tf.function(reduce_retracing=True)
    def batch(xb):
        return model(xb, training=False)

    total_loss, correct = 0.0, 0
    for start in range(0, len(x), batch_size):
        logits = batch(tf.constant(x[start:start + batch_size])).numpy().astype(np.float64)
        labels = y[start:start + batch_size]
        logits -= logits.max(axis=1, keepdims=True)
        log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        total_loss -= log_probs[np.arange(len(labels)), labels].sum()
        correct += int((logits.argmax(axis=1) == labels).sum())
    return {"val_loss": total_loss / len(x), "val_accuracy": correct / len(x)}

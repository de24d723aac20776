"""Payloads a hostile client sends: shared by the bounds tests and the attack benchmark."""

from __future__ import annotations

import io
import zipfile

import numpy as np


def npy_header(shape, descr: str = "<f8") -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": descr, "fortran_order": False,
                                                  "shape": shape})
    return buffer.getvalue()


def npz_bomb(rows: int) -> bytes:
    """A classifier upload whose x is rows x 1000 x 100 float64 zeros (800 kB a row unpacked,
    ~1 kB deflated), written chunk by chunk so building it costs no memory either."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, header, row, count in (("x.npy", npy_header((rows, 1000, 100)), 800_000, rows),
                                         ("y.npy", npy_header((rows,), "<i8"), 8, rows)):
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            with archive.open(info, "w", force_zip64=True) as member:
                member.write(header)
                for _ in range(count):
                    member.write(bytes(row))
    return buffer.getvalue()


def padded_json(size: int) -> bytes:
    """`{"version": 1}` padded with spaces to `size` bytes: valid JSON even if cut at a cap, so
    a route that ran on a prefix of it would not notice."""
    return b'{"version": 1}' + b" " * max(0, size - 14)


def chunks(data: bytes, size: int = 65536):
    """The body sent chunked (no Content-Length): the server must count it as it arrives."""
    return (data[i:i + size] for i in range(0, len(data), size))

"""The BLAS the compiled kernels call (models/compiled_cells.py): OpenBLAS from the
scipy-openblas64 wheel, bound to the kernels by symbol name, so numba's on-disk cache of them
stays valid from one process to the next.

Why not numba's own `@` and `np.dot`: they call the OpenBLAS bundled with SciPy (0.3.30 with
SciPy 1.17). With weights used over and over (a benchmark's GEMM) both builds run at about the same
rate, but a recurrent step reads a different weight matrix for each product (a 2x512's 12 MB a
step). In a profile of a slow 2x512 step, 0.3.30's packing of the weights (`sgemm_itcopy`)
took 0.84x the multiply's time, in a 0.3.34 step 0.39x. In the ceiling check (`python -m
benchmarks.bench_sampling --ceiling`, each runner in a process of its own), the 2x512 engine
at 64 streams reached 67-87% of the GEMM ceiling with this build against 59-67% with SciPy's,
in runs a few minutes apart (BENCHMARKS.md, Sampling engine, stop 26). In processes that ran
nothing but the step, the two builds took the same time: the gain is not the same everywhere.

The products accumulate into their output (`beta`), so a layer's gates need no temporary
array for `input side + recurrent product`.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np
import scipy_openblas64
from llvmlite import binding
from numba import njit, types

_LIBRARY = ctypes.CDLL(str(Path(scipy_openblas64.get_lib_dir())
                           / scipy_openblas64.get_library(fullname=True)))
# Every call comes from a thread of ours (the engine's, or one core's part of a step): the
# library's own threads would only contend with them for the same cores.
_LIBRARY.scipy_openblas_set_num_threads64_(1)

# The kernels name the functions by these symbols, which the JIT resolves when it loads them
# (compiled or from the cache): bound here, at import, before any kernel runs.
_SGEMM, _SGEMV = "rnnserve_cblas_sgemm", "rnnserve_cblas_sgemv"
for _symbol, _function in ((_SGEMM, "scipy_cblas_sgemm64_"), (_SGEMV, "scipy_cblas_sgemv64_")):
    binding.add_symbol(_symbol, ctypes.cast(getattr(_LIBRARY, _function), ctypes.c_void_p).value)

_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112  # CBLAS enums
_i32, _i64, _f32, _ptr = types.int32, types.int64, types.float32, types.voidptr
_cblas_sgemm = types.ExternalFunction(_SGEMM, types.void(
    _i32, _i32, _i32, _i64, _i64, _i64, _f32, _ptr, _i64, _ptr, _i64, _f32, _ptr, _i64))
_cblas_sgemv = types.ExternalFunction(_SGEMV, types.void(
    _i32, _i32, _i64, _i64, _f32, _ptr, _i64, _ptr, _i64, _f32, _ptr, _i64))

_OPTIONS = dict(nogil=True, cache=True)


@njit(**_OPTIONS)
def _rows_stride(matrix):
    """The distance between rows in elements; BLAS needs each row's elements contiguous."""
    assert matrix.strides[1] == matrix.itemsize
    return matrix.strides[0] // matrix.itemsize


@njit(**_OPTIONS)
def gemm(x, w, out, beta):
    """out = x @ w + beta * out, float32 matrices whose rows are contiguous."""
    assert x.shape[1] == w.shape[0] and out.shape[0] == x.shape[0] and out.shape[1] == w.shape[1]
    _cblas_sgemm(_ROW_MAJOR, _NO_TRANS, _NO_TRANS, x.shape[0], w.shape[1], x.shape[1],
                 np.float32(1.0), x.ctypes.data, _rows_stride(x), w.ctypes.data, _rows_stride(w),
                 np.float32(beta), out.ctypes.data, _rows_stride(out))


@njit(**_OPTIONS)
def gemv(x, w, out, beta):
    """out = x @ w + beta * out for one row `x` (vectors with unit strides)."""
    assert x.shape[0] == w.shape[0] and out.shape[0] == w.shape[1]
    assert x.strides[0] == x.itemsize and out.strides[0] == out.itemsize
    # Row-major w is [K, N]; x @ w is w transposed times x.
    _cblas_sgemv(_ROW_MAJOR, _TRANS, w.shape[0], w.shape[1], np.float32(1.0), w.ctypes.data,
                 _rows_stride(w), x.ctypes.data, 1, np.float32(beta), out.ctypes.data, 1)

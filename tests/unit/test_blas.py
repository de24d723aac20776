"""The compiled kernels' BLAS (models/blas.py): its products against float64 NumPy, with the
accumulation the kernels rely on and on views whose rows are not packed together."""

import numpy as np
import pytest

from models import blas


@pytest.mark.parametrize("beta", [0.0, 1.0])
def test_gemm_is_x_times_w_plus_beta_times_out(beta):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((7, 33)).astype(np.float32)
    w = rng.standard_normal((33, 20)).astype(np.float32)
    out = rng.standard_normal((7, 20)).astype(np.float32)
    expected = x.astype(np.float64) @ w + beta * out
    blas.gemm(x, w, out, beta)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-4)


def test_gemm_reads_and_writes_views_of_wider_arrays():
    """A step's parts are row runs and column cuts of bigger arrays: the leading dimension
    comes from the view's strides, and nothing outside the view changes."""
    rng = np.random.default_rng(2)
    wide_x = rng.standard_normal((9, 40)).astype(np.float32)
    wide_w = rng.standard_normal((30, 50)).astype(np.float32)
    wide_out = np.zeros((9, 60), np.float32)
    x, w, out = wide_x[2:7, 5:35], wide_w[:, 10:26], wide_out[2:7, 4:20]
    blas.gemm(x, w, out, 0.0)
    np.testing.assert_allclose(out, x.astype(np.float64) @ w, rtol=1e-5, atol=1e-4)
    outside = np.ones(wide_out.shape, bool)
    outside[2:7, 4:20] = False
    assert not wide_out[outside].any()


@pytest.mark.parametrize("beta", [0.0, 1.0])
def test_gemv_is_one_row_times_w(beta):
    rng = np.random.default_rng(3)
    w = rng.standard_normal((33, 20)).astype(np.float32)
    x = rng.standard_normal((4, 33)).astype(np.float32)[2]  # a row of a matrix
    out = rng.standard_normal(20).astype(np.float32)
    expected = x.astype(np.float64) @ w + beta * out
    blas.gemv(x, w, out, beta)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-4)

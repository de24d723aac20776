"""The char-RNN's step as machine code (numba): the kernels of the compiled runner
(models/compiled_runner.py).

The NumPy runner's step is ~10 NumPy calls per layer, each taking the GIL back and each a
separate pass over the batch; at 2x128 and 64 streams the calls around the three GEMMs cost a
quarter of the step. Here a whole step is ONE call that holds no GIL: each layer's recurrent
GEMM goes to BLAS (numba's `@`, through SciPy's BLAS; with a handful of rows, a GEMV per row:
`matmul`), and the gate math is one fused loop per row. The call spreads over the cores
(`prange`) in one of two ways. A small model's step splits the batch's rows into one part per
core (`step_parts`): rows of a step never mix, so the parts need no synchronisation. A big
model's step splits each layer's units (`step_units`): each core reads only its part of the
weights, at the cost of a join per layer.

Same equations as models/step_cells.py's `cell_update`, in the same tanh form (weights of the
sigmoid gates halved, sigmoid(x) = 0.5 * tanh(x/2) + 0.5), written per element here: numba
compiles loops over elements, not the array-slicing form the NumPy and TensorFlow runners
share. `tanh` is computed from `exp` with a short polynomial that vectorises (libm's tanh does
not): within 3e-7 of float64 tanh over the float32 range (tests/unit/test_runner.py).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

# error_model="numpy": no ZeroDivisionError branch in each division, which keeps the element
# loops vectorisable; fastmath lets LLVM reassociate and fuse them into FMAs. `cache`: the
# machine code is kept in __pycache__, so a replica loads it instead of compiling (~15 s);
# `make` rebuilds it after a change (numba checks only the file that defines a kernel, not the
# kernels it calls from other files, as sampling/fused_steps.py calls these).
_OPTIONS = dict(nogil=True, fastmath=True, error_model="numpy", cache=True)

# A product of up to this many rows by weights of at least this many elements is a GEMV per
# row (`matmul`).
GEMV_ROWS = 8
GEMV_MIN_WEIGHTS = 1 << 17  # 512 KB of float32
CELLS = {"lstm": 0, "gru": 1, "rnn": 2}  # a kernel's `cell` argument
LSTM, GRU = CELLS["lstm"], CELLS["gru"]

_LOG2E = np.float32(1.4426950408889634)
_LN2_HI, _LN2_LO = np.float32(0.693359375), np.float32(-2.12194440e-4)  # ln 2 = HI + LO
_POW2 = np.array([2.0 ** k for k in range(-64, 65)], np.float32)  # 2**k at index k + 64


@njit(inline="always", **_OPTIONS)
def _tanh(x):
    """tanh(x) = 1 - 2 / (exp(2x) + 1), with exp(y) = 2**k * exp(r), |r| <= ln2 / 2, exp(r) by
    its Taylor series to r**6 (relative error < 2e-7 there); 2x is clamped to +-40, where tanh
    is +-1 in float32."""
    y = min(max(np.float32(2.0) * x, np.float32(-40.0)), np.float32(40.0))
    k = np.floor(y * _LOG2E + np.float32(0.5))
    r = y - k * _LN2_HI - k * _LN2_LO
    p = np.float32(1.0) + r * (np.float32(1.0) + r * (np.float32(1 / 2) + r * (
        np.float32(1 / 6) + r * (np.float32(1 / 24) + r * (np.float32(1 / 120)
                                                           + r * np.float32(1 / 720))))))
    return np.float32(1.0) - np.float32(2.0) / (p * _POW2[np.int64(k) + 64] + np.float32(1.0))


@njit(**_OPTIONS)
def tanh_array(x):
    """`_tanh` over an array (for the tests)."""
    out = np.empty_like(x)
    flat, into = x.ravel(), out.ravel()
    for i in range(flat.size):
        into[i] = _tanh(flat[i])
    return out


@njit(**_OPTIONS)
def matmul(x, w):
    """x @ w, by BLAS; with few rows and big weights, as one GEMV per row: a GEMM packs `w`
    first, which for big weights costs more than reading them once per row, and for small
    ones does not (measured here, three products of 2 / 4 / 8 rows: by [512, 2048] weights,
    1,776 / 1,545 / 2,041 us as GEMMs against 320 / 799 / 972 as GEMVs; by [256, 1024],
    71 / 291 / 308 against 85 / 163 / 347; by [128, 512], 14 / 18 / 32 against 21 / 38 / 71)."""
    if x.shape[0] > GEMV_ROWS or w.size < GEMV_MIN_WEIGHTS:
        return x @ w
    out = np.empty((x.shape[0], w.shape[1]), np.float32)
    for i in range(x.shape[0]):
        out[i] = np.dot(x[i], w)
    return out


@njit(**_OPTIONS)
def cell_rows(cell, gates, h_in, h, c, recurrent, recurrent_bias):
    """One cell step for every row, in place: `gates` is the input side (x @ kernel + bias,
    [rows, gates * units]), `h_in` the rows' whole state before the step (the recurrent
    GEMM's input), `h` (and `c`, LSTM) the state of the units this call updates: `h_in` itself,
    or a copy of some of its columns (`step_units`) with `gates` and `recurrent` cut to them.
    Each loop reads and writes one fresh array, which LLVM vectorises (through a view shared
    with another array it did not: measured 2x slower)."""
    units, half, one = h.shape[1], np.float32(0.5), np.float32(1.0)
    if cell == LSTM:  # t: i, f, o (halved), then the candidate
        t = gates + matmul(h_in, recurrent)
        for i in range(h.shape[0]):
            for j in range(4 * units):
                t[i, j] = _tanh(t[i, j])
            for j in range(units):
                state = ((half * t[i, units + j] + half) * c[i, j]
                         + (half * t[i, j] + half) * t[i, 3 * units + j])
                c[i, j] = state
                h[i, j] = (half * t[i, 2 * units + j] + half) * _tanh(state)
    elif cell == GRU:  # z, r (halved), then h; reset_after: r gates the recurrent term
        hidden = matmul(h_in, recurrent) + recurrent_bias
        t = gates[:, :2 * units] + hidden[:, :2 * units]
        for i in range(h.shape[0]):
            for j in range(2 * units):
                t[i, j] = _tanh(t[i, j])
            for j in range(units):
                z = half * t[i, j] + half
                candidate = _tanh(gates[i, 2 * units + j]
                                  + (half * t[i, units + j] + half) * hidden[i, 2 * units + j])
                h[i, j] = z * h[i, j] + (one - z) * candidate
    else:
        t = gates + matmul(h_in, recurrent)
        for i in range(h.shape[0]):
            for j in range(units):
                h[i, j] = _tanh(t[i, j])


@njit(**_OPTIONS)
def layer_inputs(table, kernels, biases, layer, ids, x):
    """A layer's input side for each row, [rows, gates * units]: the table's rows of `ids` for
    the first layer (its bias folded in), else `x` (the layer below's output) @ kernel + bias."""
    if layer == 0:
        gates = np.empty((ids.shape[0], table.shape[1]), np.float32)
        for i in range(ids.shape[0]):
            gates[i] = table[ids[i]]
        return gates
    gates = matmul(x, kernels[layer - 1])
    for i in range(gates.shape[0]):
        gates[i] += biases[layer - 1]
    return gates


@njit(**_OPTIONS)
def output_logits(x, out_kernel, out_bias):
    logits = matmul(x, out_kernel)
    for i in range(logits.shape[0]):
        logits[i] += out_bias
    return logits


@njit(**_OPTIONS)
def step_rows(cell, table, kernels, biases, recurrents, recurrent_biases, out_kernel, out_bias,
              hs, cs, slots, ids, logits):
    """One step of the sequences in `slots` (fed `ids`), all layers: their state rows are
    gathered from `hs`/`cs` [layers, slots, units], updated and written back; `logits` [rows,
    vocab] receives the output layer's."""
    rows, units = slots.shape[0], hs.shape[2]
    h = np.empty((rows, units), np.float32)
    c = np.empty((rows, units), np.float32)
    for layer in range(hs.shape[0]):
        gates = layer_inputs(table, kernels, biases, layer, ids, h)
        for i in range(rows):
            h[i] = hs[layer, slots[i]]
            c[i] = cs[layer, slots[i]]
        cell_rows(cell, gates, h, h, c, recurrents[layer], recurrent_biases[layer])
        for i in range(rows):
            hs[layer, slots[i]] = h[i]
            cs[layer, slots[i]] = c[i]
    logits[:] = output_logits(h, out_kernel, out_bias)


@njit(parallel=True, **_OPTIONS)
def step_parts(parts, cell, table, kernels, biases, recurrents, recurrent_biases, out_kernel,
               out_bias, hs, cs, slots, ids, logits):
    """`step_rows` over `parts` contiguous runs of the batch's rows, one per thread."""
    rows = slots.shape[0]
    for part in prange(parts):
        first, end = rows * part // parts, rows * (part + 1) // parts
        step_rows(cell, table, kernels, biases, recurrents, recurrent_biases, out_kernel,
                  out_bias, hs, cs, slots[first:end], ids[first:end], logits[first:end])


@njit(parallel=True, **_OPTIONS)
def step_units(parts, cell, tables, kernels, biases, recurrents, recurrent_biases, out_kernel,
               out_bias, hs, cs, slots, ids, logits):
    """`step_rows` with each layer's units split into `parts` equal runs, one per thread: the
    weights come cut by `split_units` ([parts, ...], part p's gate columns for its units), so
    each thread reads only its part of them, and all the rows. A big model's step is bound by
    reading its weights (2x512: 12 MB a step), which a split of the rows has every thread read
    whole. The cost is a join per layer: the next layer needs every unit."""
    rows, units = slots.shape[0], hs.shape[2]
    share = units // parts
    x = np.empty((rows, units), np.float32)  # the layer below's output
    for layer in range(hs.shape[0]):
        h_in = np.empty((rows, units), np.float32)
        for i in range(rows):
            h_in[i] = hs[layer, slots[i]]
        for part in prange(parts):
            first, end = part * share, (part + 1) * share
            gates = layer_inputs(tables[part], kernels[part], biases[part], layer, ids, x)
            h = np.empty((rows, share), np.float32)
            c = np.empty((rows, share), np.float32)
            for i in range(rows):
                h[i] = h_in[i, first:end]
                c[i] = cs[layer, slots[i], first:end]
            cell_rows(cell, gates, h_in, h, c, recurrents[part, layer],
                      recurrent_biases[part, layer])
            for i in range(rows):
                hs[layer, slots[i], first:end] = h[i]
                cs[layer, slots[i], first:end] = c[i]
        for i in range(rows):
            x[i] = hs[layer, slots[i]]
    logits[:] = output_logits(x, out_kernel, out_bias)


def split_units(weights: np.ndarray, parts: int, gates: int) -> np.ndarray:
    """Gate columns `[..., gates * units]` (each gate's units together) cut into `parts` runs of
    units: `[parts, ..., gates * units / parts]`, part p holding every gate's columns for its
    units, in the gates' order (what `cell_rows` reads)."""
    units = weights.shape[-1] // gates
    share = units // parts
    cut = weights.reshape(*weights.shape[:-1], gates, parts, share)
    cut = np.moveaxis(cut, -2, 0)  # [parts, ..., gates, share]
    return np.ascontiguousarray(cut.reshape(parts, *weights.shape[:-1], gates * share))


@njit(**_OPTIONS)
def prefill_positions(cell, table, kernels, biases, recurrents, recurrent_biases, out_kernel,
                      out_bias, hs, cs, slot, ids):
    """Feed `ids` one after another to the sequence in `slot`; the logits after each of them
    [len(ids), vocab]. Layer by layer: each layer's input projection is one GEMM over all
    positions, and only the recurrence runs position by position."""
    positions, units = ids.shape[0], hs.shape[2]
    x = np.empty((positions, units), np.float32)
    for layer in range(hs.shape[0]):
        gates = layer_inputs(table, kernels, biases, layer, ids, x)
        h = hs[layer, slot:slot + 1].copy()
        c = cs[layer, slot:slot + 1].copy()
        for p in range(positions):
            cell_rows(cell, gates[p:p + 1], h, h, c, recurrents[layer], recurrent_biases[layer])
            x[p] = h[0]
        hs[layer, slot] = h[0]
        cs[layer, slot] = c[0]
    return output_logits(x, out_kernel, out_bias)

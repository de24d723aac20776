"""The char-RNN's step as machine code (numba): the kernels of the compiled runner
(models/compiled_runner.py).

The NumPy runner's step is ~10 NumPy calls per layer, each taking the GIL back and each a
separate pass over the batch; at 2x128 and 64 streams the calls around the three GEMMs cost a
quarter of the step. Here a whole step is ONE call that holds no GIL: each layer's products go
to BLAS (models/blas.py; with a handful of rows, a GEMV per row where the runner measured that
faster: `add_product`), accumulating into the layer's gates, and the gate math is one fused loop
per row.
The call spreads over the cores (`prange`) in one of two ways. A small model's step splits the
batch's rows into one part per core (`step_parts`): rows of a step never mix, so the parts need
no synchronisation. A big model's step splits each layer's units (`step_units`): each core
reads only its part of the weights, at the cost of a join per layer.

Same equations as models/step_cells.py's `cell_update`, in the same tanh form (weights of the
sigmoid gates halved, sigmoid(x) = 0.5 * tanh(x/2) + 0.5), written per element here: numba
compiles loops over elements, not the array-slicing form the NumPy and TensorFlow runners
share. `tanh` is a rational function with no table and no branch, which vectorises (libm's tanh
does not, nor did an `exp` built from a table of powers of two: 2.4 ns an element against 0.3,
measured here): within 3e-7 of float64 tanh over the float32 range (tests/unit/test_runner.py).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from models import blas

# error_model="numpy": no ZeroDivisionError branch in each division, which keeps the element
# loops vectorisable; fastmath lets LLVM reassociate and fuse them into FMAs. `cache`: the
# machine code is kept in __pycache__, so a replica loads it instead of compiling (~15 s);
# `make` rebuilds it after a change (numba checks only the file that defines a kernel, not the
# kernels it calls from other files, as sampling/fused_steps.py calls these).
_OPTIONS = dict(nogil=True, fastmath=True, error_model="numpy", cache=True)

GEMV_ROWS = 8  # the most rows a product may run as a GEMV per row (`add_product`)
CELLS = {"lstm": 0, "gru": 1, "rnn": 2}  # a kernel's `cell` argument
LSTM, GRU = CELLS["lstm"], CELLS["gru"]

# tanh(x) ~ x P(x^2) / Q(x^2), P of degree 6 and Q of degree 3 in x^2: the coefficients of the
# float32 tanh in Eigen (and XLA), a minimax fit on [-c, c]; past c = 7.9053..., tanh(x) is 1
# to float32 rounding and x is clamped there.
_F = np.float32
_P = tuple(_F(a) for a in (-2.76076847742355e-16, 2.00018790482477e-13, -8.60467152213735e-11,
                           5.12229709037114e-08, 1.48572235717979e-05, 6.37261928875436e-04,
                           4.89352455891786e-03))  # x^12 ... x^0 of P
_Q = tuple(_F(b) for b in (1.19825839466702e-06, 1.18534705686654e-04, 2.26843463243900e-03,
                           4.89352518554385e-03))  # x^6 ... x^0 of Q
_TANH_CLAMP = _F(7.90531110763549805)


@njit(inline="always", **_OPTIONS)
def _tanh(x):
    """tanh(x) as x P(x^2) / Q(x^2) on x clamped to +-_TANH_CLAMP (Horner's rule)."""
    x = min(max(x, -_TANH_CLAMP), _TANH_CLAMP)
    x2 = x * x
    p = ((((((_P[0] * x2 + _P[1]) * x2 + _P[2]) * x2 + _P[3]) * x2 + _P[4]) * x2 + _P[5]) * x2
         + _P[6])
    q = ((_Q[0] * x2 + _Q[1]) * x2 + _Q[2]) * x2 + _Q[3]
    return x * p / q


@njit(**_OPTIONS)
def tanh_array(x):
    """`_tanh` over an array (for the tests)."""
    out = np.empty_like(x)
    flat, into = x.ravel(), out.ravel()
    for i in range(flat.size):
        into[i] = _tanh(flat[i])
    return out


@njit(**_OPTIONS)
def add_product(x, w, out, gemv_rows):
    """out += x @ w, by BLAS: one GEMM, or with up to `gemv_rows` rows one GEMV per row. A GEMM
    packs `w` first, which with a few rows can cost more than reading `w` once per row, or less:
    it depends on the CPU and the BLAS build (measured: 2 rows by [128, 512] weights, 47 us as a
    GEMM against 8 us as two GEMVs on one machine, 14 against 21 on another), so the runner
    measures it at model load (models/compiled_runner.py, `measured_gemv_rows`)."""
    if x.shape[0] > gemv_rows:
        blas.gemm(x, w, out, 1.0)
        return
    for i in range(x.shape[0]):
        blas.gemv(x[i], w, out[i], 1.0)


@njit(**_OPTIONS)
def fill_rows(out, vector):
    """Each row of `out` a copy of `vector` (a bias, which a product then adds to)."""
    for i in range(out.shape[0]):
        out[i] = vector


@njit(**_OPTIONS)
def rows_of(vector, rows):
    """[rows, len(vector)], each row a copy of `vector`."""
    out = np.empty((rows, vector.shape[0]), np.float32)
    fill_rows(out, vector)
    return out


@njit(**_OPTIONS)
def cell_rows(cell, gemv_rows, gates, h_in, h, c, recurrent, recurrent_bias):
    """One cell step for every row, in place: `gates` is the input side (x @ kernel + bias,
    [rows, gates * units]; overwritten), `h_in` the rows' whole state before the step (the
    recurrent GEMM's input), `h` (and `c`, LSTM) the state of the units this call updates:
    `h_in` itself, or a copy of some of its columns (`step_units`) with `gates` and `recurrent`
    cut to them. Each loop reads and writes one array of its own, which LLVM vectorises (through
    a view shared with another array it did not: measured 2x slower)."""
    units, half, one = h.shape[1], np.float32(0.5), np.float32(1.0)
    if cell == LSTM:  # t: i, f, o (halved), then the candidate
        t = gates
        add_product(h_in, recurrent, t, gemv_rows)
        for i in range(h.shape[0]):
            for j in range(4 * units):
                t[i, j] = _tanh(t[i, j])
            for j in range(units):
                state = ((half * t[i, units + j] + half) * c[i, j]
                         + (half * t[i, j] + half) * t[i, 3 * units + j])
                c[i, j] = state
                h[i, j] = (half * t[i, 2 * units + j] + half) * _tanh(state)
    elif cell == GRU:  # z, r (halved), then h; reset_after: r gates the recurrent term
        hidden = rows_of(recurrent_bias, h.shape[0])
        add_product(h_in, recurrent, hidden, gemv_rows)
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
        t = gates
        add_product(h_in, recurrent, t, gemv_rows)
        for i in range(h.shape[0]):
            for j in range(units):
                h[i, j] = _tanh(t[i, j])


@njit(**_OPTIONS)
def layer_inputs(gemv_rows, table, kernels, biases, layer, ids, x):
    """A layer's input side for each row, [rows, gates * units]: the table's rows of `ids` for
    the first layer (its bias folded in), else `x` (the layer below's output) @ kernel + bias."""
    if layer == 0:
        gates = np.empty((ids.shape[0], table.shape[1]), np.float32)
        for i in range(ids.shape[0]):
            gates[i] = table[ids[i]]
        return gates
    gates = rows_of(biases[layer - 1], x.shape[0])
    add_product(x, kernels[layer - 1], gates, gemv_rows)
    return gates


@njit(**_OPTIONS)
def output_logits(gemv_rows, x, out_kernel, out_bias, logits):
    """The output layer's logits of the rows `x` into `logits` [rows, vocab]."""
    fill_rows(logits, out_bias)
    add_product(x, out_kernel, logits, gemv_rows)


@njit(**_OPTIONS)
def step_rows(cell, gemv_rows, table, kernels, biases, recurrents, recurrent_biases, out_kernel,
              out_bias, hs, cs, slots, ids, logits):
    """One step of the sequences in `slots` (fed `ids`), all layers: their state rows are
    gathered from `hs`/`cs` [layers, slots, units], updated and written back; `logits` [rows,
    vocab] receives the output layer's."""
    rows, units = slots.shape[0], hs.shape[2]
    h = np.empty((rows, units), np.float32)
    c = np.empty((rows, units), np.float32)
    for layer in range(hs.shape[0]):
        gates = layer_inputs(gemv_rows, table, kernels, biases, layer, ids, h)
        for i in range(rows):
            h[i] = hs[layer, slots[i]]
            c[i] = cs[layer, slots[i]]
        cell_rows(cell, gemv_rows, gates, h, h, c, recurrents[layer], recurrent_biases[layer])
        for i in range(rows):
            hs[layer, slots[i]] = h[i]
            cs[layer, slots[i]] = c[i]
    output_logits(gemv_rows, h, out_kernel, out_bias, logits)


@njit(parallel=True, **_OPTIONS)
def step_parts(parts, cell, gemv_rows, table, kernels, biases, recurrents, recurrent_biases,
               out_kernel, out_bias, hs, cs, slots, ids, logits):
    """`step_rows` over `parts` contiguous runs of the batch's rows, one per thread."""
    rows = slots.shape[0]
    for part in prange(parts):
        first, end = rows * part // parts, rows * (part + 1) // parts
        step_rows(cell, gemv_rows, table, kernels, biases, recurrents, recurrent_biases,
                  out_kernel, out_bias, hs, cs, slots[first:end], ids[first:end],
                  logits[first:end])


@njit(parallel=True, **_OPTIONS)
def step_units(parts, cell, gemv_rows, tables, kernels, biases, recurrents, recurrent_biases,
               out_kernel, out_bias, hs, cs, slots, ids, logits):
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
            gates = layer_inputs(gemv_rows, tables[part], kernels[part], biases[part], layer,
                                 ids, x)
            h = np.empty((rows, share), np.float32)
            c = np.empty((rows, share), np.float32)
            for i in range(rows):
                h[i] = h_in[i, first:end]
                c[i] = cs[layer, slots[i], first:end]
            cell_rows(cell, gemv_rows, gates, h_in, h, c, recurrents[part, layer],
                      recurrent_biases[part, layer])
            for i in range(rows):
                hs[layer, slots[i], first:end] = h[i]
                cs[layer, slots[i], first:end] = c[i]
        for i in range(rows):
            x[i] = hs[layer, slots[i]]
    output_logits(gemv_rows, x, out_kernel, out_bias, logits)


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
def prefill_positions(cell, gemv_rows, table, kernels, biases, recurrents, recurrent_biases,
                      out_kernel, out_bias, hs, cs, slot, ids):
    """Feed `ids` one after another to the sequence in `slot`; the logits after each of them
    [len(ids), vocab]. Layer by layer: each layer's input projection is one GEMM over all
    positions, and only the recurrence runs position by position."""
    positions, units = ids.shape[0], hs.shape[2]
    x = np.empty((positions, units), np.float32)
    for layer in range(hs.shape[0]):
        gates = layer_inputs(gemv_rows, table, kernels, biases, layer, ids, x)
        h = hs[layer, slot:slot + 1].copy()
        c = cs[layer, slot:slot + 1].copy()
        for p in range(positions):
            cell_rows(cell, gemv_rows, gates[p:p + 1], h, h, c, recurrents[layer],
                      recurrent_biases[layer])
            x[p] = h[0]
        hs[layer, slot] = h[0]
        cs[layer, slot] = c[0]
    logits = np.empty((positions, out_bias.shape[0]), np.float32)
    output_logits(gemv_rows, x, out_kernel, out_bias, logits)
    return logits

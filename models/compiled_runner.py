"""The compiled runner: the NumPy runner's interface, its step one machine-code call that holds
no GIL and spreads the batch's rows over the cores (models/compiled_cells.py).

A small model's step is a few small GEMMs and their gate math (2x128 at 64 streams: three
[64, 128] x [128, 512] products). Run as NumPy calls, the calls between the GEMMs cost a
quarter of the step (~100 of ~410 us), and one BLAS thread leaves the second core idle (small
GEMMs split over BLAS threads wait at each call's barrier: models/runner.py). Here each core
takes a part of the rows through every layer: one fork and one join per step, not per GEMM.

The weights are stacked per kind ([layers - 1, units, gates * units] kernels and so on, all
layers having the same width) and the state is `[layers, slots, units]` arrays, so one kernel
serves any number of layers. A GRU or plain RNN has no `c` state: its array is allocated and
never read.
"""

from __future__ import annotations

import threading
import time

import numba
import numpy as np

from models import compiled_cells
from models.step_cells import StepWeights, WeightsView

# Fewer rows than this per core and a step runs on fewer cores; on one, it is a plain call on
# the engine's thread (a parallel launch wakes every core even for one part). A split pays only
# when the other core is idle, and a Generator shares its cores with the HTTP path (it reserves
# a quarter of one). Fused 2x128 steps, `make bench-split` (BENCHMARKS.md, End to end, stop 24):
# at 4-12 rows a split is 12-38% faster on idle cores at 1.1-1.6x the CPU, and on cores busy
# with other work slower, at twice the CPU or more (its parts wait at the join for a core). From 16
# rows one thread's GEMM is past BLAS's small-matrix path, and the split costs no more.
MIN_ROWS_PER_CORE = 8
# A layer's recurrent weights this big or bigger and a step splits its units, not its rows, over
# the cores (`units_split_pays`): from 2x256 up, measured faster at every batch size.
UNITS_SPLIT_BYTES = 1 << 20


class CompiledStepRunner(WeightsView):
    name = "compiled"
    device = "CPU"

    def __init__(self, weights: StepWeights, split_units: bool | None = None):
        """`split_units`: how a step spreads over the cores, by units (True) or by rows
        (False); None: by units when the model is big enough to gain (`units_split_pays`)."""
        self.weights = weights
        layers = weights.layers
        self.cell = compiled_cells.CELLS[weights.config.cell]
        width = layers[0].recurrent.shape[1]
        self.kernels = _stack([layer.kernel for layer in layers[1:]],
                              (0, layers[0].units, width))
        self.biases = _stack([layer.bias for layer in layers[1:]], (0, width))
        self.recurrents = _stack([layer.recurrent for layer in layers], None)
        self.recurrent_biases = _stack(
            [np.zeros(width, np.float32) if layer.recurrent_bias is None
             else layer.recurrent_bias for layer in layers], None)
        self.hs = self.cs = np.zeros((len(layers), 0, layers[0].units), np.float32)
        self.cores = numba.config.NUMBA_NUM_THREADS
        # A big model's step splits its units over the cores, each reading its part of the
        # weights (compiled_cells.step_units); a small one's splits its rows. The cut weights
        # are a second copy (a 2x512's: 12 MB): the prefill reads the whole ones.
        self.splits_units = (units_split_pays(weights, self.cores) if split_units is None
                             else split_units)
        if self.splits_units:
            gates, cut = width // layers[0].units, compiled_cells.split_units
            self.cut_weights = tuple(cut(w, self.cores, gates) for w in (
                weights.input_table, self.kernels, self.biases, self.recurrents,
                self.recurrent_biases))
        self.gemv_rows = compiled_cells.GEMV_ROWS  # until measured, below
        self._compiled_once()
        # Measured on the products a step runs most, a layer's recurrent weights as each thread
        # has them, on one BLAS thread as in a step (models/blas.py).
        recurrent = self.cut_weights[3][0, 0] if self.splits_units else self.recurrents[0]
        self.gemv_rows = measured_gemv_rows(recurrent)

    @classmethod
    def from_model(cls, model, config, **options) -> CompiledStepRunner:
        return cls(StepWeights.from_model(model, config), **options)

    def allocate(self, slots: int) -> None:
        """Reserve state for `slots` concurrent sequences (all zero)."""
        shape = (len(self.weights.layers), slots, self.weights.layers[0].units)
        self.hs, self.cs = np.zeros(shape, np.float32), np.zeros(shape, np.float32)

    def reset(self, slot: int) -> None:
        self.hs[:, slot] = 0.0
        self.cs[:, slot] = 0.0

    def kernel_arguments(self) -> tuple:
        """The model, how its products run and its state, as the kernels take them (after
        `parts`)."""
        weights = self.weights
        return (self.cell, self.gemv_rows, weights.input_table, self.kernels, self.biases,
                self.recurrents, self.recurrent_biases, weights.out_kernel, weights.out_bias,
                self.hs, self.cs)

    def step(self, slots: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """Feed `ids[i]` to the sequence in `slots[i]`; returns next-char logits [n, vocab]."""
        slots = np.ascontiguousarray(slots, np.int64)
        ids = np.ascontiguousarray(ids, np.int64)
        logits = np.empty((len(slots), self.vocab_size), np.float32)
        if self.splits_units:
            with _PARALLEL_CALLS:
                compiled_cells.step_units(self.cores, self.cell, self.gemv_rows,
                                          *self.cut_weights,
                                          self.weights.out_kernel, self.weights.out_bias,
                                          self.hs, self.cs, slots, ids, logits)
        else:
            self.run_split(compiled_cells.step_rows, compiled_cells.step_parts, len(slots),
                           slots, ids, logits)
        return logits

    def run_split(self, rows_kernel, parts_kernel, rows: int, *arguments) -> None:
        """`parts_kernel(parts, <the model and its state>, *arguments)`, a parallel kernel
        that splits the `rows` into `parts`, one per core; with too few rows to be worth it,
        `rows_kernel(<the same>, *arguments)` on this thread alone, without waking the other
        cores at all (each launch wakes every worker, even for one part)."""
        parts = min(self.cores, rows // MIN_ROWS_PER_CORE)
        if parts <= 1:
            rows_kernel(*self.kernel_arguments(), *arguments)
            return
        with _PARALLEL_CALLS:
            parts_kernel(parts, *self.kernel_arguments(), *arguments)

    def prefill(self, slot: int, ids: np.ndarray) -> np.ndarray:
        """Feed `ids` one after another to the sequence in `slot`; the logits after each."""
        return compiled_cells.prefill_positions(*self.kernel_arguments(), slot,
                                                np.ascontiguousarray(ids, np.int64))

    def _compiled_once(self) -> None:
        """Compile (or load from the cache) the kernels for these argument types now, at
        model load, not in the first request: a cold compile takes seconds."""
        saved = self.hs, self.cs
        self.allocate(2 * MIN_ROWS_PER_CORE)
        for rows in (1, 2 * MIN_ROWS_PER_CORE):  # on this thread, and split over the cores
            self.step(np.arange(rows), np.zeros(rows, np.int64))
        self.prefill(0, np.zeros(2, np.int64))
        self.hs, self.cs = saved


def measured_gemv_rows(weights: np.ndarray, repeats: int = 5) -> int:
    """Up to how many rows a product by `weights` runs faster as a GEMV per row than as one
    GEMM on this machine, of 2, 4 and 8 rows (0: never; `compiled_cells.add_product`). Measured
    at model load, each form the best of `repeats` (other work only ever slows one down); it
    takes ~0.1 s for a 2x512's weights and microseconds for small ones."""
    best = 0
    for rows in (2, 4, compiled_cells.GEMV_ROWS):
        x = np.ones((rows, weights.shape[0]), np.float32)
        out = np.zeros((rows, weights.shape[1]), np.float32)
        as_gemv, as_gemm = (_best_seconds(compiled_cells.add_product, x, weights, out,
                                          gemv_rows, repeats=repeats) for gemv_rows in (rows, 0))
        if as_gemv >= as_gemm:
            break
        best = rows
    return best


def _best_seconds(function, *arguments, repeats: int) -> float:
    function(*arguments)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(4):
            function(*arguments)
        best = min(best, time.perf_counter() - started)
    return best


def units_split_pays(weights: StepWeights, cores: int) -> bool:
    """Whether a step of this model is faster split by units than by rows: when its weights
    are big enough that each core reading all of them (a split by rows) costs more than a join
    per layer. The threshold is measured, not derived (BENCHMARKS.md, Sampling engine: fifth
    pass)."""
    recurrent = weights.layers[0].recurrent
    return (cores > 1 and weights.layers[0].units % cores == 0
            and recurrent.nbytes >= UNITS_SPLIT_BYTES)


# The steps of two engines in one process (two models in a replica) take turns: each already
# spreads over every core, and numba's own 'workqueue' threading layer, the one it falls back
# to when neither OpenMP nor TBB loads, aborts the process on two parallel launches at once.
_PARALLEL_CALLS = threading.Lock()


def compile_kernels() -> CompiledStepRunner:
    """Compile the runner's kernels into numba's on-disk cache (sampling/fused_steps.py's
    `compile_kernels`, which `make` runs whenever they change, adds the engine's): the first
    process to need them then loads them (~1 s) instead of compiling them (~25 s), so no
    replica's first model load or test waits for a compile. One tiny model covers every model:
    the kernels take the cell and the sizes as arguments of the same types. Its runner is built
    twice, the step split by units and by rows; returns the one split by rows."""
    from models.charrnn import build_charrnn
    from models.config import CharRNNConfig

    config = CharRNNConfig(vocab_size=4, lstm_size=8 * numba.config.NUMBA_NUM_THREADS,
                           num_layers=2)
    model = build_charrnn(config)
    CompiledStepRunner.from_model(model, config, split_units=True)
    return CompiledStepRunner.from_model(model, config, split_units=False)


def _stack(arrays: list, empty_shape: tuple | None) -> np.ndarray:
    if not arrays:
        return np.zeros(empty_shape, np.float32)
    return np.ascontiguousarray(np.stack(arrays), dtype=np.float32)

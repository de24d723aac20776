"""Several engine steps in one compiled call, for the compiled runner: each step's logits are
sampled inside the call (the same sampler as every other step), so the next step's inputs never
leave the machine code.

A step of the 2x128 model at 64 streams takes ~0.3 ms on two cores; around it, the engine's
Python per step (scheduling, sampling through NumPy or a kernel call, the output) and the GIL
handed between the engine's thread and the event loop's cost as much again. A fused call pays
them once for many steps. Each core takes a part of the rows through all of the call's steps
on its own (rows never mix), so there is one fork and one join per call, not per step; a batch
too small to split runs on the engine's thread alone (`fused_rows`).

The engine fuses only steps where nothing per character happens in Python: no stop strings or
logprobs, no prime still being read, and no sequence reaching its length before the call's
last step; joins, cancels and deadlines wait for the call's end (one hop at most).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from models.compiled_cells import step_rows
from models.compiled_runner import MIN_ROWS_PER_CORE, CompiledStepRunner
from models.compiled_runner import compile_kernels as compile_runner_kernels
from sampling.sampler import sample_slots
from sampling.slots import SlotTable


@njit(nogil=True, cache=True, error_model="numpy")
def fused_rows(cell, gemv_rows, table, kernels, biases, recurrents, recurrent_biases, out_kernel,
               out_bias, hs, cs, slots, key, generated, temperature, top_k, top_p, next_id,
               chosen):
    """`chosen.shape[0]` steps of the sequences in `slots`, each sampled: `chosen[step, row]`
    receives the ids; the sampling arrays (sampling/slots.py's table, by slot) move on."""
    rows, vocab = slots.shape[0], out_bias.shape[0]
    ids = np.empty(rows, np.int64)
    logits = np.empty((rows, vocab), np.float32)
    for step in range(chosen.shape[0]):
        for i in range(rows):
            ids[i] = next_id[slots[i]]
        step_rows(cell, gemv_rows, table, kernels, biases, recurrents, recurrent_biases,
                  out_kernel, out_bias, hs, cs, slots, ids, logits)
        sample_slots(logits, slots, key, generated, temperature, top_k, top_p, next_id,
                     chosen[step])


@njit(parallel=True, nogil=True, cache=True, error_model="numpy")
def fused_parts(parts, cell, gemv_rows, table, kernels, biases, recurrents, recurrent_biases,
                out_kernel, out_bias, hs, cs, slots, key, generated, temperature, top_k, top_p,
                next_id, chosen):
    """`fused_rows` over `parts` contiguous runs of the rows, one per thread."""
    rows = slots.shape[0]
    for part in prange(parts):
        first, end = rows * part // parts, rows * (part + 1) // parts
        fused_rows(cell, gemv_rows, table, kernels, biases, recurrents, recurrent_biases,
                   out_kernel, out_bias, hs, cs, slots[first:end], key, generated, temperature,
                   top_k, top_p, next_id, chosen[:, first:end])


def run_fused_steps(runner: CompiledStepRunner, table: SlotTable, slots: np.ndarray,
                    steps: int) -> np.ndarray:
    """`steps` sampled steps of the sequences in `slots` (int64, their table's slots);
    returns the chosen ids [steps, rows]."""
    chosen = np.empty((steps, len(slots)), np.int64)
    runner.run_split(fused_rows, fused_parts, len(slots), slots, *table.sampling_arrays(),
                     chosen)
    table.sampled(slots)
    return chosen


def load_fused_kernels(runner: CompiledStepRunner, table: SlotTable) -> None:
    """Both forms of the fused steps, on one thread and split over the cores, loaded now
    (numba reads each from its cache at its first call; `make` compiles them): at a model's
    load rather than in its first request of each size. Runs no step."""
    for rows in sorted({1, min(len(table.next_id), 2 * MIN_ROWS_PER_CORE)}):
        run_fused_steps(runner, table, np.arange(rows), 0)


def compile_kernels() -> None:
    """Every kernel of the compiled runner's serving path into numba's cache (`make` runs this
    whenever they change): the runner's own, the sampler's, and the fused steps."""
    runner = compile_runner_kernels()
    table = SlotTable(4)
    table.sample(np.zeros((1, runner.vocab_size), np.float32), np.array([0]))
    load_fused_kernels(runner, table)

"""The NumPy model runner: one timestep of a trained char-RNN for a batch of sequences.

Calling the Keras model once per character costs milliseconds of framework overhead
(~80 chars/s here); one step is only a few small matmuls, so the runner copies the weights out
of the Keras layers (models/step_cells.py) and computes the step directly on the host.

State lives in preallocated per-slot arrays (`[slots, units]`): the scheduler assigns each
sequence a slot, and `step` reads and writes only the rows of the active slots. `prefill` feeds
one sequence many ids in a row (a long prime) without the per-step cost of the shared batch.
models/tf_runner.py is the same interface with weights and state on a TensorFlow device.
"""

from __future__ import annotations

import numpy as np

from models.config import CharRNNConfig
from models.step_cells import StepWeights, WeightsView, cell_update


def slot_rows(slots: np.ndarray) -> slice | np.ndarray:
    """Rows of per-slot arrays for `slots`: a slice when they are consecutive (a full batch,
    which the engine keeps in slot order), so a step reads views and writes rows back without
    the gathers and scatters of fancy indexing; else the slots themselves. The runner's state
    and the engine's slot table (sampling/slots.py) are both indexed this way."""
    first = int(slots[0])
    if int(slots[-1]) - first == len(slots) - 1 and (np.diff(slots) == 1).all():
        return slice(first, first + len(slots))
    return slots


def single_threaded_blas() -> None:
    """One BLAS thread in this process from now on. A step's GEMMs are small (~0.1 ms at 2x128):
    split over threads they gain little even on an idle machine, and on a shared one a GEMM
    waits at its fork-join barrier for whichever of its threads was preempted, and so does
    the engine's worker thread around it: at 64 streams the engine ran 2-10x slower with two
    BLAS threads than with one (BENCHMARKS.md, Sampling engine)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1, user_api="blas")


class StepRunner(WeightsView):
    name = "numpy"
    device = "CPU"  # the host: NumPy computes where the replica process runs

    def __init__(self, weights: StepWeights):
        single_threaded_blas()
        self.weights = weights
        self.slots = 0
        self.state: list[list[np.ndarray]] = []  # per layer: [h] or [h, c], each [slots, units]

    @classmethod
    def from_model(cls, model, config: CharRNNConfig) -> StepRunner:
        return cls(StepWeights.from_model(model, config))

    def allocate(self, slots: int) -> None:
        """Reserve state for `slots` concurrent sequences (all zero)."""
        self.slots = slots
        self.state = [[np.zeros((slots, layer.units), np.float32)
                       for _ in range(layer.state_parts)] for layer in self.weights.layers]

    def reset(self, slot: int) -> None:
        """Zero a slot's state before a new sequence uses it."""
        for parts in self.state:
            for array in parts:
                array[slot] = 0.0

    def step(self, slots: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """Feed `ids[i]` to the sequence in `slots[i]`; returns next-char logits [n, vocab]."""
        weights, rows = self.weights, slot_rows(slots)
        x = None
        for index, (layer, parts) in enumerate(zip(weights.layers, self.state, strict=True)):
            if index == 0:
                gates = weights.input_table[ids]
            else:
                gates = x @ layer.kernel
                gates += layer.bias
            new = cell_update(layer, gates, [array[rows] for array in parts], layer.recurrent,
                              layer.recurrent_bias, np.tanh)
            for array, value in zip(parts, new, strict=True):
                array[rows] = value
            x = new[0]
        return x @ weights.out_kernel + weights.out_bias

    def prefill(self, slot: int, ids: np.ndarray) -> np.ndarray:
        """Feed `ids` one after another to the sequence in `slot`; returns the logits after
        each of them [len(ids), vocab]. Layer by layer: only the recurrence is sequential, so
        each layer's input projection (layer 0's table rows, the others' kernel) and the
        output layer are one matrix product over all positions."""
        weights = self.weights
        x = None
        for index, (layer, parts) in enumerate(zip(weights.layers, self.state, strict=True)):
            inputs = weights.input_table[ids] if index == 0 else x @ layer.kernel + layer.bias
            state = [array[slot:slot + 1] for array in parts]
            outputs = np.empty((len(ids), layer.units), np.float32)
            for position, gates in enumerate(inputs):
                state = cell_update(layer, gates[None], state, layer.recurrent,
                                    layer.recurrent_bias, np.tanh)
                outputs[position] = state[0][0]
            for array, value in zip(parts, state, strict=True):
                array[slot] = value[0]
            x = outputs
        return x @ weights.out_kernel + weights.out_bias

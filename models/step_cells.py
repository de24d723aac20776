"""The char-RNN as a single timestep: its trained weights in step layout, and the cell equations.

Both step runners (NumPy in models/runner.py, TensorFlow in models/tf_runner.py) are built from
the `StepWeights` read here and run `cell_update` with their own array functions, so the Keras
layer layout and the cell math are written once.

The first layer's input projection is a table lookup: for one-hot input
`onehot(ids) @ W == W[ids]`, and for an embedding `E[ids] @ W == (E @ W)[ids]`, so the table
(with the first layer's bias folded in) is precomputed once per model.

Gate math in "tanh form": sigmoid(x) == 0.5 * tanh(x / 2) + 0.5, so the weights of the sigmoid
gates are stored halved (exact: a power of two) and in front (LSTM i, f, o, then g; GRU z, r,
then h), and ONE tanh over a layer's whole pre-activation block gives every gate. On the host
the element-wise gate math cost about as much as the GEMMs of a small model; this layout halves
its calls, and each call runs over contiguous rows instead of one column block per gate.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from models.config import CharRNNConfig

STATE_PARTS = {"lstm": 2, "gru": 1, "rnn": 1}  # arrays of state per layer: (h, c) or (h,)
# Keras' gate order -> the step layout's: the sigmoid gates first (see the module docstring).
GATE_ORDER = {"lstm": (0, 1, 3, 2), "gru": (0, 1, 2), "rnn": (0,)}
SIGMOID_GATES = {"lstm": 3, "gru": 2, "rnn": 0}


def tanh_form(cell: str, array: np.ndarray | None) -> np.ndarray | None:
    """A Keras weight or bias (gates along the last axis) in the step layout: gates reordered,
    the sigmoid ones halved."""
    if array is None:
        return None
    order = GATE_ORDER[cell]
    gates = np.split(array, len(order), axis=-1)
    blocks = [gates[g] * np.float32(0.5) if i < SIGMOID_GATES[cell] else gates[g]
              for i, g in enumerate(order)]
    return np.ascontiguousarray(np.concatenate(blocks, axis=-1), dtype=np.float32)


@dataclass
class LayerWeights:
    cell: str
    kernel: np.ndarray | None  # [in, gates*units]; None for layer 0 (table lookup instead)
    recurrent: np.ndarray  # [units, gates*units]
    bias: np.ndarray  # input-side bias [gates*units]
    recurrent_bias: np.ndarray | None  # GRU (reset_after) only
    units: int

    @property
    def state_parts(self) -> int:
        return STATE_PARTS[self.cell]


@dataclass
class StepWeights:
    config: CharRNNConfig
    input_table: np.ndarray  # [vocab, gates*units] incl. the first layer's bias
    layers: list[LayerWeights]
    out_kernel: np.ndarray  # [units, vocab]
    out_bias: np.ndarray  # [vocab]

    @classmethod
    def from_model(cls, model, config: CharRNNConfig) -> StepWeights:
        """Copy the weights out of the Keras layers built by models/charrnn.py. Always float32:
        a model trained with mixed precision keeps float32 variables, and serving computes in
        float32 whatever the training policy was."""
        def weights(name):
            return [np.asarray(w, dtype=np.float32) for w in model.get_layer(name).get_weights()]

        layers = []
        for index in range(config.num_layers):
            kernel, recurrent, bias = weights(f"rnn_{index}")
            recurrent_bias = None
            if config.cell == "gru":  # Keras 3 default reset_after=True: bias is [2, 3*units]
                bias, recurrent_bias = bias[0], bias[1]
            layers.append(LayerWeights(
                config.cell, *(tanh_form(config.cell, w) for w in (kernel, recurrent, bias,
                                                                   recurrent_bias)),
                recurrent.shape[0]))
        first = layers[0]
        projection = first.kernel
        if config.use_embedding:
            projection = weights("embedding")[0] @ first.kernel
        input_table = np.ascontiguousarray(projection + first.bias, dtype=np.float32)
        first.kernel = None
        out_kernel, out_bias = weights("logits")
        return cls(config, input_table, layers, out_kernel, out_bias)

    @property
    def vocab_size(self) -> int:
        return self.out_bias.shape[0]

    def flops_per_char(self) -> int:
        """Multiply-adds x2 of one step for one sequence (the input lookup is free)."""
        total = 0
        for layer in self.layers:
            if layer.kernel is not None:
                total += 2 * layer.kernel.size
            total += 2 * layer.recurrent.size
        return total + 2 * self.out_kernel.size


class WeightsView:
    """What a step runner tells about the model it runs: read from its `weights`, whichever
    device computes."""

    weights: StepWeights

    @property
    def config(self) -> CharRNNConfig:
        return self.weights.config

    @property
    def vocab_size(self) -> int:
        return self.weights.vocab_size

    def flops_per_char(self) -> int:
        return self.weights.flops_per_char()


def cell_update(layer: LayerWeights, gates, state: list, recurrent, recurrent_bias,
                tanh: Callable) -> list:
    """One cell step for a batch: `gates` is the input side (x @ kernel + bias), `state` the
    layer's [h] or [h, c] rows; returns the new state in the same order (h first, the layer's
    output). `recurrent`/`recurrent_bias` are the layer's weights as the caller's arrays (NumPy
    or device tensors), `tanh` the caller's function. Weights are in the tanh form (module
    docstring): LSTM i, f, o halved, then g; GRU z, r halved, then h."""
    h, u = state[0], layer.units
    if layer.cell == "lstm":
        t = tanh(gates + h @ recurrent)
        s = 0.5 * t[:, :3 * u] + 0.5  # sigmoid of i, f, o
        c = s[:, u:2 * u] * state[1] + s[:, :u] * t[:, 3 * u:]
        return [s[:, 2 * u:] * tanh(c), c]
    if layer.cell == "gru":
        hidden = h @ recurrent + recurrent_bias  # reset_after: r gates the recurrent term
        s = 0.5 * tanh(gates[:, :2 * u] + hidden[:, :2 * u]) + 0.5  # sigmoid of z, r
        z = s[:, :u]
        candidate = tanh(gates[:, 2 * u:] + s[:, u:] * hidden[:, 2 * u:])
        return [z * h + (1.0 - z) * candidate]
    return [tanh(gates + h @ recurrent)]

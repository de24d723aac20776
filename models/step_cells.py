"""The char-RNN as a single timestep: its trained weights in step layout, and the cell equations.

Both step runners (NumPy in models/runner.py, TensorFlow in models/tf_runner.py) are built from
the `StepWeights` read here and run `cell_update` with their own array functions, so the Keras
layer layout and the cell math are written once.

The first layer's input projection is a table lookup: for one-hot input
`onehot(ids) @ W == W[ids]`, and for an embedding `E[ids] @ W == (E @ W)[ids]`, so the table
(with the first layer's bias folded in) is precomputed once per model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from models.config import CharRNNConfig

STATE_PARTS = {"lstm": 2, "gru": 1, "rnn": 1}  # arrays of state per layer: (h, c) or (h,)


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
            layers.append(LayerWeights(config.cell, kernel, recurrent, bias, recurrent_bias,
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
                sigmoid: Callable, tanh: Callable) -> list:
    """One cell step for a batch: `gates` is the input side (x @ kernel + bias), `state` the
    layer's [h] or [h, c] rows; returns the new state in the same order (h first, the layer's
    output). `recurrent`/`recurrent_bias` are the layer's weights as the caller's arrays (NumPy
    or device tensors), `sigmoid`/`tanh` the caller's functions. Gate order is Keras': LSTM
    i, f, g, o; GRU z, r, h."""
    h, u = state[0], layer.units
    if layer.cell == "lstm":
        gates = gates + h @ recurrent
        i, f = sigmoid(gates[:, :u]), sigmoid(gates[:, u:2 * u])
        g, o = tanh(gates[:, 2 * u:3 * u]), sigmoid(gates[:, 3 * u:])
        c = f * state[1] + i * g
        return [o * tanh(c), c]
    if layer.cell == "gru":
        hidden = h @ recurrent + recurrent_bias  # reset_after: r gates the recurrent term
        z = sigmoid(gates[:, :u] + hidden[:, :u])
        r = sigmoid(gates[:, u:2 * u] + hidden[:, u:2 * u])
        candidate = tanh(gates[:, 2 * u:] + r * hidden[:, 2 * u:])
        return [z * h + (1.0 - z) * candidate]
    return [tanh(gates + h @ recurrent)]

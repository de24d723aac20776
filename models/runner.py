"""The model runner: one timestep of a trained char-RNN for a batch of sequences, in NumPy.

Calling the Keras model once per character costs milliseconds of framework overhead
(~80 chars/s here); one step is only a few small matmuls, so the runner copies the weights out
of the Keras layers and computes the step directly. The first layer's input projection is a
table lookup: for one-hot input `onehot(ids) @ W == W[ids]`, and for an embedding
`E[ids] @ W == (E @ W)[ids]`, so the table is precomputed once per model.

State lives in preallocated per-slot arrays (`[slots, units]`): the scheduler assigns each
sequence a slot, and `step` reads and writes only the rows of the active slots.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.config import CharRNNConfig


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (np.tanh(0.5 * x) + 1.0)  # equal to 1/(1+e^-x), without overflow warnings


@dataclass
class _Layer:
    cell: str
    kernel: np.ndarray | None  # [in, gates*units]; None for layer 0 (table lookup instead)
    recurrent: np.ndarray  # [units, gates*units]
    bias: np.ndarray  # input-side bias [gates*units]
    recurrent_bias: np.ndarray | None  # GRU (reset_after) only
    units: int


class StepRunner:
    def __init__(self, config: CharRNNConfig, input_table: np.ndarray, layers: list[_Layer],
                 out_kernel: np.ndarray, out_bias: np.ndarray):
        self.config = config
        self.input_table = input_table  # [vocab, gates*units] incl. the first layer's bias
        self.layers = layers
        self.out_kernel, self.out_bias = out_kernel, out_bias
        self.slots = 0
        self.state: list[list[np.ndarray]] = []

    @classmethod
    def from_model(cls, model, config: CharRNNConfig) -> StepRunner:
        def weights(name):
            return [np.asarray(w, dtype=np.float32) for w in model.get_layer(name).get_weights()]

        layers = []
        for index in range(config.num_layers):
            kernel, recurrent, bias = weights(f"rnn_{index}")
            recurrent_bias = None
            if config.cell == "gru":  # Keras 3 default reset_after=True: bias is [2, 3*units]
                bias, recurrent_bias = bias[0], bias[1]
            layers.append(_Layer(config.cell, kernel, recurrent, bias, recurrent_bias,
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

    def allocate(self, slots: int) -> None:
        """Reserve state for `slots` concurrent sequences (all zero)."""
        self.slots = slots
        self.state = []
        for layer in self.layers:
            parts = 2 if layer.cell == "lstm" else 1
            self.state.append([np.zeros((slots, layer.units), np.float32) for _ in range(parts)])

    def reset(self, slot: int) -> None:
        """Zero a slot's state before a new sequence uses it."""
        for parts in self.state:
            for array in parts:
                array[slot] = 0.0

    def step(self, slots: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """Feed `ids[i]` to the sequence in `slots[i]`; returns next-char logits [n, vocab]."""
        x = None
        for index, (layer, parts) in enumerate(zip(self.layers, self.state, strict=True)):
            h = parts[0][slots]
            if index == 0:
                gates = self.input_table[ids]
            else:
                gates = x @ layer.kernel
                gates += layer.bias
            if layer.cell == "lstm":
                gates += h @ layer.recurrent
                u = layer.units
                i, f = _sigmoid(gates[:, :u]), _sigmoid(gates[:, u:2 * u])
                g, o = np.tanh(gates[:, 2 * u:3 * u]), _sigmoid(gates[:, 3 * u:])
                c = f * parts[1][slots] + i * g
                h = o * np.tanh(c)
                parts[1][slots] = c
            elif layer.cell == "gru":
                u = layer.units
                recurrent = h @ layer.recurrent + layer.recurrent_bias
                z = _sigmoid(gates[:, :u] + recurrent[:, :u])
                r = _sigmoid(gates[:, u:2 * u] + recurrent[:, u:2 * u])
                candidate = np.tanh(gates[:, 2 * u:] + r * recurrent[:, 2 * u:])
                h = z * h + (1.0 - z) * candidate
            else:
                h = np.tanh(gates + h @ layer.recurrent)
            parts[0][slots] = h
            x = h
        return x @ self.out_kernel + self.out_bias

"""The TensorFlow model runner: the NumPy StepRunner's interface, computed on a TF device (GPU).

Weights and the per-slot state are tf.Variables on the device, so a step moves only the slot
and id vectors in and the logits out. The state of every layer (h, and c for an LSTM) is one
`[slots + 1, width]` variable, each layer's parts side by side in columns: a step gathers the
active slots' rows once, runs every layer (models/step_cells.py's equations), and scatters the
new rows back once. Each op is a kernel launch (and ~20 us of executor time on a CPU), so one
gather and one scatter per step beat one per layer and part. The step is one compiled
function; the NumPy runner (models/runner.py) keeps the same interface on the host.

Batch sizes are padded up to a power of two, so the function is compiled for at most
log2(slots) + 1 shapes instead of once per batch size (XLA compiles per shape). Pad rows read
and write an extra scratch row (index `slots`) that no sequence owns: rows of a batched step
never mix, so whatever the scratch row holds cannot reach a real slot. Every bucket is
compiled when the slots are allocated, at model load, not in the middle of serving.

`prefill` (a long prime for one sequence) is a second compiled function: each layer's input
projection over all positions at once, then its recurrence as a `tf.scan`, one call per chunk of
ids. It is traced once for any number of ids and is not XLA-compiled (XLA compiles per length).
"""

from __future__ import annotations

import numpy as np

from models.config import CharRNNConfig
from models.devices import use_full_float32_matmuls
from models.step_cells import StepWeights, WeightsView, cell_update


def bucket_size(n: int) -> int:
    """The padded batch size for `n` sequences: the next power of two."""
    return 1 << max(n - 1, 0).bit_length()


def short_device_name(device: str) -> str:
    """'/job:localhost/replica:0/task:0/device:GPU:0' -> 'GPU:0'."""
    import tensorflow as tf

    spec = tf.DeviceSpec.from_string(device)
    return f"{spec.device_type}:{spec.device_index}" if spec.device_type else device


class TFStepRunner(WeightsView):
    name = "tensorflow"

    def __init__(self, weights: StepWeights, jit_compile: bool | None = None):
        """`jit_compile` None: XLA on a GPU, where it fuses the ~10 elementwise gate ops per
        layer into one kernel; not on a CPU, where TF's own oneDNN matmuls measured faster than
        XLA's at batch 8-64 (BENCHMARKS.md, Step runners)."""
        import tensorflow as tf

        use_full_float32_matmuls()  # the same text for a seed on a GPU replica as on a CPU one
        self.weights = weights

        def device_variable(array, name):  # non-trainable: serving never updates the weights
            return None if array is None else tf.Variable(array, trainable=False, name=name)

        self.input_table = device_variable(weights.input_table, "input_table")
        self.layer_variables = [
            [device_variable(getattr(layer, field), f"rnn_{index}_{field}")
             for field in ("kernel", "bias", "recurrent", "recurrent_bias")]
            for index, layer in enumerate(weights.layers)]
        self.out_kernel = device_variable(weights.out_kernel, "out_kernel")
        self.out_bias = device_variable(weights.out_bias, "out_bias")
        self.device = short_device_name(self.input_table.device)
        self.jit_compile = self.device.startswith("GPU") if jit_compile is None else jit_compile
        # Columns of the state variable: layer 0's h (, c), layer 1's h (, c), ...
        self.state_widths = [layer.units for layer in weights.layers
                             for _ in range(layer.state_parts)]
        self.slots = 0
        self.state: tf.Variable | None = None
        self._step = self._reset = self._prefill = None

    @classmethod
    def from_model(cls, model, config: CharRNNConfig,
                   jit_compile: bool | None = None) -> TFStepRunner:
        return cls(StepWeights.from_model(model, config), jit_compile)

    def allocate(self, slots: int) -> None:
        """Reserve zeroed state for `slots` sequences (plus the scratch row) and compile the
        step for every bucket size up to `slots`."""
        import tensorflow as tf

        self.slots = slots
        self.state = tf.Variable(tf.zeros([slots + 1, sum(self.state_widths)]), trainable=False,
                                 name="state")
        # New variables need a new trace; the [None] signature keeps it one trace for all sizes.
        vector = tf.TensorSpec([None], tf.int32)
        self._step = tf.function(self._step_graph, input_signature=[vector, vector],
                                 jit_compile=self.jit_compile)
        scalar = tf.TensorSpec([], tf.int32)
        self._reset = tf.function(self._reset_graph, input_signature=[scalar])
        self._prefill = tf.function(self._prefill_graph, input_signature=[scalar, vector])
        size = 1
        while True:  # only the scratch row is written: every slot stays zero
            self._step(np.full(size, slots, np.int32), np.zeros(size, np.int32))
            if size >= slots:
                break
            size *= 2
        self._prefill(np.int32(slots), np.zeros(2, np.int32))
        self._reset(np.int32(slots))

    def reset(self, slot: int) -> None:
        """Zero a slot's state before a new sequence uses it."""
        self._reset(np.int32(slot))

    def step(self, slots: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """Feed `ids[i]` to the sequence in `slots[i]`; returns next-char logits [n, vocab]."""
        n = len(slots)
        size = bucket_size(n)
        padded_slots = np.full(size, self.slots, np.int32)  # pad rows -> the scratch row
        padded_slots[:n] = slots
        padded_ids = np.zeros(size, np.int32)
        padded_ids[:n] = ids
        return self._step(padded_slots, padded_ids).numpy()[:n]

    def prefill(self, slot: int, ids: np.ndarray) -> np.ndarray:
        """Feed `ids` one after another to the sequence in `slot`; returns the logits after
        each of them [len(ids), vocab]."""
        return self._prefill(np.int32(slot), np.asarray(ids, np.int32)).numpy()

    def _step_graph(self, slots, ids):
        import tensorflow as tf

        old = tf.split(tf.gather(self.state, slots), self.state_widths, axis=1)
        new, x = [], None
        for index, (layer, variables) in enumerate(
                zip(self.weights.layers, self.layer_variables, strict=True)):
            kernel, bias, recurrent, recurrent_bias = variables
            gates = tf.gather(self.input_table, ids) if index == 0 else x @ kernel + bias
            parts = old[len(new):len(new) + layer.state_parts]
            new += cell_update(layer, gates, parts, recurrent, recurrent_bias, tf.tanh)
            x = new[-layer.state_parts]  # h, the layer's output
        self.state.scatter_update(tf.IndexedSlices(tf.concat(new, axis=1), slots))
        return x @ self.out_kernel + self.out_bias

    def _prefill_graph(self, slot, ids):
        import tensorflow as tf

        old = tf.split(tf.gather(self.state, slot[None]), self.state_widths, axis=1)
        final, x = [], None
        for index, (layer, variables) in enumerate(
                zip(self.weights.layers, self.layer_variables, strict=True)):
            kernel, bias, recurrent, recurrent_bias = variables
            inputs = tf.gather(self.input_table, ids) if index == 0 else x @ kernel + bias

            def advance(state, gates, layer=layer, recurrent=recurrent,
                        recurrent_bias=recurrent_bias):
                return cell_update(layer, gates[None], state, recurrent, recurrent_bias,
                                   tf.tanh)

            parts = old[len(final):len(final) + layer.state_parts]
            states = tf.scan(advance, inputs, initializer=parts)  # each [len(ids), 1, width]
            final += [part[-1] for part in states]
            x = states[0][:, 0, :]  # h at every position: the next layer's input
        self.state.scatter_update(tf.IndexedSlices(tf.concat(final, axis=1), slot[None]))
        return x @ self.out_kernel + self.out_bias

    def _reset_graph(self, slot):
        import tensorflow as tf

        self.state.scatter_update(tf.IndexedSlices(tf.zeros([1, self.state.shape[1]]), slot[None]))

"""The reference's way of sampling, for comparison only (the sampling benchmark's baseline and
the naive server of the load test): one sequence at a time, a compiled batch-1 step per
character (tf.function over the Keras cells), NumPy sampling. No cross-request batching."""

from __future__ import annotations

import numpy as np

from models.config import CharRNNConfig


class PerRequestSampler:
    def __init__(self, model, config: CharRNNConfig):
        import tensorflow as tf

        cells = [model.get_layer(f"rnn_{i}").cell for i in range(config.num_layers)]
        dense = model.get_layer("logits")
        embedding = model.get_layer("embedding") if config.use_embedding else None
        self.config, self.units, self.cells = config, config.lstm_size, cells

        @tf.function
        def step(char_id, states):
            x = embedding(char_id) if embedding else tf.one_hot(char_id, config.vocab_size)
            new_states = []
            for cell, state in zip(cells, states, strict=True):
                x, state = cell(x, state)
                new_states.append(state)
            return tf.nn.softmax(dense(x)), new_states

        self._step = step

    def _zero_states(self):
        import tensorflow as tf

        parts = 2 if self.config.cell == "lstm" else 1
        return [[tf.zeros((1, self.units)) for _ in range(parts)] for _ in self.cells]

    def sample(self, prompt_ids: list[int], length: int, rng: np.random.Generator):
        """Yield `length` sampled ids, one compiled step per character."""
        import tensorflow as tf

        states = self._zero_states()
        probs = None
        for char_id in prompt_ids:
            probs, states = self._step(tf.constant([char_id]), states)
        for _ in range(length):
            p = probs.numpy()[0].astype(np.float64)
            p[0] = 0.0  # never the unknown symbol, as the engine
            char_id = int(rng.choice(len(p), p=p / p.sum()))
            yield char_id
            probs, states = self._step(tf.constant([char_id]), states)

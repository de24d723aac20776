"""The char-RNN network: input ids -> (one-hot | embedding) -> stacked cells -> logits.

The same `CharRNNConfig` rebuilds the network for training, for evaluation after a reload,
and for the serving runner (which reads the weights of the layers named here).
"""

from __future__ import annotations

import keras

from models.config import CharRNNConfig

_CELLS = {"lstm": keras.layers.LSTM, "gru": keras.layers.GRU, "rnn": keras.layers.SimpleRNN}


class OneHot(keras.layers.Layer):
    """Ids -> one-hot float vectors (the reference char-RNN's input when use_embedding is off)."""

    def __init__(self, depth: int, **kwargs):
        super().__init__(**kwargs)
        self.depth = depth

    def call(self, ids):
        return keras.ops.one_hot(ids, self.depth)

    def get_config(self):
        return {**super().get_config(), "depth": self.depth}


def build_charrnn(config: CharRNNConfig) -> keras.Model:
    """Sequence model: int ids [batch, time] -> logits [batch, time, vocab]."""
    ids = keras.Input(shape=(None,), dtype="int32", name="ids")
    if config.use_embedding:
        x = keras.layers.Embedding(config.vocab_size, config.embedding_size, name="embedding")(ids)
    else:
        x = OneHot(config.vocab_size, name="one_hot")(ids)
    drop_rate = 1.0 - config.train_keep_prob
    for layer in range(config.num_layers):
        x = _CELLS[config.cell](config.lstm_size, return_sequences=True, name=f"rnn_{layer}")(x)
        if drop_rate > 0:
            x = keras.layers.Dropout(drop_rate, name=f"dropout_{layer}")(x)
    # float32 logits even under a mixed-precision policy: softmax/loss need the range.
    logits = keras.layers.Dense(config.vocab_size, name="logits", dtype="float32")(x)
    return keras.Model(ids, logits, name="charrnn")

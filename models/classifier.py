"""The LSTM sequence classifier: [batch, timesteps, features] -> class logits, and its export
as a TensorFlow SavedModel that TensorFlow Serving can serve unchanged."""

from __future__ import annotations

import keras

from models.config import ClassifierConfig

SERVING_INPUT = "x_input"
SERVING_OUTPUT = "y_output"


def build_classifier(config: ClassifierConfig) -> keras.Model:
    x = inputs = keras.Input(shape=(config.timesteps, config.features), name=SERVING_INPUT)
    # The input transform is part of the model, decided once at training: Keras, the
    # SavedModel and every predict route apply the same one. (0 is "not resolved": unscaled.)
    x = keras.layers.Rescaling(config.input_scale or 1.0, name="input_scale")(x)
    for layer in range(config.num_layers):
        last = layer == config.num_layers - 1
        x = keras.layers.LSTM(config.num_hidden, return_sequences=not last, name=f"lstm_{layer}")(x)
        if config.dropout > 0:
            x = keras.layers.Dropout(config.dropout, name=f"dropout_{layer}")(x)
    logits = keras.layers.Dense(config.classes, name="logits", dtype="float32")(x)
    return keras.Model(inputs, logits, name="lstm_classifier")


def export_saved_model(model: keras.Model, config: ClassifierConfig, directory: str) -> None:
    """A SavedModel whose `serving_default` signature maps `x_input` to `y_output` (softmax)."""
    import tensorflow as tf

    class Serving(tf.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        @tf.function(input_signature=[tf.TensorSpec([None, config.timesteps, config.features],
                                                    tf.float32, name=SERVING_INPUT)])
        def serve(self, x_input):
            return {SERVING_OUTPUT: tf.nn.softmax(self.model(x_input, training=False), axis=-1)}

    module = Serving()
    tf.saved_model.save(module, directory, signatures={"serving_default": module.serve})

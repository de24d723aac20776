"""The exported SavedModel: TF Serving's signature names, same probabilities as Keras."""

import numpy as np
import tensorflow as tf

from models.classifier import build_classifier, export_saved_model
from models.config import ClassifierConfig


def test_saved_model_signature_round_trip(tmp_path):
    config = ClassifierConfig(timesteps=6, features=5, num_hidden=8, classes=4,
                              input_scale=1 / 255)
    model = build_classifier(config)
    x = 255 * np.random.default_rng(0).random((3, 6, 5)).astype(np.float32)  # raw pixels
    expected = tf.nn.softmax(model(x, training=False)).numpy()

    export_saved_model(model, config, str(tmp_path / "saved_model"))
    loaded = tf.saved_model.load(str(tmp_path / "saved_model"))  # plain TF, no project code
    signature = loaded.signatures["serving_default"]
    assert list(signature.structured_input_signature[1]) == ["x_input"]
    assert list(signature.structured_outputs) == ["y_output"]
    probabilities = signature(x_input=tf.constant(x))["y_output"].numpy()
    np.testing.assert_allclose(probabilities, expected, atol=1e-6)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_the_input_scale_is_part_of_the_model():
    """A model that scales by 1/255 answers raw pixels as the same weights answer [0, 1] input."""
    pixels = ClassifierConfig(timesteps=6, features=5, num_hidden=8, classes=4, input_scale=1 / 255)
    plain = ClassifierConfig(timesteps=6, features=5, num_hidden=8, classes=4, input_scale=1.0)
    scaled_model, plain_model = build_classifier(pixels), build_classifier(plain)
    plain_model.set_weights(scaled_model.get_weights())
    x = np.random.default_rng(1).random((2, 6, 5)).astype(np.float32)
    np.testing.assert_allclose(scaled_model(255 * x).numpy(), plain_model(x).numpy(), atol=1e-5)

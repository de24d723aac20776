"""The NumPy step runner reproduces the Keras network step by step (no Ray)."""

import numpy as np
import pytest

from models.charrnn import build_charrnn
from models.config import CharRNNConfig
from models.runner import StepRunner


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("use_embedding", [False, True])
def test_runner_matches_keras_logits(cell, use_embedding):
    config = CharRNNConfig(vocab_size=23, cell=cell, num_layers=2, lstm_size=16,
                           use_embedding=use_embedding, embedding_size=8)
    model = build_charrnn(config)
    rng = np.random.default_rng(0)
    for weight in model.weights:  # non-zero biases too, so every term is checked
        weight.assign(rng.normal(0, 0.3, weight.shape).astype(np.float32))
    ids = rng.integers(0, 23, size=(3, 12)).astype(np.int32)
    expected = np.asarray(model(ids, training=False))

    runner = StepRunner.from_model(model, config)
    runner.allocate(5)
    slots = np.array([4, 0, 2])  # arbitrary slots: rows must not mix
    for t in range(ids.shape[1]):
        logits = runner.step(slots, ids[:, t])
        np.testing.assert_allclose(logits, expected[:, t], atol=1e-4)


def test_reset_clears_only_that_slot():
    config = CharRNNConfig(vocab_size=10, lstm_size=8, num_layers=1)
    runner = StepRunner.from_model(build_charrnn(config), config)
    runner.allocate(2)
    runner.step(np.array([0, 1]), np.array([3, 4]))
    runner.reset(0)
    assert not runner.state[0][0][0].any() and runner.state[0][0][1].any()


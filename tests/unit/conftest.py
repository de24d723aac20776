"""Fixtures shared by the unit tests."""

from __future__ import annotations

import numpy as np
import pytest

from models.charrnn import build_charrnn
from models.config import CharRNNConfig
from models.runner import StepRunner
from models.vocab import Vocab

ENGINE_VOCAB = Vocab.from_text("abcdefgh \n", 100)  # the engine tests' alphabet


@pytest.fixture(scope="module")
def runner_factory():
    """Fresh step runners of one tiny random-weight char-RNN over ENGINE_VOCAB."""
    config = CharRNNConfig(vocab_size=ENGINE_VOCAB.size, lstm_size=16, num_layers=2)
    model = build_charrnn(config)
    rng = np.random.default_rng(1)
    for weight in model.weights:
        weight.assign(rng.normal(0, 0.5, weight.shape).astype(np.float32))
    return lambda: StepRunner.from_model(model, config)

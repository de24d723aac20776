"""Model size counted from the config (what the server bounds before a job starts) equals
Keras' count of the built network, for every cell type and input kind."""

import itertools

import pytest

from models.charrnn import build_charrnn
from models.classifier import build_classifier
from models.config import CharRNNConfig, ClassifierConfig


@pytest.mark.parametrize("cell, use_embedding, num_layers",
                         itertools.product(("lstm", "gru", "rnn"), (False, True), (1, 3)))
def test_charrnn_param_count_matches_keras(cell, use_embedding, num_layers):
    config = CharRNNConfig(vocab_size=37, cell=cell, num_layers=num_layers, lstm_size=16,
                           use_embedding=use_embedding, embedding_size=8)
    assert config.param_count() == build_charrnn(config).count_params()


@pytest.mark.parametrize("num_layers", [1, 2])
def test_classifier_param_count_matches_keras(num_layers):
    config = ClassifierConfig(timesteps=5, features=3, num_hidden=8, num_layers=num_layers,
                              classes=4, input_scale=1.0)
    assert config.param_count() == build_classifier(config).count_params()

"""Fixtures shared by the unit tests."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest

from models.charrnn import build_charrnn
from models.compiled_runner import CompiledStepRunner
from models.config import CharRNNConfig
from models.runner import StepRunner
from models.vocab import Vocab
from registry import Registry, Settings

ENGINE_VOCAB = Vocab.from_text("abcdefgh \n", 100)  # the engine tests' alphabet
# The host step runners' builders, from (model, config): NumPy, and compiled with its step split
# over the cores by rows (as a tiny model's is by default) or by units (as a big model's is).
HOST_RUNNERS = {"numpy": StepRunner.from_model, "compiled": CompiledStepRunner.from_model,
                "compiled-units": partial(CompiledStepRunner.from_model, split_units=True)}


@pytest.fixture(scope="module", params=HOST_RUNNERS.values(), ids=HOST_RUNNERS)
def runner_factory(request):
    """Fresh step runners of one tiny random-weight char-RNN over ENGINE_VOCAB, each host
    runner in turn."""
    config = CharRNNConfig(vocab_size=ENGINE_VOCAB.size, lstm_size=16, num_layers=2)
    model = build_charrnn(config)
    rng = np.random.default_rng(1)
    for weight in model.weights:
        weight.assign(rng.normal(0, 0.5, weight.shape).astype(np.float32))
    return lambda: request.param(model, config)


# The registry tests' database: each test runs on every supported backend.
@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def settings(request, tmp_path, db_servers) -> Settings:
    """The same tests on every supported backend, each a real server (none mocked)."""
    if request.param == "sqlite":
        # Explicit URL: the integration fixtures export RNNSERVE_DB_URL for the session cluster.
        url = f"sqlite:///{tmp_path}/registry.db"
    else:
        url = db_servers(request.param).new_database()
    return Settings.from_env(storage=str(tmp_path / "storage"), db_url=url)


@pytest.fixture()
def registry(settings) -> Registry:
    return Registry(settings)

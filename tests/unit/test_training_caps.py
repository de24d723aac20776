"""What one upload may make the cluster spend, checked before anything is stored (a real
registry on SQLite, no Ray: nothing here reaches job submission)."""

from __future__ import annotations

import asyncio

import pytest

from deployments.errors import ApiError
from deployments.limits import Limits
from deployments.training_jobs import TrainingJobs
from registry import Registry, Settings
from trainers.families import FAMILIES

TEXT = ("To be, or not to be, that is the question. " * 200).encode()
CHARRNN = FAMILIES["charrnn"]


@pytest.fixture()
def registry(tmp_path) -> Registry:
    return Registry(Settings.from_env(storage=str(tmp_path / "storage"),
                                      db_url=f"sqlite:///{tmp_path}/registry.db"))


def start(registry: Registry, limits: Limits, **form) -> ApiError:
    jobs = TrainingJobs(registry, registry.settings, limits, "http://127.0.0.1:9")
    params = CHARRNN.parse_params({"num_seqs": "4", "num_steps": "10", **form})
    with pytest.raises(ApiError) as refused:
        asyncio.run(jobs.start(CHARRNN, "big", "t.txt", TEXT, params, client="ip:10.0.0.1"))
    return refused.value


@pytest.mark.parametrize("form, setting", [
    ({"num_workers": "5"}, "max_num_workers"),
    ({"cpus_per_worker": "8"}, "max_cpus_per_worker"),
    ({"lstm_size": "4096", "num_layers": "4"}, "max_model_params"),
    ({"log_every_n": "1"}, "min_log_every_n"),
    ({"use_gpu": "true"}, "gpus_on_demand"),
])
def test_resource_asks_over_the_limits_are_refused_and_store_nothing(registry, form, setting):
    error = start(registry, Limits(), **form)
    assert error.status == 400 and f"limits.{setting}" in error.error
    assert registry.list_models() == [] and registry.artifacts.list("uploads") == []


def test_the_model_size_counts_the_vocabulary_the_text_gives(registry):
    # 2 layers of 1024 LSTM units on this text's 30-odd characters: ~12.8 M parameters.
    error = start(registry, Limits(max_model_params=10_000_000), lstm_size="1024")
    assert error.status == 400 and "12," in error.error


def test_past_the_concurrent_job_limit_an_upload_waits(registry):
    for name in ("a", "b"):
        registry.create_version(name)  # queued: their jobs count
    error = start(registry, Limits(max_training_jobs=2))
    assert error.status == 429 and error.headers["Retry-After"]
    assert "limits.max_training_jobs" in error.error
    assert [m["name"] for m in registry.list_models()] == ["a", "b"]

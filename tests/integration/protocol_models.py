"""Small models trained through the real app for the protocol client suites (OpenAI, TF
Serving, KServe): each suite trains its own once per module."""

from __future__ import annotations

import io
from contextlib import contextmanager

import numpy as np
import requests

from tests.integration.api import upload, wait_status

# A classifier that trains in seconds: 8 x 4 inputs, 10 classes (test_bounds.py trains it too).
CLASSIFIER_FORM = {"kind": "lstm-classifier", "num_hidden": "8", "batch_size": "16",
                   "max_steps": "10", "save_every_n": "10", "log_every_n": "10",
                   "val_frac": "0.25"}
TIMESTEPS, FEATURES, CLASSES = 8, 4, 10


def _ready(url: str, name: str, response: requests.Response) -> int:
    assert response.status_code == 202, response.text
    version = response.json()["version"]
    record = wait_status(url, name, version, {"ready", "failed"})
    assert record["status"] == "ready", requests.get(
        f"{url}/models/{name}/versions/{version}/logs", timeout=10).json()
    return version


def ready_charrnn(url: str, name: str, text: str) -> int:
    return _ready(url, name, upload(url, name, text))


def ready_classifier(url: str, name: str) -> int:
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, x=rng.random((64, TIMESTEPS, FEATURES)),
                        y=rng.integers(0, CLASSES, 64))
    response = requests.post(f"{url}/models", data={"name": name, **CLASSIFIER_FORM},
                             files={"file": ("d.npz", buffer.getvalue())}, timeout=60)
    return _ready(url, name, response)


def examples(count: int, seed: int = 1) -> np.ndarray:
    """Inputs for the classifier: float32 [count, TIMESTEPS, FEATURES]."""
    return np.random.default_rng(seed).random((count, TIMESTEPS, FEATURES)).astype(np.float32)


@contextmanager
def ready_copies(registry, source: str, name: str, count: int):
    """A model `name` with `count` ready versions, each a copy of `source`'s version 1 (its
    files and hyperparameters) made in the registry without training; deleted afterwards."""
    record, directory = registry.fetch_version(source, 1)
    try:
        for _ in range(count):
            version = registry.create_version(name, kind=record.kind, params=record.params)
            registry.publish_version(name, version.version, directory)
        yield name
    finally:
        registry.delete_model(name)

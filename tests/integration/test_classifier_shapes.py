"""A classifier trained on signals rather than images (another shape than MNIST's, values in
[-2, 2], nothing held out): the shape and the input scale come from the data, the checkpoint
kept is the lowest-loss one, and an example gets the same answer alone or beside others."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
import requests

from tests.conftest import wait_for

pytestmark = pytest.mark.integration
STEPS, FEATURES = 40, 1


def signals(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two classes an LSTM tells apart easily: rising vs falling ramps over [-2, 2], noisy
    (a sensor, not an image: dividing it by 255 would flatten it to noise)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, size=count)
    ramp = np.linspace(-2, 2, STEPS)
    x = np.stack([ramp if label else ramp[::-1] for label in labels])[..., None]
    return (x + rng.normal(0, 0.3, size=x.shape)).astype(np.float32), labels


@pytest.fixture(scope="module")
def rows_model(serve_app, registry):
    x, labels = signals(256, seed=0)
    buffer = io.BytesIO()
    np.savez(buffer, x=x, y=labels)
    # No timesteps/features: the defaults (0) mean "the data's shape".
    response = requests.post(f"{serve_app}/models", files={"file": ("rows.npz", buffer.getvalue())},
                             data={"name": "rows", "kind": "lstm-classifier", "val_frac": "0",
                                   "classes": "2", "num_hidden": "8", "batch_size": "32",
                                   "learning_rate": "0.02", "max_steps": "60",
                                   "save_every_n": "10", "log_every_n": "10"}, timeout=60)
    assert response.status_code == 202, response.text
    version = response.json()["version"]
    wait_for(lambda: registry.get_version("rows", version).status in ("ready", "failed"), 400,
             interval=1, what="rows v1")
    record = registry.get_version("rows", version)
    assert record.status == "ready", registry.read_logs("rows", version, 0, 1000)
    return record


def predict(url: str, examples) -> list:
    response = requests.post(f"{url}/models/rows/predict", json={"data": examples}, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()["y"]


def test_shape_and_scale_are_read_from_the_uploaded_arrays(serve_app, rows_model):
    assert (rows_model.params["timesteps"], rows_model.params["features"]) == (STEPS, FEATURES)
    assert rows_model.params["input_scale"] == 1.0  # float data: kept as it is
    x, labels = signals(40, seed=1)
    probabilities = np.array(predict(serve_app, x.tolist()))
    assert (probabilities.argmax(axis=1) == labels).mean() >= 0.9


def test_an_example_gets_the_same_answer_alone_and_beside_others(serve_app, rows_model):
    x, _ = signals(1, seed=2)
    alone = predict(serve_app, x.tolist())
    loud = np.full_like(x[0], 2.0) * 100  # a row far outside the others' range
    beside = predict(serve_app, [x[0].tolist(), loud.tolist()])
    np.testing.assert_allclose(alone[0], beside[0], atol=1e-5)


def test_without_validation_the_lowest_training_loss_checkpoint_is_kept(rows_model, registry):
    lines = registry.read_logs("rows", rows_model.version, 0, 1000)
    losses = [float(m.group(1)) for line in lines
              if line.startswith("checkpoint:") and (m := re.search(r" train_loss (\S+)", line))]
    assert len(losses) == 6 and max(losses) > min(losses), lines
    assert "val_accuracy" not in rows_model.metrics
    assert round(rows_model.metrics["train_loss"], 4) == min(losses)

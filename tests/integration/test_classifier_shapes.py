"""A classifier trained on sequences of another shape than MNIST's, with nothing held out:
the shape comes from the data, and the checkpoint kept is the lowest-loss one."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
import requests

from tests.conftest import wait_for

pytestmark = pytest.mark.integration
STEPS, FEATURES = 40, 1


@pytest.fixture(scope="module")
def rows_model(serve_app, registry):
    # Two classes a one-unit-wide LSTM can tell apart: rising vs falling ramps, with noise.
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, size=256)
    ramps = np.linspace(0, 1, STEPS)
    x = np.stack([ramps if label else ramps[::-1] for label in labels])[..., None]
    x = (x + rng.normal(0, 0.3, size=x.shape)).astype(np.float32)
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


def test_shape_is_read_from_the_uploaded_arrays(serve_app, rows_model):
    assert (rows_model.params["timesteps"], rows_model.params["features"]) == (STEPS, FEATURES)
    response = requests.post(f"{serve_app}/models/rows/predict",
                             json={"data": [[0.5]] * STEPS}, timeout=60)
    assert response.status_code == 200, response.text
    assert len(response.json()["y"]) == 2


def test_without_validation_the_lowest_training_loss_checkpoint_is_kept(rows_model, registry):
    lines = registry.read_logs("rows", rows_model.version, 0, 1000)
    losses = [float(m.group(1)) for line in lines
              if line.startswith("checkpoint:") and (m := re.search(r" train_loss (\S+)", line))]
    assert len(losses) == 6 and max(losses) > min(losses), lines
    assert "val_accuracy" not in rows_model.metrics
    assert round(rows_model.metrics["train_loss"], 4) == min(losses)

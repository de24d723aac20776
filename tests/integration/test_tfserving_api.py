"""TF Serving's REST API for the classifier against the real app: the exported SavedModel,
loaded here with plain TensorFlow, answers what the HTTP route answers."""

from __future__ import annotations

import os

import numpy as np
import pytest
import requests

from tests.integration.protocol_models import CLASSES, examples, ready_classifier, ready_copies

pytestmark = pytest.mark.integration

DIGITS = "tfs-digits"


@pytest.fixture(scope="module")
def url(serve_app):
    ready_classifier(serve_app, DIGITS)
    return serve_app


def saved_model_predictions(registry, x: np.ndarray) -> np.ndarray:
    import tensorflow as tf

    from models.artifacts import SAVED_MODEL_DIR

    _, directory = registry.fetch_version(DIGITS, 1)
    signature = tf.saved_model.load(os.path.join(directory, SAVED_MODEL_DIR)) \
        .signatures["serving_default"]
    return signature(x_input=tf.constant(x))["y_output"].numpy()


def test_row_and_columnar_predictions_are_the_saved_models(url, registry):
    x = examples(5)
    expected = saved_model_predictions(registry, x)
    rows = requests.post(f"{url}/v1/models/{DIGITS}:predict", timeout=30,
                         json={"signature_name": "serving_default", "instances": x.tolist()})
    assert rows.status_code == 200, rows.text
    np.testing.assert_allclose(np.array(rows.json()["predictions"]), expected, atol=1e-5)
    named = requests.post(f"{url}/v1/models/{DIGITS}/versions/1:predict", timeout=30,
                          json={"instances": [{"x_input": e} for e in x.tolist()]})
    np.testing.assert_allclose(np.array(named.json()["predictions"]), expected, atol=1e-5)
    columnar = requests.post(f"{url}/v1/models/{DIGITS}:predict", timeout=30,
                             json={"inputs": {"x_input": x.tolist()}})
    assert columnar.status_code == 200, columnar.text
    np.testing.assert_allclose(np.array(columnar.json()["outputs"]), expected, atol=1e-5)
    assert np.array(columnar.json()["outputs"]).shape == (5, CLASSES)


def test_model_status_and_metadata(url):
    for path in (f"/v1/models/{DIGITS}", f"/v1/models/{DIGITS}/versions/1"):
        status = requests.get(f"{url}{path}", timeout=10).json()
        assert status["model_version_status"] == [
            {"version": "1", "state": "AVAILABLE",
             "status": {"error_code": "OK", "error_message": ""}}]
    metadata = requests.get(f"{url}/v1/models/{DIGITS}/metadata", timeout=10).json()
    signature = metadata["metadata"]["signature_def"]["signature_def"]["serving_default"]
    dims = [int(d["size"]) for d in signature["inputs"]["x_input"]["tensor_shape"]["dim"]]
    assert dims == [-1, 8, 4] and "y_output" in signature["outputs"]


def test_the_status_of_a_model_lists_its_newest_versions_up_to_a_limit(url, registry):
    def versions(path: str, **params) -> list[str]:
        status = requests.get(f"{url}{path}", params=params, timeout=10)
        assert status.status_code == 200, status.text
        return [s["version"] for s in status.json()["model_version_status"]]

    with ready_copies(registry, DIGITS, f"{DIGITS}-many", 3) as many:
        assert versions(f"/v1/models/{many}", limit=2) == ["3", "2"]
        assert versions(f"/v1/models/{many}") == ["3", "2", "1"]  # the default: 100
        assert versions(f"/v1/models/{many}/versions/1") == ["1"]
        assert requests.get(f"{url}/v1/models/{many}/versions/4", timeout=10).status_code == 404
        refused = requests.get(f"{url}/v1/models/{many}", params={"limit": 501}, timeout=10)
        # The path is OpenAI's route too, whose error shape it answers.
        assert refused.status_code == 400 and refused.json()["error"]["param"] == "query.limit"


def test_a_label_names_the_version_its_alias_points_at(url, registry):
    registry.set_alias(DIGITS, "canary", 1)  # any alias of the registry is a label
    x = examples(3, seed=5).tolist()
    by_version = requests.post(f"{url}/v1/models/{DIGITS}/versions/1:predict", timeout=30,
                               json={"instances": x}).json()
    for label in ("production", "canary"):
        base = f"{url}/v1/models/{DIGITS}/labels/{label}"
        predicted = requests.post(f"{base}:predict", json={"instances": x}, timeout=30)
        assert predicted.status_code == 200, predicted.text
        assert predicted.json() == by_version
        status = requests.get(base, timeout=10).json()["model_version_status"]
        assert [(s["version"], s["state"]) for s in status] == [("1", "AVAILABLE")]
        spec = requests.get(f"{base}/metadata", timeout=10).json()["model_spec"]
        assert spec["version"] == "1"


@pytest.mark.parametrize("method, suffix", [("get", ""), ("get", "/metadata"),
                                            ("post", ":predict")])
def test_an_unknown_label_is_not_found(url, method, suffix):
    response = requests.request(method, f"{url}/v1/models/{DIGITS}/labels/stable{suffix}",
                                json={"instances": [[0.0] * 32]}, timeout=30)
    assert response.status_code == 404
    assert response.json() == {"error": "Unrecognized servable version label: stable"}


@pytest.mark.parametrize("path, body, status", [
    ("/v1/models/no-such-model:predict", {"instances": [[0.0] * 32]}, 404),
    (f"/v1/models/{DIGITS}/versions/9:predict", {"instances": [[0.0] * 32]}, 404),
    (f"/v1/models/{DIGITS}:predict", {"instances": [[0.0] * 31]}, 400),
    (f"/v1/models/{DIGITS}:predict", {"instances": [[0.0] * 32], "inputs": [[0.0] * 32]}, 400),
    (f"/v1/models/{DIGITS}:predict", {"signature_name": "other", "instances": [[0.0] * 32]},
     400),
    (f"/v1/models/{DIGITS}:predict", {"instances": [{"pixels": [0.0] * 32}]}, 400),
    (f"/v1/models/{DIGITS}/versions/one:predict", {"instances": [[0.0] * 32]}, 400),
    (f"/v1/models/{DIGITS}/labels/a%00b:predict", {"instances": [[0.0] * 32]}, 400),
    (f"/v1/models/{DIGITS}/labels/{'x' * 33}:predict", {"instances": [[0.0] * 32]}, 400),
])
def test_errors_as_tf_serving_writes_them(url, path, body, status):
    response = requests.post(f"{url}{path}", json=body, timeout=30)
    assert response.status_code == status
    assert set(response.json()) == {"error"} and isinstance(response.json()["error"], str)

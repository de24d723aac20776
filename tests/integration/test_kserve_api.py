"""KServe / Open Inference Protocol v2 for the classifier against the real app, driven by the
Triton HTTP client (`tritonclient[http]`): binary tensors (its default) and JSON ones."""

from __future__ import annotations

from urllib.parse import urlparse

import numpy as np
import pytest
import requests

from tests.integration.protocol_models import CLASSES, examples, ready_classifier, ready_copies

pytestmark = pytest.mark.integration

DIGITS = "kserve-digits"


@pytest.fixture(scope="module")
def url(serve_app):
    ready_classifier(serve_app, DIGITS)
    return serve_app


@pytest.fixture(scope="module")
def client(url):
    import tritonclient.http as httpclient

    return httpclient.InferenceServerClient(url=urlparse(url).netloc)


def native_predictions(url: str, x: np.ndarray) -> np.ndarray:
    response = requests.post(f"{url}/models/{DIGITS}/predict", json={"data": x.tolist()},
                             timeout=30)
    assert response.status_code == 200, response.text
    return np.array(response.json()["y"])


def test_health_and_model_metadata(client):
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(DIGITS) and client.is_model_ready(DIGITS, "1")
    assert not client.is_model_ready("no-such-model")
    assert not client.is_model_ready(DIGITS, "7")
    metadata = client.get_model_metadata(DIGITS)
    assert metadata["name"] == DIGITS and metadata["versions"] == ["1"]
    assert metadata["inputs"] == [{"name": "x_input", "datatype": "FP32", "shape": [-1, 8, 4]}]
    assert metadata["outputs"] == [{"name": "y_output", "datatype": "FP32",
                                    "shape": [-1, CLASSES]}]
    assert client.get_model_metadata(DIGITS, "1")["name"] == DIGITS


def test_metadata_lists_the_newest_ready_versions_up_to_a_limit(client, url, registry):
    with ready_copies(registry, DIGITS, f"{DIGITS}-many", 3) as many:
        bounded = requests.get(f"{url}/v2/models/{many}", params={"limit": 2}, timeout=10)
        assert bounded.status_code == 200, bounded.text
        assert bounded.json()["versions"] == ["2", "3"]
        assert client.get_model_metadata(many)["versions"] == ["1", "2", "3"]
        assert client.get_model_metadata(many, "1")["versions"] == ["1", "2", "3"]
        refused = requests.get(f"{url}/v2/models/{many}", params={"limit": 0}, timeout=10)
        assert refused.status_code == 400 and "limit" in refused.json()["error"]


@pytest.mark.parametrize("binary", [True, False], ids=["binary-tensors", "json-tensors"])
def test_infer_answers_the_native_predictions(client, url, binary):
    import tritonclient.http as httpclient

    x = examples(6, seed=3)
    tensor = httpclient.InferInput("x_input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=binary)
    outputs = None if binary else [httpclient.InferRequestedOutput("y_output", binary_data=False)]
    result = client.infer(DIGITS, [tensor], outputs=outputs, model_version="1")
    y = result.as_numpy("y_output")
    assert y.shape == (6, CLASSES) and y.dtype == np.float32
    np.testing.assert_allclose(y, native_predictions(url, x), atol=1e-5)
    response = result.get_response()
    assert response["model_name"] == DIGITS and response["model_version"] == "1"


def test_errors_raise_the_clients_exception(client):
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    wrong_shape = httpclient.InferInput("x_input", [1, 4, 8], "FP32")
    wrong_shape.set_data_from_numpy(np.zeros((1, 4, 8), np.float32))
    with pytest.raises(InferenceServerException, match="shape must be"):
        client.infer(DIGITS, [wrong_shape])
    missing = httpclient.InferInput("x_input", [1, 8, 4], "FP32")
    missing.set_data_from_numpy(np.zeros((1, 8, 4), np.float32))
    with pytest.raises(InferenceServerException, match="not found"):
        client.infer("no-such-model", [missing])
    with pytest.raises(InferenceServerException):
        client.get_model_metadata("no-such-model")

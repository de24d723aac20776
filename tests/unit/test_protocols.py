"""The protocols' translations (deployments/protocols/), without Ray: requests into the
engine's SampleConfig or a batch, answers and errors into each client's shape."""

import json

import numpy as np
import pytest

from deployments.errors import ApiError, error_body
from deployments.limits import Limits
from deployments.protocols import kserve, openai, tfserving
from models.config import SampleConfig

# ---- OpenAI --------------------------------------------------------------------------------


def test_model_names_and_versions():
    assert openai.parse_model("bard") == ("bard", None)
    assert openai.parse_model("bard:3") == ("bard", 3)
    for bad in ("bard:", "bard:x", "bard:0", ":"):
        with pytest.raises(ApiError) as error:
            openai.parse_model(bad)
        assert error.value.status == 404


def test_samples_count_the_seed_up_per_prompt_and_temperature_0_is_greedy():
    request = openai.CompletionRequest(model="m", prompt=["a", "b"], n=2, seed=10, stop="\n",
                                       max_tokens=7, temperature=0, top_k=-1, logprobs=2)
    samples = openai.samples_of(request)
    assert [(s.prime, s.seed) for s in samples] == [("a", 10), ("a", 11), ("b", 10), ("b", 11)]
    assert all(s.top_k == 1 and s.temperature == 1.0 and s.stop == ("\n",) and s.logprobs == 2
               and s.max_length == 7 for s in samples)
    plain = openai.samples_of(openai.CompletionRequest(model="m", top_k=-1))[0]
    assert plain.top_k == 0 and plain.seed is None and plain.stop == ()


@pytest.mark.parametrize("fields", [
    {"prompt": ["a"] * 17}, {"prompt": []}, {"n": 17}, {"prompt": ["a", "b"], "n": 9},
    {"stop": ["a"] * 5}, {"stop": ""}, {"stop": "x" * 65}, {"best_of": 2}, {"suffix": "x"},
    {"presence_penalty": 0.5}, {"unknown": 1},
])
def test_requests_the_engine_cannot_honour_are_refused(fields):
    with pytest.raises(ValueError):
        openai.CompletionRequest(model="m", **fields)


def test_errors_in_openai_shape_on_its_paths_only():
    status, body = error_body("/v1/completions", 422, "invalid request",
                              [{"loc": ["body", "temperature"], "msg": "too low"}])
    assert status == 400 and body["error"]["param"] == "temperature"
    assert body["error"]["type"] == "invalid_request_error"
    status, body = error_body("/v1/models/bard:2", 404, "no such model")
    assert status == 404 and body["error"]["code"] == "model_not_found"
    assert error_body("/v1/completions", 429, "slow down")[1]["error"]["type"] == \
        "rate_limit_exceeded"
    assert error_body("/v1/models/d:predict", 404, "x") == (404, {"error": "x"})
    for path in ("/v1/models/d/labels/production:predict", "/v1/models/d/labels/canary",
                 "/v1/models/d/labels/canary/metadata", "/v1/models/d/versions/2"):
        assert error_body(path, 404, "x") == (404, {"error": "x"}), path
    assert error_body("/v1/models/d/versions/one", 422, "x",
                      [{"loc": ["path", "version"], "msg": "not an integer"}]) == \
        (400, {"error": "version: not an integer"})
    assert error_body("/v2/models/d/infer", 422, "x") == (400, {"error": "x"})
    assert error_body("/models/d/generate", 422, "x") == (422, {"error": "x", "detail": None})


def test_a_limit_names_the_field_the_openai_client_sent():
    limits = Limits(max_prime_chars=5, max_length=100)
    for sample, field in ((SampleConfig(prime="x" * 6), "prompt"),
                          (SampleConfig(max_length=101), "max_tokens")):
        with pytest.raises(ApiError) as error:
            limits.check_sample(sample, openai.REQUEST_FIELDS)
        status, body = error_body("/v1/completions", error.value.status, error.value.error,
                                  error.value.detail)
        assert status == 400 and body["error"]["param"] == field
        assert body["error"]["message"].startswith(f"{field} ")
    with pytest.raises(ApiError) as native:  # the native route keeps its own names
        limits.check_sample(SampleConfig(max_length=101))
    assert native.value.error == "max_length must be <= 100"
    assert native.value.detail == {"field": "max_length"}


def _events(text: str) -> list:
    return [json.loads(line[6:]) for line in text.split("\n\n") if line.startswith("data: {")]


def test_a_stream_echoes_then_delivers_then_finishes_with_usage_and_done():
    request = openai.CompletionRequest(model="m", prompt="Hi", n=2, echo=True, logprobs=1,
                                       stream=True, stream_options={"include_usage": True})
    stream = openai.CompletionStream(openai.Completion(request, "m:1"))
    entry = (-0.5, (("a", -0.5),))
    out = stream.on_event({"index": 1, "text": "ab", "logprobs": [entry, entry]})
    out += stream.on_event({"index": 1, "finish_reason": "stop"})
    out += stream.on_event({"index": 0, "finish_reason": "deadline"})
    out += stream.end()
    assert out.endswith("data: [DONE]\n\n")
    chunks = _events(out)
    assert [(c["choices"][0]["index"], c["choices"][0]["text"]) for c in chunks[:-1]] == [
        (1, "Hi"), (1, "ab"), (1, ""), (0, "Hi"), (0, "")]
    assert chunks[1]["choices"][0]["logprobs"]["text_offset"] == [2, 3]
    assert [c["choices"][0]["finish_reason"] for c in chunks[:-1]] == [
        None, None, "stop", None, "length"]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 2
    assert len({c["id"] for c in chunks}) == 1
    assert _events(stream.error(500, "boom"))[0]["error"]["message"] == "boom"


# ---- TF Serving ----------------------------------------------------------------------------

X = np.arange(12, dtype=np.float32).reshape(2, 2, 3)


@pytest.mark.parametrize("body, rows", [
    ({"instances": X.tolist()}, True),
    ({"instances": [{"x_input": e} for e in X.tolist()], "signature_name": "serving_default"},
     True),
    ({"inputs": X.tolist()}, False),
    ({"inputs": {"x_input": X.tolist()}}, False),
])
def test_tf_serving_row_and_columnar_bodies(body, rows):
    x, is_rows = tfserving.predict_input(body, 2, 3, 10)
    assert is_rows == rows and x.dtype == np.float32
    np.testing.assert_array_equal(x, X)
    assert list(tfserving.predict_output([[0.5, 0.5]], rows)) == [
        "predictions" if rows else "outputs"]


@pytest.mark.parametrize("body", [
    {"instances": X.tolist(), "inputs": X.tolist()}, {}, [], {"instances": []},
    {"instances": X.tolist(), "signature_name": "other"}, {"instances": [[1, 2]]},
    {"instances": [{"pixels": X[0].tolist()}]}, {"instances": X.tolist() * 6},
    {"instances": X.tolist(), "extra": 1},
])
def test_tf_serving_bad_bodies_are_400(body):
    with pytest.raises(ApiError) as error:
        tfserving.predict_input(body, 2, 3, 10)
    assert error.value.status == 400


def test_tf_serving_status_of_every_version_or_one():
    detail = {"name": "d", "versions": [{"version": 1, "status": "ready"},
                                        {"version": 2, "status": "failed"}]}
    states = tfserving.model_status(detail, None)["model_version_status"]
    assert [(s["version"], s["state"]) for s in states] == [("2", "END"), ("1", "AVAILABLE")]
    assert tfserving.model_status(detail, 1)["model_version_status"][0]["state"] == "AVAILABLE"
    with pytest.raises(ApiError):
        tfserving.model_status(detail, 3)


# ---- KServe --------------------------------------------------------------------------------

class Record:
    name, version, params = "d", 1, {"timesteps": 2, "features": 3, "classes": 2}


def test_kserve_binary_tensors_in_and_out():
    header = json.dumps({"inputs": [{"name": "x_input", "shape": [2, 2, 3], "datatype": "FP32",
                                     "parameters": {"binary_data_size": X.nbytes}}],
                         "parameters": {"binary_data_output": True}}).encode()
    request, binary = kserve.split_body(header + X.tobytes(), str(len(header)))
    np.testing.assert_array_equal(kserve.infer_input(request, binary, 2, 3, 10), X)
    body, headers = kserve.encode(*kserve.infer_output(request, Record, [[0.25, 0.75]] * 2))
    length = int(headers["Inference-Header-Content-Length"])
    answer = json.loads(body[:length])
    assert answer["outputs"][0]["parameters"]["binary_data_size"] == 16
    np.testing.assert_array_equal(np.frombuffer(body[length:], "<f4"), [0.25, 0.75] * 2)


def test_kserve_json_tensors_flat_or_nested():
    for data in (X.ravel().tolist(), X.tolist()):
        request = {"inputs": [{"name": "x_input", "shape": [2, 2, 3], "datatype": "FP32",
                               "data": data}]}
        np.testing.assert_array_equal(kserve.infer_input(request, b"", 2, 3, 10), X)
        answer, binary = kserve.infer_output(request, Record, [[0.25, 0.75]] * 2)
        assert binary == b"" and answer["outputs"][0]["data"] == [0.25, 0.75] * 2


@pytest.mark.parametrize("tensor", [
    {"name": "x", "shape": [1, 2, 3], "datatype": "FP32", "data": [0] * 6},
    {"name": "x_input", "shape": [1, 3, 2], "datatype": "FP32", "data": [0] * 6},
    {"name": "x_input", "shape": [1.5, 2, 3], "datatype": "FP32", "data": [0] * 6},
    {"name": "x_input", "shape": [11, 2, 3], "datatype": "FP32", "data": [0] * 66},
    {"name": "x_input", "shape": [1, 2, 3], "datatype": "BYTES", "data": [0] * 6},
    {"name": "x_input", "shape": [1, 2, 3], "datatype": "FP32", "data": [0] * 5},
    {"name": "x_input", "shape": [1, 2, 3], "datatype": "FP32", "data": ["a"] * 6},
    {"name": "x_input", "shape": [1, 2, 3], "datatype": "FP32",
     "parameters": {"binary_data_size": 4}},
])
def test_kserve_bad_tensors_are_400(tensor):
    with pytest.raises(ApiError) as error:
        kserve.infer_input({"inputs": [tensor]}, b"", 2, 3, 10)
    assert error.value.status == 400

"""TensorFlow Serving's REST API for the classifiers: predict bodies in the row
(`instances`) and columnar (`inputs`) formats, the answers, model status, and errors as
TF Serving writes them (`{"error": "..."}`). The signature is the exported SavedModel's
(`serving_default`: `x_input` [N, timesteps, features] -> `y_output` [N, classes]), so a
TF Serving client works unchanged against either server.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from deployments.errors import ApiError, message_only_shape, register_error_shape
from deployments.predict_input import as_example, checked_batch, parse_json_body
from models.classifier import SERVING_INPUT, SERVING_OUTPUT

SIGNATURE = "serving_default"
MAX_DEPTH = 5  # {"instances": [{"x_input": [row [number]]}]}
_STATES = {"queued": "START", "training": "LOADING", "ready": "AVAILABLE"}


class PredictRequest(BaseModel):
    """TF Serving's predict body, for the docs (the route reads it raw: every number is
    checked finite and within float64 first)."""

    signature_name: str = Field(SIGNATURE, description="the only signature")
    instances: list[Any] | None = Field(None, description="row format: per example, its "
                                        f"[timesteps][features] numbers or {{{SERVING_INPUT}: "
                                        "...}}; answered as predictions")
    inputs: Any = Field(None, description=f"columnar format: the batch, or {{{SERVING_INPUT}: "
                        "batch}}; answered as outputs")


def predict_input(body, timesteps: int, features: int, max_rows: int) -> tuple[np.ndarray, bool]:
    """(float32 [N, T, F], whether the body was in the row format); ApiError(400) otherwise.
    An instance (or the columnar tensor) is the value itself or `{"x_input": value}`."""
    if not isinstance(body, dict) or ("instances" in body) == ("inputs" in body):
        raise ApiError(400, 'expected a JSON object with either "instances" or "inputs"')
    unknown = set(body) - {"signature_name", "instances", "inputs"}
    if unknown:
        raise ApiError(400, f"unknown field(s): {', '.join(sorted(unknown))}")
    signature = body.get("signature_name", SIGNATURE)
    if signature != SIGNATURE:
        raise ApiError(400, f'Serving signature name: "{signature}" not found in signature def')
    rows = "instances" in body
    examples = body["instances"] if rows else _unnamed(body["inputs"])
    if not isinstance(examples, list) or not examples:
        raise ApiError(400, "expected a non-empty list of examples")
    if len(examples) > max_rows:
        raise ApiError(400, f"at most {max_rows} examples per request, got {len(examples)}")
    batch = []
    for index, example in enumerate(examples):
        value = as_example(_unnamed(example) if rows else example, timesteps, features)
        if value is None:
            raise ApiError(400, f"instance {index} is not a {timesteps}x{features} list of "
                                f"numbers ({SERVING_INPUT}: [-1, {timesteps}, {features}])")
        batch.append(value)
    try:
        return checked_batch(np.stack(batch)), rows
    except ValueError as error:
        raise ApiError(400, str(error)) from None


def read_predict(raw: bytes, timesteps: int, features: int,
                 max_rows: int) -> tuple[np.ndarray, bool]:
    """`predict_input` of a raw body, its numbers checked finite first."""
    try:
        body = parse_json_body(raw, MAX_DEPTH)
    except ValueError as error:
        raise ApiError(400, str(error)) from None
    return predict_input(body, timesteps, features, max_rows)


def unknown_label(label: str) -> ApiError:
    return ApiError(404, f"Unrecognized servable version label: {label}")


def _unnamed(value):
    """The tensor of `{"x_input": tensor}`, or the value itself when it is not named."""
    if isinstance(value, dict):
        if set(value) != {SERVING_INPUT}:
            raise ApiError(400, f"the only input is {SERVING_INPUT!r}, got {sorted(value)}")
        return value[SERVING_INPUT]
    return value


def predict_output(probabilities: list[list[float]], rows: bool) -> dict:
    """One output (`y_output`): TF Serving answers it unnamed in either format."""
    return {"predictions": probabilities} if rows else {"outputs": probabilities}


def status_page(registry, name: str, version: int | None, limit: int) -> dict:
    """What model_status reads, in one registry query: the model's page of its one version
    asked for, or of its `limit` newest (TF Serving lists every version; this lists a page)."""
    if version is None:
        return registry.get_model(name, limit=limit, newest_first=True)
    return registry.get_model(name, limit=1, after=version - 1)


def model_status(detail: dict, version: int | None) -> dict:
    """`model_version_status` of the versions of the model (`detail`: its status_page), or of
    one; ready versions are AVAILABLE."""
    versions = [v for v in detail["versions"] if version is None or v["version"] == version]
    if not versions:
        raise ApiError(404, f"Could not find version {version} of model {detail['name']}")
    return {"model_version_status": [
        {"version": str(v["version"]), "state": _STATES.get(v["status"], "END"),
         "status": {"error_code": "OK" if v["status"] in _STATES else "UNKNOWN",
                    "error_message": "" if v["status"] in _STATES else v["status"]}}
        for v in sorted(versions, key=lambda v: -v["version"])]}


def model_metadata(record) -> dict:
    """The `serving_default` signature of a version, as TF Serving's `/metadata` answers it."""
    params = record.params

    def tensor(name: str, dims: list[int]) -> dict:
        return {"dtype": "DT_FLOAT", "name": f"serving_default_{name}:0",
                "tensor_shape": {"dim": [{"size": str(d), "name": ""} for d in dims],
                                 "unknown_rank": False}}

    signature = {"inputs": {SERVING_INPUT: tensor(SERVING_INPUT, [-1, int(params["timesteps"]),
                                                                  int(params["features"])])},
                 "outputs": {SERVING_OUTPUT: tensor(SERVING_OUTPUT, [-1, int(params["classes"])])},
                 "method_name": "tensorflow/serving/predict"}
    return {"model_spec": {"name": record.name, "signature_name": "",
                           "version": str(record.version)},
            "metadata": {"signature_def": {"signature_def": {SIGNATURE: signature}}}}


# ---- errors --------------------------------------------------------------------------------

# A version is named by number (/versions/N) or by label (/labels/L), or not at all.
_OWNED = re.compile(r"/v1/models/[^/]+(/(versions|labels)/[^/]+)?(:predict|/metadata)|"
                    r"/v1/models/[^/]+/(versions|labels)/[^/:]+")

register_error_shape(lambda path: _OWNED.fullmatch(path) is not None, message_only_shape)

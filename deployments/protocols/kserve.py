"""KServe's Open Inference Protocol (v2) for the classifiers: model metadata, infer requests
and answers, with the binary tensor extension the Triton/KServe clients use by default (a JSON
header of `Inference-Header-Content-Length` bytes, then each tensor's raw little-endian bytes),
and errors as `{"error": "..."}`.

The model's tensors are the SavedModel signature's: `x_input` [N, timesteps, features] ->
`y_output` [N, classes] (class probabilities).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from deployments.errors import ApiError, message_only_shape, register_error_shape
from deployments.predict_input import checked_batch, parse_json_body
from models.classifier import SERVING_INPUT, SERVING_OUTPUT

MAX_DEPTH = 6  # {"inputs": [{"data": [example [row [number]]]}]}
HEADER_LENGTH = "inference-header-content-length"
# Datatypes an input may have (the model computes in FP32), and their NumPy types.
DATATYPES = {"FP32": np.float32, "FP64": np.float64, "UINT8": np.uint8, "INT32": np.int32,
             "INT64": np.int64}


class InferTensor(BaseModel):
    name: str = Field(..., description=SERVING_INPUT)
    shape: list[int] = Field(..., description="[N, timesteps, features]")
    datatype: str = Field(..., description=", ".join(DATATYPES))
    data: list[Any] | None = Field(None, description="the values, flat or nested row-major "
                                   "(or none: binary data after the JSON header)")
    parameters: dict[str, Any] | None = Field(None, description="binary_data_size")


class RequestedOutput(BaseModel):
    name: str = Field(..., description=SERVING_OUTPUT)
    parameters: dict[str, Any] | None = Field(None, description="binary_data: true")


class InferRequest(BaseModel):
    """An infer request, for the docs (the route reads the body raw: it may carry binary
    tensors after its JSON, and every number is checked finite first)."""

    id: str | None = None
    inputs: list[InferTensor]
    outputs: list[RequestedOutput] | None = None
    parameters: dict[str, Any] | None = Field(None, description="binary_data_output: true")


def model_metadata(record, versions: list[int]) -> dict:
    params = record.params
    return {"name": record.name, "versions": [str(v) for v in versions],
            "platform": "tensorflow_savedmodel",
            "inputs": [{"name": SERVING_INPUT, "datatype": "FP32",
                        "shape": [-1, int(params["timesteps"]), int(params["features"])]}],
            "outputs": [{"name": SERVING_OUTPUT, "datatype": "FP32",
                         "shape": [-1, int(params["classes"])]}]}


def split_body(raw: bytes, header_length: str | None) -> tuple[dict, bytes]:
    """(the JSON request, the binary tensor data after it)."""
    if header_length is None:
        json_part, binary = raw, b""
    elif header_length.isdigit() and int(header_length) <= len(raw):
        json_part, binary = raw[:int(header_length)], raw[int(header_length):]
    else:
        raise ApiError(400, f"{HEADER_LENGTH} must be the JSON header's length in bytes")
    try:
        request = parse_json_body(json_part, MAX_DEPTH)
    except ValueError as error:
        raise ApiError(400, str(error)) from None
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list):
        raise ApiError(400, 'expected a JSON object with a list of "inputs"')
    return request, binary


def read_infer(raw: bytes, header_length: str | None, timesteps: int, features: int,
               max_rows: int) -> tuple[np.ndarray, dict]:
    """(the `x_input` batch, the JSON request) of a raw infer body."""
    request, binary = split_body(raw, header_length)
    return infer_input(request, binary, timesteps, features, max_rows), request


def infer_input(request: dict, binary: bytes, timesteps: int, features: int,
                max_rows: int) -> np.ndarray:
    """The `x_input` tensor of an infer request as float32 [N, T, F]; ApiError(400) otherwise."""
    tensors = request["inputs"]
    if len(tensors) != 1 or not isinstance(tensors[0], dict) \
            or tensors[0].get("name") != SERVING_INPUT:
        raise ApiError(400, f"expected one input named {SERVING_INPUT!r}")
    tensor = tensors[0]
    datatype, shape = tensor.get("datatype"), tensor.get("shape")
    if datatype not in DATATYPES:
        raise ApiError(400, f"datatype must be one of {', '.join(DATATYPES)}, got {datatype!r}")
    whole = isinstance(shape, list) and all(
        isinstance(d, (int, float)) and not isinstance(d, bool) and float(d).is_integer()
        for d in shape)  # every JSON number arrives as a float (parse_json_body)
    if (not whole or len(shape) != 3 or shape[1:] != [timesteps, features]
            or not 1 <= shape[0] <= max_rows):
        raise ApiError(400, f"shape must be [N, {timesteps}, {features}] with 1 <= N <= "
                            f"{max_rows}, got {shape!r}")
    shape = [int(d) for d in shape]
    size = shape[0] * timesteps * features
    values = _binary(tensor, binary, datatype, size) if _is_binary(tensor) else \
        _json_values(tensor.get("data"), size)
    try:
        return checked_batch(values.reshape(shape))
    except ValueError as error:
        raise ApiError(400, str(error)) from None


def _is_binary(tensor: dict) -> bool:
    parameters = tensor.get("parameters")
    return isinstance(parameters, dict) and "binary_data_size" in parameters


def _binary(tensor: dict, binary: bytes, datatype: str, size: int) -> np.ndarray:
    dtype = np.dtype(DATATYPES[datatype]).newbyteorder("<")
    declared = tensor["parameters"]["binary_data_size"]
    if declared != size * dtype.itemsize or len(binary) != declared:
        raise ApiError(400, f"binary data of {size} {datatype} values must be "
                            f"{size * dtype.itemsize} bytes")
    return np.frombuffer(binary, dtype=dtype).astype(np.float64)


def _json_values(data, size: int) -> np.ndarray:
    """`data` flat or nested (row-major), all numbers."""
    try:
        values = np.asarray(data, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        raise ApiError(400, "data must be numbers, flat or nested row-major") from None
    if values.size != size:
        raise ApiError(400, f"data holds {values.size} values; the shape needs {size}")
    return values


def infer_output(request: dict, record, probabilities: list[list[float]]) -> tuple[dict, bytes]:
    """(the JSON answer, binary data after it or b""): `y_output` as FP32, in binary when the
    request asked for binary outputs (as the Triton client does by default)."""
    y = np.asarray(probabilities, dtype="<f4")
    output = {"name": SERVING_OUTPUT, "datatype": "FP32", "shape": list(y.shape)}
    if _wants_binary(request):
        output["parameters"] = {"binary_data_size": y.nbytes}
        binary = y.tobytes()
    else:
        output["data"], binary = y.ravel().tolist(), b""
    answer = {"model_name": record.name, "model_version": str(record.version),
              "outputs": [output]}
    if isinstance(request.get("id"), str):
        answer["id"] = request["id"]
    return answer, binary


def _wants_binary(request: dict) -> bool:
    requested = request.get("outputs")
    if isinstance(requested, list) and requested:
        for output in requested:
            if not isinstance(output, dict) or output.get("name") != SERVING_OUTPUT:
                raise ApiError(400, f"the only output is {SERVING_OUTPUT!r}")
        parameters = requested[0].get("parameters")
        return isinstance(parameters, dict) and parameters.get("binary_data") is True
    parameters = request.get("parameters")
    return isinstance(parameters, dict) and parameters.get("binary_data_output") is True


def encode(answer: dict, binary: bytes) -> tuple[bytes, dict]:
    """The response body and its headers (binary data after a JSON header)."""
    header = json.dumps(answer).encode()
    if not binary:
        return header, {"content-type": "application/json"}
    return header + binary, {"content-type": "application/octet-stream",
                             "Inference-Header-Content-Length": str(len(header))}


register_error_shape(lambda path: path == "/v2" or path.startswith("/v2/"), message_only_shape)

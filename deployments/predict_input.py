"""Parsing `POST /models/{name}/predict` bodies into a batch for the classifier.

Accepted: `{"data": x}` where x is one example (a flat list of T*F numbers or a T x F nested
list) or a list of examples, and a bare JSON array of T*F numbers (as the reference MNIST
server's clients send).

The raw body is parsed here too (`parse_json_body`), so a number float64 cannot hold, a
non-finite constant or deep nesting is a ValueError (400) rather than an exception of the
JSON decoder or of NumPy's conversion.
"""

from __future__ import annotations

import json
import math
from numbers import Real

import numpy as np

MAX_DEPTH = 4  # {"data": [example [row [number]]]}


class _NotFinite(ValueError):
    pass


def _finite(text: str) -> float:
    value = float(text)  # integers too: any JSON number the model sees is a float64
    if not math.isfinite(value):
        raise _NotFinite
    return value


def _no_constants(name: str):
    raise _NotFinite


def parse_json_body(raw: bytes, max_depth: int = MAX_DEPTH):
    """The request body as JSON with every number a finite float64, nested at most
    `max_depth` levels; ValueError otherwise."""
    try:
        body = json.loads(raw, parse_int=_finite, parse_float=_finite,
                          parse_constant=_no_constants)
    except _NotFinite:
        raise ValueError("numbers must be finite and within float64's range") from None
    except RecursionError:
        raise ValueError(f"the body is nested too deeply (at most {max_depth} levels)") from None
    except ValueError as error:  # JSONDecodeError, UnicodeDecodeError
        raise ValueError(f"the body is not valid JSON: {error}") from None
    stack = [(body, 1)] if isinstance(body, (list, dict)) else []
    while stack:  # iteratively: the depth is what is being checked
        value, depth = stack.pop()
        children = value.values() if isinstance(value, dict) else value
        nested = [child for child in children if isinstance(child, (list, dict))]
        if nested and depth >= max_depth:
            raise ValueError(f"the body is nested too deeply (at most {max_depth} levels)")
        stack.extend((child, depth + 1) for child in nested)
    return body


def _is_number(value) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def as_example(value, timesteps: int, features: int) -> np.ndarray | None:
    """One example as [T, F], or None when `value` is not shaped like one."""
    if not isinstance(value, list):
        return None
    if len(value) == timesteps * features and all(_is_number(v) for v in value):
        return np.asarray(value, dtype=np.float64).reshape(timesteps, features)
    if (len(value) == timesteps and all(isinstance(row, list) and len(row) == features
                                        and all(_is_number(v) for v in row) for row in value)):
        return np.asarray(value, dtype=np.float64)
    return None


def parse_predict_body(body, timesteps: int, features: int,
                       max_rows: int) -> tuple[np.ndarray, bool]:
    """(float32 [N, T, F], whether the request was a batch); ValueError says what is wrong."""
    data = body.get("data") if isinstance(body, dict) else body
    if isinstance(body, dict) and set(body) != {"data"}:
        raise ValueError('expected {"data": [...]} (one example or a list of examples)')
    if not isinstance(data, list) or not data:
        raise ValueError("data must be a non-empty list")
    if not any(isinstance(item, list) for item in data):  # meant as one flat example
        if not all(_is_number(v) for v in data):
            raise ValueError("data holds values that are not numbers")
        if len(data) != timesteps * features:
            raise ValueError(f"one flat example needs {timesteps * features} numbers, "
                             f"got {len(data)}")
    rows_of_numbers = all(isinstance(item, list) and all(_is_number(v) for v in item)
                          for item in data)
    if rows_of_numbers and len(data) == timesteps and any(len(r) != features for r in data):
        raise ValueError(f"one nested example needs {timesteps} rows of {features} numbers")
    single = as_example(data, timesteps, features)
    if single is not None:
        examples, batched = [single], False
    else:
        if len(data) > max_rows:
            raise ValueError(f"at most {max_rows} examples per request, got {len(data)}")
        examples = [as_example(item, timesteps, features) for item in data]
        bad = next((i for i, e in enumerate(examples) if e is None), None)
        if bad is not None:
            raise ValueError(f"example {bad} is not {timesteps * features} numbers or a "
                             f"{timesteps}x{features} nested list of numbers")
        batched = True
    return checked_batch(np.stack(examples)), batched


def checked_batch(x: np.ndarray) -> np.ndarray:
    """A batch [N, T, F] of finite values within +-1e6, as float32 (the model scales its
    inputs itself); ValueError otherwise."""
    if not np.all(np.isfinite(x)):
        raise ValueError("data holds NaN or infinite values")
    if x.size and np.abs(x).max() > 1e6:
        raise ValueError("data values must be within [-1e6, 1e6]")
    return x.astype(np.float32)



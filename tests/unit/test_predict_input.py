"""Every accepted and rejected shape of a predict body (no Ray)."""

import numpy as np
import pytest

from deployments.predict_input import parse_json_body, parse_predict_body

FLAT = [0.5] * 784
NESTED = [[0.5] * 28 for _ in range(28)]


@pytest.mark.parametrize("body, rows, batched", [
    ({"data": FLAT}, 1, False),
    ({"data": NESTED}, 1, False),
    ({"data": [FLAT, NESTED, FLAT]}, 3, True),
    ({"data": [FLAT]}, 1, True),
    (FLAT, 1, False),  # a bare JSON array of 784 numbers
])
def test_accepted_shapes(body, rows, batched):
    x, is_batch = parse_predict_body(body, 28, 28, max_rows=8)
    assert x.shape == (rows, 28, 28) and x.dtype == np.float32 and is_batch == batched


def test_values_reach_the_model_as_sent_whatever_shares_the_request():
    """The model scales its own inputs: parsing never rescales, so one example is the same
    alone and beside rows with larger values."""
    alone, _ = parse_predict_body({"data": [0.5] * 784}, 28, 28, 8)
    beside, _ = parse_predict_body({"data": [[0.5] * 784, [255] * 784]}, 28, 28, 8)
    assert alone.max() == 0.5 and np.array_equal(alone[0], beside[0])


@pytest.mark.parametrize("body, message", [
    ({"data": [0.5] * 783}, "needs 784 numbers, got 783"),
    ({"data": [[0.5] * 27] * 28}, "28 rows of 28 numbers"),
    ({"data": ["a"] * 784}, "not numbers"),
    ({"data": [True] * 784}, "not numbers"),
    ({"data": [float("nan")] * 784}, "NaN"),
    ({"data": [1e9] * 784}, "within"),
    ({"data": []}, "non-empty"),
    ({"data": "pixels"}, "non-empty"),
    ({"data": FLAT, "extra": 1}, "expected"),
    ({"x": FLAT}, "expected"),
    ({"data": [FLAT] * 9}, "at most 8"),
    ({"data": [FLAT, [0.1] * 10]}, "example 1"),
    ("784 numbers", "non-empty"),
    (None, "non-empty"),
])
def test_rejected_shapes(body, message):
    with pytest.raises(ValueError, match=message):
        parse_predict_body(body, 28, 28, max_rows=8)


# ---- the raw body: numbers float64 cannot hold, non-finite values, deep nesting -----------

def _flat(numbers: str) -> bytes:
    return ('{"data": [' + ",".join([numbers] + ["0.5"] * 783) + "]}").encode()


@pytest.mark.parametrize("raw, message", [
    (_flat("1" + "0" * 400), "finite"),  # an integer too large for float64
    (_flat("1e400"), "finite"),  # a float that overflows to infinity
    (_flat("-1e400"), "finite"),
    (_flat("NaN"), "finite"),
    (_flat("Infinity"), "finite"),
    (_flat("9" * 5000), "finite"),  # past Python's int-string limit
    (b"[" * 100_000 + b"]" * 100_000, "nested"),
    (b'{"data": ' + b"[" * 50 + b"0.5" + b"]" * 50 + b"}", "nested"),
    (b"{not json", "not valid JSON"),
    (b"", "not valid JSON"),
    (b"\xff\xfe", "not valid JSON"),
    (b"5", "non-empty"),
])
def test_rejected_raw_bodies(raw, message):
    with pytest.raises(ValueError, match=message):
        body = parse_json_body(raw)
        parse_predict_body(body, 28, 28, max_rows=8)


def test_raw_body_parses_like_json():
    x, _ = parse_predict_body(parse_json_body(_flat("7")), 28, 28, max_rows=8)
    assert x[0, 0, 0] == 7.0
    assert parse_json_body(b'{"data": [[1, 2.5]]}') == {"data": [[1.0, 2.5]]}

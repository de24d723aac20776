"""API key check for write endpoints (no Ray)."""

import pytest

from deployments.auth import check_api_key, key_required_for_inference
from deployments.errors import ApiError


def test_open_when_no_key_is_configured():
    check_api_key(None, None)
    check_api_key("", "Bearer anything")


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer wrong", "Basic s3cret", "s3cret",
                                    "Bearer s3cret-and-more"])
def test_wrong_or_missing_key_is_401(header):
    with pytest.raises(ApiError) as error:
        check_api_key("s3cret", header)
    assert error.value.status == 401 and error.value.headers == {"WWW-Authenticate": "Bearer"}


def test_right_key_passes():
    check_api_key("s3cret", "Bearer s3cret")
    check_api_key("s3cret", "bearer s3cret")


def test_inference_needs_the_key_only_when_asked_and_a_key_is_set():
    assert key_required_for_inference("s3cret", True)
    assert not key_required_for_inference("s3cret", False)
    assert not key_required_for_inference(None, True)  # nothing to ask for: stays open

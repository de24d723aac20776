"""Write endpoints need `Authorization: Bearer <RNNSERVE_API_KEY>` when that key is set."""

from __future__ import annotations

import hmac

from deployments.errors import ApiError


def check_bearer(expected: str, authorization: str | None) -> bool:
    """True when the header is `Bearer <expected>` (compared in constant time)."""
    scheme, _, token = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(),
                                                              expected.encode())


def key_required_for_inference(api_key: str | None, setting: bool) -> bool:
    """Whether generate/predict need the API key: the `inference_needs_key` limit asks for it,
    and it takes effect only on a server that has a key to ask for."""
    return setting and api_key is not None


def check_api_key(expected: str | None, authorization: str | None) -> None:
    """No key configured: open (local use). Otherwise the bearer token must match exactly."""
    if expected and not check_bearer(expected, authorization):
        raise ApiError(401, "this endpoint needs 'Authorization: Bearer <RNNSERVE_API_KEY>'",
                       headers={"WWW-Authenticate": "Bearer"})

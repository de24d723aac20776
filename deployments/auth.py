"""Write endpoints need `Authorization: Bearer <RNNSERVE_API_KEY>` when that key is set."""

from __future__ import annotations

import hmac

from deployments.errors import ApiError


def check_api_key(expected: str | None, authorization: str | None) -> None:
    """No key configured: open (local use). Otherwise the bearer token must match exactly."""
    if not expected:
        return
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(),
                                                             expected.encode()):
        raise ApiError(401, "this endpoint needs 'Authorization: Bearer <RNNSERVE_API_KEY>'",
                       headers={"WWW-Authenticate": "Bearer"})

"""Large request bodies in Serve's HTTP proxy, on every node, before anything else sees them.

- A coarse outer bound: a request whose `Content-Length` is over the largest body any route
  accepts is answered 413 by the proxy itself, before it reads a byte of the body or routes
  the request to the Ingress replica. The per-route caps, chunked bodies and the body rate
  stay with the Ingress (deployments/guards.py).
- A tarpit: a large-body request (over 64 kB, or of unknown length) that is refused (any 4xx,
  the proxy's or the app's) costs its client's address a token. Past a burst, that address's
  next large-body requests are held before they go on, so a client sending oversized bodies,
  upload bombs or bodies over its rate in a loop gets about REFUSALS_PER_S answers, not as
  many as the proxy and the Ingress can give. A held request is a sleeping coroutine: nobody
  reads its body yet, and uvicorn stops reading a body nobody receives after 64 kB. Small
  requests (ordinary generate/predict) are never held.

Serve's proxy loads it when its node's `ray start` ran with
RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH set to CALLBACK (the Makefile, cluster.yaml and
tests/conftest.py do). Standard library and Starlette only: it runs in the proxy's process,
which loads none of the app.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

from starlette.middleware import Middleware

from deployments.rate_limit import RateLimiter
from deployments.serve_config import SERVE_CONFIG, rnnserve_app, shipped_config

CALLBACK = "deployments.proxy_guard:middlewares"
CAP_VARIABLE = "RNNSERVE_PROXY_MAX_BODY_BYTES"
# An upload's multipart framing around its file (boundaries, the form's other fields): the
# Ingress accepts an upload body of max_upload_bytes plus this.
MULTIPART_OVERHEAD = 64 * 1024
BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# A body larger than this, or of unknown length, is a large one: refused unread, its
# connection is closed (uvicorn would otherwise read the rest to keep it, which is where a
# flood of oversized bodies spends the most CPU), and a refusal of it feeds the tarpit.
LARGE_BODY = 64 * 1024
# The tarpit: REFUSAL_BURST refused large bodies an address, then REFUSALS_PER_S. Its
# concurrent refusals put it into debt (at most a burst's worth), so a client's wait is at most
# (1 + REFUSAL_BURST) / REFUSALS_PER_S (21 s). Past MAX_HELD requests held at once (all
# clients), the next go on at once: the tarpit itself cannot be made to hold unbounded ones.
REFUSALS_PER_S = 1.0
REFUSAL_BURST = 20
MAX_HELD = 1000


def declared_length(scope) -> int | None:
    """The request's Content-Length, or None when it has none (chunked) or not a number."""
    length = dict(scope.get("headers", [])).get(b"content-length")
    return int(length) if length is not None and length.isdigit() else None


def large_body_pending(scope) -> bool:
    """Whether the request may carry a body over LARGE_BODY (chunked ones may)."""
    if scope["method"] not in BODY_METHODS:
        return False
    length = declared_length(scope)
    return length is None or length > LARGE_BODY


def default_cap(config_path: Path = SERVE_CONFIG) -> int:
    """The largest body the app accepts: serve_config.yaml's upload cap and its multipart
    framing. Read from the config rather than copied from it, so raising the upload cap there
    cannot leave the proxy refusing uploads the Ingress would take."""
    cap = rnnserve_app(shipped_config(config_path))["args"].get("limits", {}).get(
        "max_upload_bytes")
    if cap is None:
        raise ValueError(f"no limits.max_upload_bytes in {config_path}: set {CAP_VARIABLE}")
    return cap + MULTIPART_OVERHEAD


def middlewares() -> list[Middleware]:
    """Serve's proxy callback: the body cap from the node's environment (CAP_VARIABLE), else
    from serve_config.yaml."""
    raw = os.environ.get(CAP_VARIABLE, "").strip()
    if raw and not (raw.isdigit() and int(raw) > 0):
        raise ValueError(f"{CAP_VARIABLE} must be a positive number of bytes, not {raw!r}")
    return [Middleware(LargeBodyGuard, max_bytes=int(raw) if raw else default_cap())]


class LargeBodyGuard:
    """Pure ASGI middleware: 413 for a declared body over `max_bytes`, in the API's error shape
    (`{"error", "detail"}`), closing the connection instead of reading the body to keep it;
    and the tarpit for clients whose large bodies keep being refused."""

    def __init__(self, app, max_bytes: int, refusals_per_s: float = REFUSALS_PER_S,
                 refusal_burst: float = REFUSAL_BURST, max_held: int = MAX_HELD,
                 clock=time.monotonic):
        self.app, self.max_bytes, self.clock = app, max_bytes, clock
        self.refusals = RateLimiter(refusals_per_s, refusal_burst)
        self.max_held, self.held = max_held, 0
        self.body = json.dumps({
            "error": f"request body larger than {max_bytes} bytes, the most this server "
                     f"accepts on any route ({CAP_VARIABLE})",
            "detail": {"limit": max_bytes}}).encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = declared_length(scope)
        too_large = length is not None and length > self.max_bytes
        if not too_large and not large_body_pending(scope):
            return await self.app(scope, receive, send)
        # The address uvicorn gives: X-Forwarded-For is honoured from FORWARDED_ALLOW_IPS only.
        client = (scope.get("client") or ("unknown",))[0]
        await self._hold(client)
        if too_large:
            self.refusals.charge(client, 1, self.clock())
            await send({"type": "http.response.start", "status": 413,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(self.body)).encode()),
                                    (b"connection", b"close")]})
            return await send({"type": "http.response.body", "body": self.body})

        async def send_watched(message):
            if message["type"] == "http.response.start" and 400 <= message["status"] < 500:
                self.refusals.charge(client, 1, self.clock())
            await send(message)
        await self.app(scope, receive, send_watched)

    async def _hold(self, client: str) -> None:
        """Wait until the client's refusal bucket has a token (none is taken: only a refusal
        takes one), unless MAX_HELD requests are held already."""
        wait = self.refusals.wait(client, self.clock())
        if not wait or self.held >= self.max_held:
            return
        self.held += 1
        try:
            await asyncio.sleep(wait)
        finally:
            self.held -= 1

"""A coarse outer bound on request bodies in Serve's HTTP proxy, on every node: a request
whose `Content-Length` is over the largest body any route accepts is answered 413 by the proxy
itself, before it reads a byte of the body or routes the request to the Ingress replica. The
per-route caps, chunked bodies and the body rate stay with the Ingress (deployments/guards.py).

A refusal also costs its client: past a burst, an address's refusals are answered only after a
wait (a tarpit), so a client sending oversized bodies in a loop is held to REFUSALS_PER_S
instead of as many as the proxy can answer, on the process every request of the node goes
through. A held refusal is a sleeping coroutine: uvicorn stops reading a body nobody
receives after 64 kB, so it buffers no more than that.

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

CALLBACK = "deployments.proxy_guard:middlewares"
CAP_VARIABLE = "RNNSERVE_PROXY_MAX_BODY_BYTES"
# An upload's multipart framing around its file (boundaries, the form's other fields): the
# Ingress accepts an upload body of max_upload_bytes plus this.
MULTIPART_OVERHEAD = 64 * 1024
SERVE_CONFIG = Path(__file__).resolve().parents[1] / "serve_config.yaml"
# The tarpit: an address's refusals are answered at once REFUSAL_BURST times, then at
# REFUSALS_PER_S; one that keeps going waits up to (1 + REFUSAL_BURST) / REFUSALS_PER_S (21 s).
# Past MAX_HELD refusals waiting at once (all clients), the next are answered at once, so the
# tarpit itself cannot be made to hold unbounded connections.
REFUSALS_PER_S = 1.0
REFUSAL_BURST = 20
MAX_HELD = 1000


def declared_length(scope) -> int | None:
    """The request's Content-Length, or None when it has none (chunked) or not a number."""
    length = dict(scope.get("headers", [])).get(b"content-length")
    return int(length) if length is not None and length.isdigit() else None


def default_cap(config_path: Path = SERVE_CONFIG) -> int:
    """The largest body the app accepts: serve_config.yaml's upload cap and its multipart
    framing. Read from the config rather than copied from it, so raising the upload cap there
    cannot leave the proxy refusing uploads the Ingress would take."""
    import yaml  # a dependency of Ray's, as Starlette is

    config = yaml.safe_load(config_path.read_text())
    caps = [app.get("args", {}).get("limits", {}).get("max_upload_bytes")
            for app in config.get("applications", [])]
    if not caps or None in caps:
        raise ValueError(f"no limits.max_upload_bytes in {config_path}: set {CAP_VARIABLE}")
    return max(caps) + MULTIPART_OVERHEAD


def middlewares() -> list[Middleware]:
    """Serve's proxy callback: the body cap from the node's environment (CAP_VARIABLE), else
    from serve_config.yaml."""
    raw = os.environ.get(CAP_VARIABLE, "").strip()
    if raw and not (raw.isdigit() and int(raw) > 0):
        raise ValueError(f"{CAP_VARIABLE} must be a positive number of bytes, not {raw!r}")
    return [Middleware(BodyCap, max_bytes=int(raw) if raw else default_cap())]


class BodyCap:
    """Pure ASGI middleware: 413 for a declared body over `max_bytes`, in the API's error shape
    (`{"error", "detail"}`), closing the connection instead of reading the body to keep it."""

    def __init__(self, app, max_bytes: int, refusals_per_s: float = REFUSALS_PER_S,
                 refusal_burst: float = REFUSAL_BURST, max_held: int = MAX_HELD):
        self.app, self.max_bytes = app, max_bytes
        self.refusals = RateLimiter(refusals_per_s, refusal_burst)
        self.max_held, self.held = max_held, 0
        self.body = json.dumps({
            "error": f"request body larger than {max_bytes} bytes, the most this server "
                     f"accepts on any route ({CAP_VARIABLE})",
            "detail": {"limit": max_bytes}}).encode()

    async def __call__(self, scope, receive, send):
        length = declared_length(scope) if scope["type"] == "http" else None
        if length is None or length <= self.max_bytes:
            return await self.app(scope, receive, send)
        await self._tarpit(scope)
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(self.body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": self.body})

    async def _tarpit(self, scope) -> None:
        """Wait before answering a client past its refusal burst. The wait is also charged to
        its bucket (into debt, at most a burst's worth), so a client that keeps sending waits
        longer each time, up to the cap, and is held to the refill rate."""
        # The address uvicorn gives: X-Forwarded-For is honoured from FORWARDED_ALLOW_IPS only.
        client = (scope.get("client") or ("unknown",))[0]
        now = time.monotonic()
        wait = self.refusals.check(client, now)
        if not wait or self.held >= self.max_held:
            return
        self.refusals.charge(client, 1, now)
        self.held += 1
        try:
            await asyncio.sleep(wait)
        finally:
            self.held -= 1

"""A coarse outer bound on request bodies in Serve's HTTP proxy, on every node: a request
whose `Content-Length` is over the largest body any route accepts is answered 413 by the proxy
itself, before it reads a byte of the body or routes the request to the Ingress replica. The
per-route caps, chunked bodies and the body rate stay with the Ingress (deployments/guards.py).

Serve's proxy loads it when its node's `ray start` ran with
RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH set to CALLBACK (the Makefile, cluster.yaml and
tests/conftest.py do). Standard library and Starlette only: it runs in the proxy's process,
which loads none of the app.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from starlette.middleware import Middleware

CALLBACK = "deployments.proxy_guard:middlewares"
CAP_VARIABLE = "RNNSERVE_PROXY_MAX_BODY_BYTES"
# An upload's multipart framing around its file (boundaries, the form's other fields): the
# Ingress accepts an upload body of max_upload_bytes plus this.
MULTIPART_OVERHEAD = 64 * 1024
SERVE_CONFIG = Path(__file__).resolve().parents[1] / "serve_config.yaml"


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

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes
        self.body = json.dumps({
            "error": f"request body larger than {max_bytes} bytes, the most this server "
                     f"accepts on any route ({CAP_VARIABLE})",
            "detail": {"limit": max_bytes}}).encode()

    async def __call__(self, scope, receive, send):
        length = declared_length(scope) if scope["type"] == "http" else None
        if length is None or length <= self.max_bytes:
            return await self.app(scope, receive, send)
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(self.body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": self.body})

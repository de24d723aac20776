"""Request guards in front of the routes: a body size cap enforced while the body streams in,
and per-client token-bucket rate limits.

Both are plain ASGI middleware, so an oversize upload is cut off after `max_bytes` arrive
(never buffered whole first), and a client over its rate gets 429 before any work is done.
Limits are per ingress replica: with N replicas a client's effective rate is up to N times
the configured one.
"""

from __future__ import annotations

import json
import math
import time
from collections import OrderedDict
from dataclasses import dataclass

from deployments.auth import check_bearer

BODY_TOO_LARGE = "rnnserve.body_too_large"


@dataclass
class TokenBucket:
    rate: float  # tokens per second
    burst: float  # bucket size
    tokens: float
    updated: float

    def take(self, now: float) -> float:
        """Take one token; returns 0 when allowed, else seconds until one is available."""
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


class RateLimiter:
    """One bucket per (client, route class); the least recently seen clients are forgotten."""

    def __init__(self, rate: float, burst: float, max_clients: int = 100_000):
        self.rate, self.burst, self.max_clients = rate, burst, max_clients
        self.buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def check(self, key: str, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        bucket = self.buckets.pop(key, None) or TokenBucket(self.rate, self.burst, self.burst, now)
        self.buckets[key] = bucket
        if len(self.buckets) > self.max_clients:
            self.buckets.popitem(last=False)
        return bucket.take(now)


def _route_class(method: str, path: str) -> str | None:
    if method == "POST" and path.rstrip("/") == "/models":
        return "upload"
    if method == "POST" and (path.endswith("/generate") or path.endswith("/predict")):
        return "inference"
    return None


def _client(scope, api_key: str | None) -> str:
    """The bucket's owner: holders of the configured API key share one bucket; everyone else
    is their address. Any other bearer token is ignored, or made-up tokens would each get a
    fresh bucket. The address is uvicorn's, which already honours X-Forwarded-For from a
    trusted proxy (FORWARDED_ALLOW_IPS) and ignores it from anyone else."""
    if api_key:
        for name, value in scope.get("headers", []):
            if name == b"authorization" and check_bearer(api_key, value.decode("latin-1")):
                return "key"
    client = scope.get("client")
    return "ip:" + (client[0] if client else "unknown")


async def _send_error(send, status: int, error: str, headers: dict | None = None) -> None:
    body = json.dumps({"error": error, "detail": None}).encode()
    raw_headers = [(b"content-type", b"application/json"),
                   (b"content-length", str(len(body)).encode())]
    raw_headers += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})


class RequestGuards:
    """ASGI middleware: rate limits per client and route class, and the upload size cap."""

    def __init__(self, app, max_upload_bytes: int, limiters: dict[str, RateLimiter],
                 api_key: str | None = None):
        self.app, self.max_upload_bytes, self.limiters = app, max_upload_bytes, limiters
        self.api_key = api_key

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        route = _route_class(scope["method"], scope["path"])
        limiter = self.limiters.get(route)
        if limiter is not None:
            wait = limiter.check(f"{route}:{_client(scope, self.api_key)}")
            if wait > 0:
                return await _send_error(send, 429, "too many requests; retry later",
                                         {"Retry-After": str(math.ceil(wait))})
        if route != "upload":
            return await self.app(scope, receive, send)
        # Multipart overhead aside, the body is the file: cap it as it streams in.
        cap = self.max_upload_bytes + 64 * 1024
        length = dict(scope.get("headers", [])).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > cap:
            return await _send_error(send, 413, f"upload larger than {self.max_upload_bytes} bytes")
        received, too_large = 0, False

        async def counting_receive():
            # Past the cap, pretend the body ended: the app fails to parse a truncated form,
            # and its answer is replaced by the 413 below. Nothing more is read.
            nonlocal received, too_large
            if too_large:
                return {"type": "http.request", "body": b"", "more_body": False}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > cap:
                    too_large = True
                    scope[BODY_TOO_LARGE] = True  # the route checks it before any side effect
                    return {"type": "http.request", "body": b"", "more_body": False}
            return message

        replaced = False

        async def guarded_send(message):
            nonlocal replaced
            if too_large:
                if not replaced:
                    replaced = True
                    await _send_error(send, 413, f"upload larger than {self.max_upload_bytes} bytes")
                return
            await send(message)

        await self.app(scope, counting_receive, guarded_send)

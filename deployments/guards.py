"""Request guards in front of the routes: body size caps and a minimum body rate enforced
while the body streams in, and per-client token-bucket rate limits.

All are plain ASGI middleware, so an oversize body is refused from its declared length or cut
off once the cap is passed (never buffered whole first), a body that trickles in is cut with
408, and a client over its rate gets 429 before any work is done.
Limits are per ingress replica: with N replicas a client's effective rate is up to N times
the configured one.
"""

from __future__ import annotations

import asyncio
import json
import math
import time

from deployments.auth import check_bearer, key_required_for_inference
from deployments.errors import error_body
from deployments.proxy_guard import (
    BODY_METHODS,
    MULTIPART_OVERHEAD,
    declared_length,
    large_body_pending,
)
from deployments.rate_limit import RateLimiter

BODY_TOO_LARGE = "rnnserve.body_too_large"


# Inference on the native routes and on the protocols' (OpenAI completions, TF Serving predict,
# KServe infer): one bucket per client for all of them.
INFERENCE_SUFFIXES = ("/generate", "/predict", "/v1/completions", ":predict", "/infer")


def _route_class(method: str, path: str) -> str | None:
    if method == "POST" and path.rstrip("/") == "/models":
        return "upload"
    if method == "POST" and path.endswith(INFERENCE_SUFFIXES):
        return "inference"
    return None


KEY_HOLDERS = "key"  # the client of every request that carries the API key


def client_of(scope, api_key: str | None) -> str:
    """The bucket's owner: holders of the configured API key share one bucket; everyone else
    is their address. Any other bearer token is ignored, or made-up tokens would each get a
    fresh bucket. The address is uvicorn's, which already honours X-Forwarded-For from a
    trusted proxy (FORWARDED_ALLOW_IPS) and ignores it from anyone else."""
    if api_key:
        for name, value in scope.get("headers", []):
            if name == b"authorization" and check_bearer(api_key, value.decode("latin-1")):
                return KEY_HOLDERS
    client = scope.get("client")
    return "ip:" + (client[0] if client else "unknown")


async def send_error(send, status: int, error: str, headers: dict | None = None,
                     path: str = "", close: bool = False) -> None:
    """The error in the route's shape; `close` ends the connection after it, so the server
    does not read (and throw away) the rest of a body it has refused."""
    status, shaped = error_body(path, status, error)
    body = json.dumps(shaped).encode()
    raw_headers = [(b"content-type", b"application/json"),
                   (b"content-length", str(len(body)).encode())]
    if close:
        raw_headers.append((b"connection", b"close"))
    raw_headers += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})


class BodyRefused(Exception):
    """Raised into the app from `receive` when the body is too large or too slow: whatever the
    app was doing with the body stops there, and the guard answers `status` instead."""

    def __init__(self, status: int, error: str):
        super().__init__(error)
        self.status, self.error = status, error


# What a refused body (413, 408) costs its client's rate bucket, in requests: a client that
# keeps sending what it is told is refused is slowed to a tenth of the rate.
REFUSED_BODY_COST = 10


class RequestGuards:
    """ASGI middleware: rate limits per client and route class, body size caps (the upload's,
    and a small one for every other route that takes a body) and a minimum body rate."""

    def __init__(self, app, max_upload_bytes: int, limiters: dict[str, RateLimiter],
                 api_key: str | None = None, max_body_bytes: int = 1024 * 1024,
                 min_body_bytes_per_s: float = 0.0, body_grace_s: float = 10.0,
                 max_in_flight: int = 0, inference_needs_key: bool = False):
        self.app, self.max_upload_bytes, self.limiters = app, max_upload_bytes, limiters
        self.api_key = api_key
        self.max_body_bytes = max_body_bytes
        self.min_body_bytes_per_s, self.body_grace_s = min_body_bytes_per_s, body_grace_s
        self.max_in_flight = max_in_flight  # inference requests per client at once (0: any)
        self.inference_needs_key = key_required_for_inference(api_key, inference_needs_key)
        self.in_flight: dict[str, int] = {}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        route = _route_class(scope["method"], scope["path"])
        if route == "inference" and self.inference_needs_key and client_of(
                scope, self.api_key) != KEY_HOLDERS:
            return await send_error(send, 401, "inference needs 'Authorization: Bearer "
                                    "<RNNSERVE_API_KEY>' on this server",
                                    {"WWW-Authenticate": "Bearer"}, scope["path"],
                                    close=large_body_pending(scope))
        limiter = self.limiters.get(route)
        if limiter is not None:
            wait = limiter.check(f"{route}:{client_of(scope, self.api_key)}")
            if wait > 0:
                return await send_error(send, 429, "too many requests; retry later",
                                         {"Retry-After": str(math.ceil(wait))}, scope["path"],
                                         close=large_body_pending(scope))
        if route == "inference" and self.max_in_flight > 0:
            # A client's generations/predictions at once (a stream counts until it ends): one
            # address cannot fill a model's waiting queue or cycle the model cache alone.
            client = client_of(scope, self.api_key)
            if self.in_flight.get(client, 0) >= self.max_in_flight:
                return await send_error(send, 429, f"more than {self.max_in_flight} requests "
                                         "in flight from this client; retry later",
                                         {"Retry-After": "1"}, scope["path"],
                                         close=large_body_pending(scope))
            self.in_flight[client] = self.in_flight.get(client, 0) + 1
            try:
                return await self._guard_body(route, scope, receive, send)
            finally:
                self.in_flight[client] -= 1
                if not self.in_flight[client]:
                    del self.in_flight[client]
        return await self._guard_body(route, scope, receive, send)

    async def _guard_body(self, route, scope, receive, send):
        if scope["method"] not in BODY_METHODS:
            return await self.app(scope, receive, send)
        if route == "upload":
            # Multipart overhead aside, the body is the file.
            cap = self.max_upload_bytes + MULTIPART_OVERHEAD
            too_large = f"upload larger than {self.max_upload_bytes} bytes"
        else:
            cap = self.max_body_bytes
            too_large = f"request body larger than {cap} bytes"
        length = declared_length(scope)
        if length is not None and length > cap:
            return await self._refuse_body(route, scope, send, BodyRefused(413, too_large))
        body = _BodyReader(receive, cap, too_large, self.min_body_bytes_per_s,
                           self.body_grace_s)
        if route == "upload":
            # Too large for memory at once: counted as the app streams it in.
            return await self._call_refusable(route, scope, body.receive, send, body)
        # Small bodies are read whole before the app sees them, so a route runs on a complete
        # body or not at all (even one that never reads it, or a truncation that parses).
        try:
            first = await body.read_all()
        except BodyRefused as refused:
            return await self._refuse_body(route, scope, send, refused)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return first
            return await receive()  # past the body: disconnects

        await self.app(scope, replay, send)

    async def _refuse_body(self, route, scope, send, refused: BodyRefused) -> None:
        """Answer a refused body, close the connection rather than read the rest of it, and
        charge the client's bucket for it."""
        limiter = self.limiters.get(route)
        if limiter is not None:
            limiter.charge(f"{route}:{client_of(scope, self.api_key)}", REFUSED_BODY_COST - 1)
        await send_error(send, refused.status, refused.error, path=scope["path"], close=True)

    async def _call_refusable(self, route, scope, receive, send, body: _BodyReader):
        """Run the app; once the body is refused its answer is replaced by the guard's."""
        replaced = False

        async def guarded_send(message):
            nonlocal replaced
            if body.refused is not None:
                if not replaced:
                    replaced = True
                    scope[BODY_TOO_LARGE] = True  # the route checks it before any side effect
                    await self._refuse_body(route, scope, send, body.refused)
                return
            await send(message)

        try:
            await self.app(scope, receive, guarded_send)
        except BodyRefused:
            pass  # escaped the app's own handling: answered below
        if body.refused is not None and not replaced:
            await self._refuse_body(route, scope, send, body.refused)


class _BodyReader:
    """`receive` for the request body with a size cap and a minimum rate: past `cap` bytes,
    or when the body has arrived slower than `min_rate` bytes/s (after a `grace` period), it
    raises BodyRefused (413 or 408). Once the body is complete, messages pass through."""

    def __init__(self, receive, cap: int, too_large: str, min_rate: float, grace: float):
        self._receive, self.cap, self.too_large = receive, cap, too_large
        self.min_rate, self.grace = min_rate, grace
        self.started = time.monotonic()
        self.received, self.done = 0, False
        self.refused: BodyRefused | None = None

    def _refuse(self, status: int, error: str) -> BodyRefused:
        self.refused = BodyRefused(status, error)
        return self.refused

    async def receive(self):
        if self.refused is not None:
            raise self.refused
        if self.done:
            return await self._receive()
        if self.min_rate > 0:
            # Due by now: min_rate bytes for every second past the grace period.
            left = self.started + self.grace + self.received / self.min_rate - time.monotonic()
            try:
                if left <= 0:
                    raise TimeoutError
                message = await asyncio.wait_for(self._receive(), left)
            except TimeoutError:
                raise self._refuse(408, f"request body arrived slower than "
                                        f"{self.min_rate:g} bytes/s") from None
        else:
            message = await self._receive()
        if message["type"] != "http.request":
            self.done = True  # the client went away
            return message
        self.received += len(message.get("body", b""))
        if self.received > self.cap:
            raise self._refuse(413, self.too_large)
        if not message.get("more_body", False):
            self.done = True
        return message

    async def read_all(self) -> dict:
        """The whole body as one message (or the disconnect that ended it)."""
        chunks = []
        while True:
            message = await self.receive()
            if message["type"] != "http.request":
                return message
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

"""The proxy's body cap as plain ASGI (no Ray, no server): an oversized declared body is
answered 413 without a byte read and without the app behind it running."""

from __future__ import annotations

import asyncio
import json

import pytest

from deployments.limits import Limits
from deployments.proxy_guard import (
    CAP_VARIABLE,
    LARGE_BODY,
    MULTIPART_OVERHEAD,
    LargeBodyGuard,
    middlewares,
)
from deployments.serve_config import rnnserve_app, shipped_config
from models.config import parse_config


def call(middleware, headers: list[tuple[bytes, bytes]], scope_type: str = "http"):
    """(messages sent, whether the app ran, whether the body was read)."""
    ran, read, sent = [], [], []

    async def app(scope, receive, send):
        ran.append(True)
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})

    async def receive():
        read.append(True)
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {"type": scope_type, "method": "POST", "path": "/models", "headers": headers}
    asyncio.run(middleware(app, 100)(scope, receive, send))
    return sent, bool(ran), bool(read)


def test_a_declared_body_over_the_cap_is_refused_unread():
    sent, ran, read = call(LargeBodyGuard, [(b"content-length", b"101")])
    assert not ran and not read
    start, body = sent
    assert start["status"] == 413
    headers = dict(start["headers"])
    assert headers[b"connection"] == b"close" and headers[b"content-type"] == b"application/json"
    answer = json.loads(body["body"])
    assert answer["detail"] == {"limit": 100} and CAP_VARIABLE in answer["error"]
    assert int(headers[b"content-length"]) == len(body["body"])


@pytest.mark.parametrize("headers", [[(b"content-length", b"100")], [],
                                     [(b"content-length", b"lots")],
                                     [(b"transfer-encoding", b"chunked")]])
def test_bodies_at_the_cap_or_undeclared_go_on_to_the_app(headers):
    # Chunked and malformed lengths are the Ingress's to count (or the server's to refuse).
    sent, ran, read = call(LargeBodyGuard, headers)
    assert ran and read and sent[0]["status"] == 200


def test_other_connections_pass_untouched():
    _, ran, _ = call(LargeBodyGuard, [(b"content-length", b"999")], scope_type="websocket")
    assert ran


def test_the_cap_is_the_environments_else_the_largest_body_the_ingress_accepts(monkeypatch):
    monkeypatch.delenv(CAP_VARIABLE, raising=False)
    shipped = rnnserve_app(shipped_config())["args"]["limits"]
    upload_cap = parse_config(Limits, shipped).max_upload_bytes
    (guard,) = middlewares()
    assert guard.cls is LargeBodyGuard
    assert guard.kwargs == {"max_bytes": upload_cap + MULTIPART_OVERHEAD}
    monkeypatch.setenv(CAP_VARIABLE, "5000")
    assert middlewares()[0].kwargs == {"max_bytes": 5000}
    for wrong in ("0", "-1", "10MB"):
        monkeypatch.setenv(CAP_VARIABLE, wrong)
        with pytest.raises(ValueError, match=CAP_VARIABLE):
            middlewares()


def send_in_a_row(guard: LargeBodyGuard, client: str, times: int, length: int = 101,
                  app_status: int = 200) -> list[int]:
    """The statuses of `times` POSTs from `client` declaring `length` bytes, one after the
    other; the app behind answers `app_status` without reading the body."""
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": app_status, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def receive():
        raise AssertionError("the body was read")

    statuses = []

    async def send(message):
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    scope = {"type": "http", "method": "POST", "path": "/models", "client": (client, 4321),
             "headers": [(b"content-length", str(length).encode())]}
    guard.app = app
    for _ in range(times):
        asyncio.run(guard(scope, receive, send))
    return statuses


class Clock:
    """The guard's clock, moved only by its sleeps: each wait is recorded, not slept."""

    def __init__(self):
        self.now, self.waits = 1000.0, []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds


@pytest.fixture
def clock(monkeypatch):
    clock = Clock()
    monkeypatch.setattr("deployments.proxy_guard.asyncio.sleep", clock.sleep)
    return clock


def guard(clock: Clock, max_bytes: int, **tarpit) -> LargeBodyGuard:
    return LargeBodyGuard(None, max_bytes, refusals_per_s=1.0, clock=clock, **tarpit)


def test_a_client_refused_past_its_burst_is_held_before_its_next_large_bodies(clock):
    cap = guard(clock, 100, refusal_burst=3)
    assert send_in_a_row(cap, "10.0.0.1", 3) == [413] * 3
    assert clock.waits == []  # the burst: answered at once
    assert send_in_a_row(cap, "10.0.0.1", 4) == [413] * 4
    # One after the other, each waits the second its token takes to come back.
    assert clock.waits == pytest.approx([1.0] * 4)
    assert send_in_a_row(cap, "10.0.0.2", 3) == [413] * 3  # another client: its own bucket
    assert len(clock.waits) == 4


def test_large_bodies_the_app_refuses_feed_the_tarpit_and_small_ones_are_never_held(clock):
    cap = guard(clock, 10**9, refusal_burst=2)
    large = LARGE_BODY + 1
    # The Ingress's answers count as the proxy's own: a 429 or 400 for a large body too.
    assert send_in_a_row(cap, "10.0.0.1", 3, large, app_status=429) == [429] * 3
    assert len(clock.waits) == 1
    assert send_in_a_row(cap, "10.0.0.1", 3, LARGE_BODY, app_status=429) == [429] * 3
    assert len(clock.waits) == 1  # small bodies pass untouched, even from a client in the tarpit
    send_in_a_row(cap, "10.0.0.3", 5, large, app_status=200)
    assert len(clock.waits) == 1  # accepted large bodies (uploads) cost nothing


def test_concurrent_refusals_put_a_client_into_debt_of_at_most_a_burst(clock):
    cap = guard(clock, 100, refusal_burst=3)
    for _ in range(10):  # ten refused at once: none was held, all were charged
        cap.refusals.charge("10.0.0.1", 1, clock())
    send_in_a_row(cap, "10.0.0.1", 1)
    assert clock.waits == pytest.approx([4.0])  # (1 + burst) / rate


def test_the_tarpit_holds_at_most_max_held_requests_at_once(clock):
    cap = guard(clock, 100, refusal_burst=1, max_held=0)
    send_in_a_row(cap, "10.0.0.1", 5)
    assert clock.waits == []  # nothing may be held: every refusal answered at once

"""The proxy's body cap as plain ASGI (no Ray, no server): an oversized declared body is
answered 413 without a byte read and without the app behind it running."""

from __future__ import annotations

import asyncio
import json

import pytest
import yaml

from deployments.limits import Limits
from deployments.proxy_guard import (
    CAP_VARIABLE,
    MULTIPART_OVERHEAD,
    SERVE_CONFIG,
    BodyCap,
    middlewares,
)
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
    sent, ran, read = call(BodyCap, [(b"content-length", b"101")])
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
    sent, ran, read = call(BodyCap, headers)
    assert ran and read and sent[0]["status"] == 200


def test_other_connections_pass_untouched():
    _, ran, _ = call(BodyCap, [(b"content-length", b"999")], scope_type="websocket")
    assert ran


def test_the_cap_is_the_environments_else_the_largest_body_the_ingress_accepts(monkeypatch):
    monkeypatch.delenv(CAP_VARIABLE, raising=False)
    shipped = yaml.safe_load(SERVE_CONFIG.read_text())["applications"][0]["args"]["limits"]
    upload_cap = parse_config(Limits, shipped).max_upload_bytes
    (guard,) = middlewares()
    assert guard.cls is BodyCap
    assert guard.kwargs == {"max_bytes": upload_cap + MULTIPART_OVERHEAD}
    monkeypatch.setenv(CAP_VARIABLE, "5000")
    assert middlewares()[0].kwargs == {"max_bytes": 5000}
    for wrong in ("0", "-1", "10MB"):
        monkeypatch.setenv(CAP_VARIABLE, wrong)
        with pytest.raises(ValueError, match=CAP_VARIABLE):
            middlewares()


def refuse_in_a_row(guard: BodyCap, client: str, times: int) -> None:
    async def app(scope, receive, send):
        raise AssertionError("an oversized body reached the app")

    async def receive():
        raise AssertionError("an oversized body was read")

    async def send(message):
        pass

    scope = {"type": "http", "method": "POST", "path": "/models", "client": (client, 4321),
             "headers": [(b"content-length", b"101")]}
    for _ in range(times):
        asyncio.run(guard(scope, receive, send))


@pytest.fixture
def waits(monkeypatch):
    """The tarpit's waits, recorded instead of slept."""
    recorded = []

    async def sleep(seconds):
        recorded.append(seconds)
    monkeypatch.setattr("deployments.proxy_guard.asyncio.sleep", sleep)
    return recorded


def test_refusals_past_the_burst_wait_and_the_wait_grows_to_its_cap(waits):
    guard = BodyCap(None, 100, refusals_per_s=1.0, refusal_burst=3)
    refuse_in_a_row(guard, "10.0.0.1", 3)
    assert waits == []  # the burst: answered at once
    refuse_in_a_row(guard, "10.0.0.1", 6)
    # Each wait is charged into debt, so a client that does not stop waits longer each time,
    # up to (1 + burst) / rate.
    assert len(waits) == 6 and waits == sorted(waits)
    assert 0.9 < waits[0] <= 1.0 and 3.9 < waits[-1] <= 4.0
    refuse_in_a_row(guard, "10.0.0.2", 3)  # another client has a bucket of its own
    assert len(waits) == 6


def test_the_tarpit_holds_at_most_max_held_refusals_at_once(waits):
    guard = BodyCap(None, 100, refusals_per_s=1.0, refusal_burst=1, max_held=0)
    refuse_in_a_row(guard, "10.0.0.1", 5)
    assert waits == []  # nothing may be held: every refusal answered at once

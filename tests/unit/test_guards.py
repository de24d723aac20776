"""Request guards as ASGI middleware on a tiny Starlette app (no Ray): rate limits and the
upload cap applied while the body streams in."""

from __future__ import annotations

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from deployments.guards import BODY_TOO_LARGE, RequestGuards
from deployments.rate_limit import RateLimiter, TokenBucket


def test_token_bucket_allows_bursts_then_paces():
    bucket = TokenBucket(rate=2.0, burst=3, tokens=3, updated=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(0.0) == pytest.approx(0.5)  # next token in 1/rate seconds
    assert bucket.take(0.5) == 0.0


def test_rate_limiter_keeps_clients_apart_and_forgets_old_ones():
    limiter = RateLimiter(rate=1.0, burst=1, max_clients=2)
    assert limiter.check("a", 0.0) == 0 and limiter.check("a", 0.0) > 0
    assert limiter.check("b", 0.0) == 0
    limiter.check("c", 0.0)
    assert list(limiter.buckets) == ["b", "c"]


@pytest.fixture()
def client():
    calls = []

    async def upload(request: Request):
        form = await request.form()  # as FastAPI does before calling a route with Form fields
        if request.scope.get(BODY_TOO_LARGE):
            return JSONResponse({"error": "too large"}, status_code=413)
        calls.append(len(await form["file"].read()))
        return JSONResponse({"ok": True}, status_code=202)

    async def generate(request: Request):
        return JSONResponse({"ok": True})

    app = Starlette(routes=[Route("/models", upload, methods=["POST"]),
                            Route("/models/m/generate", generate, methods=["POST"])])
    app.add_middleware(RequestGuards, max_upload_bytes=1000,
                       limiters={"inference": RateLimiter(1.0, 2)}, api_key="the-key")
    test_client = TestClient(app)
    test_client.calls = calls
    return test_client


def test_upload_over_the_cap_is_413_and_never_reaches_the_route(client):
    ok = client.post("/models", files={"file": ("a.txt", b"x" * 500)})
    assert ok.status_code == 202 and client.calls == [500]
    big = client.post("/models", files={"file": ("a.txt", b"x" * 200_000)})
    assert big.status_code == 413 and big.json()["error"].startswith("upload larger")
    assert client.calls == [500]


def test_inference_over_the_rate_is_429_with_retry_after(client):
    codes = [client.post("/models/m/generate").status_code for _ in range(3)]
    assert codes == [200, 200, 429]
    limited = client.post("/models/m/generate")
    assert limited.headers["retry-after"] == "1" and limited.json()["error"]
    # A made-up token is no new identity (else rotating tokens would dodge the limit)...
    made_up = client.post("/models/m/generate", headers={"authorization": "Bearer made-up"})
    assert made_up.status_code == 429
    # ...but the holders of the API key have a bucket of their own.
    keyed = client.post("/models/m/generate", headers={"authorization": "Bearer the-key"})
    assert keyed.status_code == 200


def test_chunked_upload_without_length_is_cut_off_while_streaming(client):
    """Drive the ASGI app directly so we can count how much of the body it pulled."""
    import asyncio

    chunks = [b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n\r\n',
              *[b"x" * 10_000] * 100, b"\r\n--b--\r\n"]
    pulled, sent = [], []

    async def receive():
        pulled.append(1)
        return {"type": "http.request", "body": chunks[len(pulled) - 1],
                "more_body": len(pulled) < len(chunks)}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/models", "query_string": b"",
             "headers": [(b"content-type", b"multipart/form-data; boundary=b")],
             "client": ("127.0.0.1", 1), "server": ("test", 80), "scheme": "http",
             "root_path": "", "http_version": "1.1"}
    asyncio.run(client.app(scope, receive, send))
    assert sent[0]["status"] == 413 and client.calls == []
    assert len(pulled) < 10, f"read {len(pulled)} of {len(chunks)} chunks before refusing"


# ---- body caps and slow bodies on every route with a body --------------------------------

def _scope(path: str, headers: list | None = None, method: str = "POST") -> dict:
    return {"type": "http", "method": method, "path": path, "query_string": b"",
            "headers": headers or [(b"content-type", b"application/json")],
            "client": ("127.0.0.1", 1), "server": ("test", 80), "scheme": "http",
            "root_path": "", "http_version": "1.1"}


def _drive(app, scope: dict, chunks: list[bytes], delays: list[float] | None = None,
           complete: bool = True):
    """Run the ASGI app on `chunks` (with a pause before each, if given; `complete=False`: the
    client then goes quiet without ending the body); returns the messages it sent and how
    many chunks it pulled."""
    import asyncio

    pulled, sent = [], []

    async def receive():
        if len(pulled) >= len(chunks):
            await asyncio.sleep(3600)  # a client that never sends more (or never hangs up)
        if delays:
            await asyncio.sleep(delays[len(pulled)])
        pulled.append(1)
        return {"type": "http.request", "body": chunks[len(pulled) - 1],
                "more_body": len(pulled) < len(chunks) or not complete}

    async def send(message):
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent, len(pulled)


@pytest.fixture()
def json_app():
    """Routes that take a JSON body; `calls` records every body that reached a route."""
    calls = []

    async def promote(request: Request):
        calls.append(await request.json())
        return JSONResponse({"ok": True})

    async def cancel(request: Request):  # a route that never reads its body
        calls.append("cancel")
        return JSONResponse({"ok": True})

    app = Starlette(routes=[Route("/models/m/promote", promote, methods=["POST"]),
                            Route("/models/m/generate", promote, methods=["POST"]),
                            Route("/models/m/versions/1/cancel", cancel, methods=["POST"])])
    app.add_middleware(RequestGuards, max_upload_bytes=1000, limiters={}, max_body_bytes=2000,
                       min_body_bytes_per_s=1000, body_grace_s=0.5)
    app.calls = calls
    return app


def test_json_body_within_the_cap_reaches_the_route(json_app):
    client = TestClient(json_app)
    response = client.post("/models/m/promote", json={"version": 1, "pad": "x" * 1500})
    assert response.status_code == 200 and json_app.calls[0]["version"] == 1


@pytest.mark.parametrize("path", ["/models/m/promote", "/models/m/generate",
                                  "/models/m/versions/1/cancel"])
def test_json_body_over_the_cap_is_413_and_reaches_no_route(json_app, path):
    client = TestClient(json_app)
    response = client.post(path, content=b'{"version": 1}' + b" " * 5000,
                           headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert response.json() == {"error": "request body larger than 2000 bytes", "detail": None}
    assert json_app.calls == []


def test_declared_length_over_the_cap_is_413_before_reading_anything(json_app):
    scope = _scope("/models/m/promote", [(b"content-length", b"999999")])
    sent, pulled = _drive(json_app, scope, [b"x" * 1000] * 1000)
    assert sent[0]["status"] == 413 and pulled == 0 and json_app.calls == []


def test_chunked_json_body_is_cut_off_while_streaming(json_app):
    # A body that would be valid JSON if truncated at the cap must not reach the route either.
    chunks = [b'{"version": 1}', *[b" " * 500] * 100]
    sent, pulled = _drive(json_app, _scope("/models/m/promote"), chunks)
    assert sent[0]["status"] == 413 and json_app.calls == []
    assert pulled <= 6, f"read {pulled} of {len(chunks)} chunks before refusing"


def test_a_body_slower_than_the_minimum_rate_is_408(json_app):
    import time

    started = time.monotonic()
    # Four bytes a tenth of a second apart: far below 1000 B/s once the grace period is over.
    sent, _ = _drive(json_app, _scope("/models/m/promote"), [b"{"] * 40, [0.1] * 40)
    assert sent[0]["status"] == 408 and json_app.calls == []
    assert b"slower than" in sent[1]["body"]
    assert time.monotonic() - started < 2.0


def test_a_body_that_stalls_is_408_after_the_grace_period(json_app):
    import time

    started = time.monotonic()
    sent, _ = _drive(json_app, _scope("/models/m/promote"), [b'{"vers'], complete=False)
    assert sent[0]["status"] == 408 and json_app.calls == []
    assert time.monotonic() - started < 2.0


def test_slow_upload_is_408_and_never_reaches_the_route():
    calls = []

    async def upload(request: Request):
        calls.append(len(await (await request.form())["file"].read()))
        return JSONResponse({"ok": True}, status_code=202)

    app = Starlette(routes=[Route("/models", upload, methods=["POST"])])
    app.add_middleware(RequestGuards, max_upload_bytes=10_000, limiters={},
                       min_body_bytes_per_s=1000, body_grace_s=0.3)
    head = b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n\r\n'
    scope = _scope("/models", [(b"content-type", b"multipart/form-data; boundary=b")])
    sent, _ = _drive(app, scope, [head, *[b"x"] * 50, b"\r\n--b--\r\n"], [0.0, *[0.1] * 51])
    assert sent[0]["status"] == 408 and calls == []


# ---- requests in flight per client ---------------------------------------------------------

def test_a_client_over_its_in_flight_cap_gets_429_and_others_do_not():
    import asyncio

    release = None
    entered = []

    async def generate(request: Request):
        entered.append(request.client.host)
        await release.wait()
        return JSONResponse({"ok": True})

    app = Starlette(routes=[Route("/models/m/generate", generate, methods=["POST"]),
                            Route("/models/m/predict", generate, methods=["POST"])])
    app.add_middleware(RequestGuards, max_upload_bytes=1000, limiters={}, max_in_flight=2)

    async def call(host: str, path: str = "/models/m/generate") -> int:
        sent = []
        scope = {**_scope(path), "client": (host, 1)}
        received = []

        async def receive():
            if received:
                await asyncio.sleep(3600)
            received.append(1)
            return {"type": "http.request", "body": b"{}", "more_body": False}

        async def send(message):
            sent.append(message)

        await app(scope, receive, send)
        return sent[0]["status"], dict(sent[0]["headers"])

    async def scenario():
        nonlocal release
        release = asyncio.Event()
        held = [asyncio.create_task(call("10.0.0.1")),
                asyncio.create_task(call("10.0.0.1", "/models/m/predict"))]
        while len(entered) < 2:
            await asyncio.sleep(0.01)
        over = await call("10.0.0.1")  # a third one from the same address: refused at once
        other = asyncio.create_task(call("10.0.0.2"))  # another client is not affected
        while len(entered) < 3:
            await asyncio.sleep(0.01)
        release.set()
        done = [await task for task in (*held, other)]
        after = await call("10.0.0.1")  # the slots are given back when requests end
        return over, done, after

    over, done, after = asyncio.run(scenario())
    assert over[0] == 429 and over[1][b"retry-after"] == b"1"
    assert [status for status, _ in done] == [200, 200, 200] and after[0] == 200


# ---- refusals close the connection and cost the client ------------------------------------

def test_a_refused_body_closes_the_connection_and_costs_its_client_ten_requests():
    calls = []

    async def generate(request: Request):
        calls.append(await request.body())
        return JSONResponse({"ok": True})

    limiter = RateLimiter(rate=0.001, burst=12)  # 12 requests, then practically none
    app = Starlette(routes=[Route("/models/m/generate", generate, methods=["POST"])])
    app.add_middleware(RequestGuards, max_upload_bytes=1000, limiters={"inference": limiter},
                       max_body_bytes=2000)
    client = TestClient(app)
    refused = client.post("/models/m/generate", content=b"x" * 5000)
    assert refused.status_code == 413 and refused.headers["connection"] == "close"
    # 12 tokens - 10 for the refusal: two small requests left, kept alive, then 429.
    answers = [client.post("/models/m/generate", json={}) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert all("connection" not in a.headers for a in answers)  # small bodies: keep-alive
    assert len(calls) == 2
    # A 429 whose body is large (or of unknown length) closes too: its body is not read.
    big = client.post("/models/m/generate", content=b"x" * 100_000)
    assert big.status_code == 429 and big.headers["connection"] == "close"


def test_inference_needs_the_key_only_when_the_setting_says_so():
    async def generate(request: Request):
        return JSONResponse({"ok": True})

    def client(needs_key: bool, api_key: str | None = "the-key") -> TestClient:
        app = Starlette(routes=[Route("/models/m/generate", generate, methods=["POST"]),
                                Route("/v1/completions", generate, methods=["POST"])])
        app.add_middleware(RequestGuards, max_upload_bytes=1000, limiters={}, api_key=api_key,
                           inference_needs_key=needs_key)
        return TestClient(app)

    assert client(False).post("/models/m/generate", json={}).status_code == 200  # as shipped
    assert client(True, api_key=None).post("/models/m/generate", json={}).status_code == 200
    guarded = client(True)
    for path in ("/models/m/generate", "/v1/completions"):
        refused = guarded.post(path, json={}, headers={"Authorization": "Bearer wrong"})
        assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
        allowed = guarded.post(path, json={}, headers={"Authorization": "Bearer the-key"})
        assert allowed.status_code == 200
    assert "error" in guarded.post("/v1/completions", json={}).json()

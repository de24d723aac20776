"""Same-origin writes and known host names, as ASGI middleware on a tiny Starlette app (no Ray)."""

from __future__ import annotations

import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from deployments.origin_guard import SameOriginGuard


@pytest.fixture()
def calls():
    return []


def client(calls: list, allowed_hosts: str = "localhost,127.0.0.1,::1") -> TestClient:
    async def route(request):
        calls.append(request.method)
        return JSONResponse({"ok": True})

    app = Starlette(routes=[Route("/models", route, methods=["GET", "POST", "DELETE"])])
    return TestClient(SameOriginGuard(app, allowed_hosts), base_url="http://127.0.0.1:8000")


def test_a_write_from_another_origin_is_refused_before_the_route(calls):
    response = client(calls).post("/models", headers={"Origin": "http://evil.example"})
    assert response.status_code == 403 and "cross-origin" in response.json()["error"]
    refused = client(calls).delete("/models", headers={"Origin": "null"})  # sandboxed page
    assert refused.status_code == 403 and calls == []


def test_own_pages_and_non_browser_clients_still_write(calls):
    own = client(calls).post("/models", headers={"Origin": "http://127.0.0.1:8000"})
    assert own.status_code == 200
    assert client(calls).post("/models").status_code == 200  # curl, SDKs: no Origin
    assert client(calls).get("/models", headers={"Origin": "http://evil.example"}).status_code == 200
    assert calls == ["POST", "POST", "GET"]


def test_only_configured_host_names_are_answered(calls):
    rebound = client(calls).get("/models", headers={"Host": "evil.example:8000"})
    assert rebound.status_code == 403 and "allowed_hosts" in rebound.json()["error"]
    for host in ("localhost:8000", "127.0.0.1", "[::1]:8000"):
        assert client(calls).get("/models", headers={"Host": host}).status_code == 200, host
    anywhere = client(calls, allowed_hosts="*").get("/models", headers={"Host": "evil.example"})
    assert anywhere.status_code == 200

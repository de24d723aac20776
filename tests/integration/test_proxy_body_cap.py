"""Serve's proxy refuses a declared body over the largest any route accepts, before reading it
and before the request reaches the Ingress (deployments/proxy_guard.py, loaded by the session
cluster's `ray start` as on a deployed node). How a test tells who answered: Serve's proxy
stamps `X-Request-ID` on every response of a request it routes (its RequestIdMiddleware sits
inside the guard), so the guard's answers have none and the app's all have one."""

from __future__ import annotations

import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlparse

import pytest
import requests

from deployments.proxy_guard import CAP_VARIABLE, REFUSAL_BURST, default_cap

pytestmark = pytest.mark.integration

FAR_ABOVE = 10**12  # a terabyte declared, not one byte of it sent


def declare(url: str, path: str, length: int,
            source: str | None = None) -> tuple[int, dict[str, str], bytes, bool]:
    """POST `path` declaring a body of `length` bytes and sending none (from the loopback
    address `source`, if given); returns the status, headers (lower-case names), body, and
    whether the server closed the connection after."""
    address = urlparse(url)
    with socket.create_connection((address.hostname, address.port), timeout=60,
                                  source_address=(source, 0) if source else None) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: {address.netloc}\r\nContent-Type: "
                     f"application/json\r\nContent-Length: {length}\r\n\r\n".encode())
        data = b""
        while b"\r\n\r\n" not in data:
            data += sock.recv(65536)
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.lower().split(": ", 1) for line in lines[1:])
        while len(body) < int(headers["content-length"]):
            body += sock.recv(65536)
        try:
            closed = sock.recv(1) == b""
        except TimeoutError:
            closed = False
        return int(lines[0].split()[1]), headers, body, closed


@pytest.mark.parametrize("path", ["/models", "/models/anything/generate", "/v1/completions"])
def test_a_declared_body_far_over_the_cap_is_refused_by_the_proxy(serve_app, path):
    status, headers, body, closed = declare(serve_app, path, FAR_ABOVE)
    assert status == 413, body
    answer = json.loads(body)
    assert answer["detail"] == {"limit": default_cap()} and CAP_VARIABLE in answer["error"]
    assert headers["connection"] == "close" and closed
    assert "x-request-id" not in headers  # never routed: the proxy's guard answered


def test_ordinary_requests_and_the_ingress_caps_are_untouched(serve_app):
    health = requests.get(f"{serve_app}/healthz", timeout=10)
    assert health.status_code == 200 and health.headers["x-request-id"]
    # Under the proxy's cap, over a JSON route's (limits.max_body_bytes, 2 MB): the Ingress's.
    status, headers, body, _ = declare(serve_app, "/models/anything/generate", 3 * 1024 * 1024)
    assert status == 413 and "larger than 2097152 bytes" in json.loads(body)["error"]
    assert headers["x-request-id"]


def test_a_client_refused_past_its_burst_is_held(serve_app):
    """The proxy's tarpit on the real proxy: REFUSAL_BURST + 10 oversized declarations at
    once from one address (127.0.0.3, so no other test's client is charged) are all refused
    and leave it in debt, so its next large body waits seconds before its answer. However
    slowly this machine delivers the wave, it arrives within seconds, and the debt refills at
    a token a second."""
    count = REFUSAL_BURST + 10
    with ThreadPoolExecutor(count) as pool:
        statuses = list(pool.map(lambda _: declare(serve_app, "/models", FAR_ABOVE,
                                                   source="127.0.0.3")[0], range(count)))
    assert statuses == [413] * count
    started = time.monotonic()
    assert declare(serve_app, "/models", FAR_ABOVE, source="127.0.0.3")[0] == 413
    assert time.monotonic() - started >= 3
    # Another address is not in debt: refused as ever.
    assert declare(serve_app, "/models", FAR_ABOVE, source="127.0.0.4")[0] == 413

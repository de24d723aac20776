"""What one client can make a replica wait for (issue 13, items 5 and 6), against the real app:
its requests in flight are capped without touching another client's, a registry database
held by a writer stalls only the requests that write, and the model list comes in pages."""

from __future__ import annotations

import http.client
import json
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.conftest import wait_for
from tests.integration.api import connect_from, upload, wait_status

pytestmark = pytest.mark.integration

SLOW = "bounds-slow"
CAP = 32  # serve_config.yaml's limits.max_in_flight_per_client


@pytest.fixture(scope="module")
def slow_model(serve_app, shakespeare):
    """A 3x512 char-RNN: 32 sequences of it take ~10 ms a step here, so a 10,000-character
    stream stays open for longer than this test needs."""
    response = upload(serve_app, SLOW, shakespeare[:20_000], lstm_size="512", num_layers="3",
                      max_steps="2", save_every_n="2", log_every_n="10")
    assert response.status_code == 202, response.text
    record = wait_status(serve_app, SLOW, response.json()["version"], {"ready", "failed"})
    assert record["status"] == "ready"
    return serve_app


def open_stream(url: str, source: str = "127.0.0.1") -> http.client.HTTPResponse:
    """A long generation, streamed from the address `source`, left open after its headers."""
    connection = connect_from(url, source)
    connection.request("POST", f"/models/{SLOW}/generate",
                       body=b'{"max_length": 10000, "stream": true, "seed": 1}',
                       headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    response.connection = connection  # closed with the response at the end
    return response


def close(response: http.client.HTTPResponse) -> None:
    response.close()
    response.connection.close()


def test_a_client_over_its_in_flight_cap_gets_429_and_another_client_does_not(slow_model):
    with ThreadPoolExecutor(CAP) as pool:
        held = list(pool.map(lambda _: open_stream(slow_model), range(CAP)))
    try:
        assert [r.status for r in held] == [200] * CAP
        extra = open_stream(slow_model)
        assert extra.status == 429 and extra.getheader("Retry-After")
        assert "in flight" in json.loads(extra.read())["error"]
        close(extra)
        # Another address (all of 127/8 is this machine) has a cap of its own.
        other = open_stream(slow_model, source="127.0.0.2")
        assert other.status == 200
        close(other)
        # A stream that ends gives its place back.
        close(held.pop())

        def admitted():
            response = open_stream(slow_model)
            if response.status == 200:
                held.append(response)
                return True
            close(response)
            return False

        wait_for(admitted, 20, interval=0.5, what="a place freed by a closed stream")
    finally:
        for response in held:
            close(response)


def test_a_writer_holding_the_database_stalls_no_read_or_generation(slow_model, session_storage):
    """SQLite lets one writer in at a time: hold its write lock from here, send a promote (a
    write: it waits for the lock), and the replica's other requests still answer at once."""
    lock = sqlite3.connect(session_storage / "registry.db", isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")
    promote = ThreadPoolExecutor(1).submit(
        requests.post, f"{slow_model}/models/{SLOW}/promote", json={"version": 1}, timeout=60)
    try:
        time.sleep(1)  # the promote is now waiting for the lock, in the replica
        assert not promote.done()
        for call in (lambda: requests.get(f"{slow_model}/healthz", timeout=5),
                     lambda: requests.get(f"{slow_model}/models/{SLOW}", timeout=5),
                     lambda: requests.post(f"{slow_model}/models/{SLOW}/generate",
                                           json={"max_length": 5, "seed": 2}, timeout=5)):
            started = time.perf_counter()
            assert call().status_code == 200
            assert time.perf_counter() - started < 2
        assert not promote.done()
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    assert promote.result().status_code == 200


def test_the_model_list_comes_in_bounded_pages_that_cover_every_model(slow_model, registry):
    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = requests.get(f"{slow_model}/models", params=params, timeout=10).json()
        assert len(page["models"]) <= 2
        seen += [m["name"] for m in page["models"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(set(seen)) == [m["name"] for m in registry.list_models()]
    assert pages >= 1 and SLOW in seen
    for bad in ({"limit": 0}, {"limit": 501}, {"cursor": "x" * 65}, {"cursor": "a\x00b"}):
        response = requests.get(f"{slow_model}/models", params=bad, timeout=10)
        assert response.status_code == 422 and "error" in response.json()


def test_a_models_versions_come_in_bounded_pages(slow_model, registry):
    # Versions 2-4 straight in the registry (no training job), ended at once.
    for _ in range(3):
        version = registry.create_version(SLOW).version
        registry.end_version(SLOW, version, "cancelled", "made by the paging test")
    pages, cursor = [], None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = requests.get(f"{slow_model}/models/{SLOW}", params=params, timeout=10).json()
        pages.append([v["version"] for v in page["versions"]])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == [[1, 2], [3, 4], []]
    # Every page still says what it always said of the model, and its summary.
    assert page["name"] == SLOW and page["aliases"] == {"production": 1}
    assert (page["latest_version"], page["status"]) == (4, "cancelled")
    whole = requests.get(f"{slow_model}/models/{SLOW}", timeout=10).json()
    assert [v["version"] for v in whole["versions"]] == [1, 2, 3, 4]  # 100 a page by default
    for bad in ({"limit": 0}, {"limit": 501}, {"cursor": 0}, {"cursor": 2**31},
                {"cursor": "two"}):
        response = requests.get(f"{slow_model}/models/{SLOW}", params=bad, timeout=10)
        assert response.status_code == 422 and "error" in response.json()

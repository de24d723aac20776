"""Hostile and careless requests against the real app: every one is answered with the
documented JSON error, stores nothing (no registry row, no file) and leaves the service
answering (/healthz and a generate on a ready model, within a couple of seconds)."""

from __future__ import annotations

import io
import socket
import threading
import time
import zipfile
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest
import requests

from loadtest.hostile import chunks, npy_header, npz_bomb, padded_json
from tests.integration.api import upload, wait_status
from tests.integration.protocol_models import CLASSIFIER_FORM

pytestmark = pytest.mark.integration

TEXT, DIGITS = "bounds-text", "bounds-digits"
BIG = 10**20


def npz_bytes(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def ready(serve_app, shakespeare):
    """A ready char-RNN and a ready classifier (8 x 4 inputs), trained at the same time."""
    text = upload(serve_app, TEXT, shakespeare[:30_000])
    assert text.status_code == 202, text.text
    rng = np.random.default_rng(0)
    data = npz_bytes(x=rng.random((64, 8, 4)), y=rng.integers(0, 10, 64))
    digits = requests.post(f"{serve_app}/models", data={"name": DIGITS, **CLASSIFIER_FORM},
                           files={"file": ("d.npz", data)}, timeout=60)
    assert digits.status_code == 202, digits.text
    for name, response in ((TEXT, text), (DIGITS, digits)):
        version = response.json()["version"]
        record = wait_status(serve_app, name, version, {"ready", "failed"})
        assert record["status"] == "ready", requests.get(
            f"{serve_app}/models/{name}/versions/{version}/logs").json()
    # Loaded into a Generator replica now: `assert_alive` times a warm generate, not the
    # model's first load (4.8 s once, on a busy machine).
    warm = requests.post(f"{serve_app}/models/{TEXT}/generate", json={"max_length": 1},
                         timeout=60)
    assert warm.status_code == 200, warm.text
    return serve_app


def stored(storage: Path) -> set[str]:
    """Every file under the storage root but the registry database."""
    return {str(p.relative_to(storage)) for p in storage.rglob("*")
            if p.is_file() and not p.name.startswith("registry.db")}


@pytest.fixture()
def unchanged(ready, session_storage):
    """Asserts after the test that no model, version, alias or file was added or changed."""
    models, files = requests.get(f"{ready}/models", timeout=10).json(), stored(session_storage)
    yield
    assert requests.get(f"{ready}/models", timeout=10).json() == models
    assert stored(session_storage) == files


def assert_alive(url: str) -> None:
    started = time.perf_counter()
    assert requests.get(f"{url}/healthz", timeout=2).status_code == 200
    response = requests.post(f"{url}/models/{TEXT}/generate", json={"max_length": 5, "seed": 1},
                             timeout=5)
    assert response.status_code == 200, response.text
    assert time.perf_counter() - started < 3


def assert_error(response: requests.Response, status: int, text: str = "") -> None:
    assert response.status_code == status, (response.status_code, response.text[:300])
    body = response.json()
    assert set(body) == {"error", "detail"} and text in body["error"], body


# ---- item 1: request bodies ----------------------------------------------------------------

BODY_ROUTES = [f"/models/{TEXT}/generate", "/models/nobody/generate",
               f"/models/{DIGITS}/predict", f"/models/{TEXT}/promote",
               f"/models/{TEXT}/versions/1/cancel"]


@pytest.mark.parametrize("path", BODY_ROUTES)
def test_oversize_json_bodies_are_413(ready, unchanged, path):
    # Valid JSON even when cut at the cap: the route must not run on a prefix of it.
    padded = padded_json(3 * 1024 * 1024)
    declared = requests.post(f"{ready}{path}", data=padded,
                             headers={"content-type": "application/json"}, timeout=30)
    assert_error(declared, 413, "larger than 2097152 bytes")
    chunked = requests.post(f"{ready}{path}", data=chunks(padded),
                            headers={"content-type": "application/json"}, timeout=30)
    assert_error(chunked, 413, "larger than 2097152 bytes")
    assert_alive(ready)


def _raw_request(url: str, head: bytes, body_parts: list[bytes], pause: float) -> socket.socket:
    """Send the head, then the body parts `pause` seconds apart from a thread (the server may
    answer and hang up before the last one); the socket is for reading the answer."""
    parsed = urlparse(url)
    sock = socket.create_connection((parsed.hostname, parsed.port), timeout=60)
    sock.sendall(head)

    def trickle():
        try:
            for part in body_parts:
                sock.sendall(part)
                time.sleep(pause)
        except OSError:
            pass  # answered and closed

    threading.Thread(target=trickle, daemon=True).start()
    return sock


def _read_response(sock: socket.socket) -> tuple[int, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length")), 0)
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(head.split(b" ")[1]), body


@pytest.mark.parametrize("path", [f"/models/{TEXT}/generate", f"/models/{TEXT}/promote"])
def test_a_body_that_stalls_is_cut_with_408(ready, unchanged, path):
    host = urlparse(ready).netloc.encode()
    head = (b"POST " + path.encode() + b" HTTP/1.1\r\nHost: " + host +
            b"\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n")
    started = time.perf_counter()
    sock = _raw_request(ready, head, [b'{"vers'], 0)
    try:
        assert_alive(ready)  # the stalled request holds nothing up meanwhile
        status, body = _read_response(sock)
    finally:
        sock.close()
    elapsed = time.perf_counter() - started
    assert status == 408 and b"slower than" in body, (status, body)
    assert 9 < elapsed < 30, elapsed  # body_grace_s is 10 in serve_config.yaml


def test_an_upload_that_trickles_is_cut_with_408(ready, unchanged):
    host = urlparse(ready).netloc.encode()
    preamble = (b'--b\r\nContent-Disposition: form-data; name="name"\r\n\r\ntrickle\r\n'
                b'--b\r\nContent-Disposition: form-data; name="file"; filename="t.txt"\r\n\r\n')
    head = (b"POST /models HTTP/1.1\r\nHost: " + host + b"\r\nContent-Type: multipart/form-data;"
            b" boundary=b\r\nContent-Length: 1000000\r\n\r\n")
    sock = _raw_request(ready, head, [preamble] + [b"a" * 1000] * 40, 1.0)  # 1 kB/s
    try:
        status, body = _read_response(sock)
    finally:
        sock.close()
    assert status == 408 and b"slower than" in body, (status, body)
    assert requests.get(f"{ready}/models/trickle", timeout=10).status_code == 404
    assert_alive(ready)


# ---- item 2: compressed uploads ------------------------------------------------------------

def _tiny_huge_shape() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("x.npy", npy_header((10**6, 10**6, 1)))
        archive.writestr("y.npy", npy_header((4,), "<i8") + np.arange(4).tobytes())
    return buffer.getvalue()


def _corrupt() -> bytes:
    good = npz_bytes(x=np.random.default_rng(1).random((64, 8, 4)), y=np.arange(64) % 10)
    middle = len(good) // 3
    return good[:middle] + bytes(200) + good[middle + 200:]


@pytest.mark.parametrize("case, make, message", [
    ("huge-shape", _tiny_huge_shape, "header"),  # MemoryError (a 500) before
    ("bomb", lambda: npz_bomb(250), "unpack to"),  # 200 MB unpacked, ~200 kB sent
    ("corrupt", _corrupt, "not a readable .npz"),
])
def test_hostile_npz_uploads_are_400(ready, unchanged, case, make, message):
    data = make()
    assert len(data) < 1_000_000
    name = f"npz-{case}"
    started = time.perf_counter()
    response = requests.post(f"{ready}/models", data={"name": name, **CLASSIFIER_FORM},
                             files={"file": ("x.npz", data)}, timeout=60)
    elapsed = time.perf_counter() - started
    assert_error(response, 400, message)
    assert elapsed < 5, f"{elapsed:.1f} s to refuse it"
    assert requests.get(f"{ready}/models/{name}", timeout=10).status_code == 404
    assert_alive(ready)


# ---- item 4: integers and structures -------------------------------------------------------

@pytest.mark.parametrize("method, path, body", [
    ("get", f"/models/{TEXT}/versions/{BIG}/logs", None),
    ("get", f"/models/{TEXT}/versions/1/logs?offset={BIG}", None),
    ("get", f"/models/{TEXT}/versions/{2**31}/logs", None),
    ("post", f"/models/{TEXT}/versions/{BIG}/cancel", None),
    ("post", f"/models/{TEXT}/promote", {"version": BIG}),
    ("post", f"/models/{TEXT}/generate", {"version": BIG}),
    ("post", f"/models/{TEXT}/generate", {"seed": BIG}),
    ("post", f"/models/{TEXT}/generate", {"top_k": BIG}),
    ("post", f"/models/{TEXT}/generate", b'{"temperature": 1e400}'),
    ("post", f"/models/{TEXT}/generate", b'{"temperature": NaN}'),
    ("post", f"/models/{DIGITS}/predict?version={BIG}", {"data": [0.5] * 32}),
])
def test_integers_beyond_the_columns_are_422(ready, unchanged, method, path, body):
    if isinstance(body, bytes):  # what the JSON encoder will not write
        response = requests.request(method, f"{ready}{path}", data=body, timeout=30,
                                    headers={"content-type": "application/json"})
    else:
        response = requests.request(method, f"{ready}{path}", json=body, timeout=30)
    assert_error(response, 422, "invalid request")
    assert_alive(ready)


def test_the_largest_column_value_is_a_plain_404(ready, unchanged):
    response = requests.get(f"{ready}/models/{TEXT}/versions/{2**31 - 1}/logs", timeout=30)
    assert_error(response, 404)
    response = requests.post(f"{ready}/models/{TEXT}/promote", json={"version": 2**31 - 1},
                             timeout=30)
    assert response.status_code in (404, 409) and response.json()["error"]


def _flat(first: str) -> bytes:
    return ('{"data": [' + ",".join([first] + ["0.5"] * 31) + "]}").encode()


@pytest.mark.parametrize("raw, message", [
    (_flat("1" + "0" * 400), "finite"),  # OverflowError converting to float64 before
    (_flat("1e400"), "finite"),
    (_flat("-Infinity"), "finite"),
    (_flat("NaN"), "finite"),
    (_flat("9" * 5000), "finite"),  # past Python's int-string limit
    (b"[" * 200_000 + b"]" * 200_000, "nested"),  # RecursionError before
    (b'{"data": ' + b"[" * 60 + b"0.5" + b"]" * 60 + b"}", "nested"),
])
def test_predict_numbers_and_nesting_are_400(ready, unchanged, raw, message):
    response = requests.post(f"{ready}/models/{DIGITS}/predict", data=raw,
                             headers={"content-type": "application/json"}, timeout=30)
    assert_error(response, 400, message)
    assert_alive(ready)


def test_generate_with_deep_nesting_is_a_json_4xx(ready, unchanged):
    raw = b'{"prime": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"
    response = requests.post(f"{ready}/models/{TEXT}/generate", data=raw,
                             headers={"content-type": "application/json"}, timeout=30)
    assert 400 <= response.status_code < 500 and response.json()["error"], response.text[:300]


def test_predict_still_answers_a_good_body(ready):
    response = requests.post(f"{ready}/models/{DIGITS}/predict", data=_flat("0.25"),
                             headers={"content-type": "application/json"}, timeout=30)
    assert response.status_code == 200 and len(response.json()["y"]) == 10, response.text

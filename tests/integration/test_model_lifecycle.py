"""What is served is what the registry says: a model deleted and re-created under the same name
(so its version number is 1 again) is served with the new weights by a replica that had the old
ones loaded. And what the registry shows is public: no server paths, no tracebacks."""

from __future__ import annotations

import pytest
import requests

from tests.integration.api import generate, upload, wait_status

pytestmark = pytest.mark.integration


def train(url: str, text: str) -> None:
    response = upload(url, "phoenix", text)
    assert response.status_code == 202, response.text
    assert response.json()["version"] == 1
    wait_status(url, "phoenix", 1, {"ready"})


def test_a_recreated_model_is_served_with_its_new_weights(serve_app, shakespeare, registry):
    train(serve_app, shakespeare[:20_000])
    old = registry.get_version("phoenix", 1)
    before = generate(serve_app, "phoenix", prime="A", max_length=200, seed=3)
    assert before.status_code == 200, before.text  # the replica now holds the old weights

    assert requests.delete(f"{serve_app}/models/phoenix", timeout=30).ok
    digits = "".join(f"{n * n % 1000:03d} " for n in range(5000))  # a text of digits and spaces
    train(serve_app, digits)
    new = registry.get_version("phoenix", 1)
    assert new.model_id != old.model_id

    after = generate(serve_app, "phoenix", prime="1", max_length=200, seed=3)
    assert after.status_code == 200, after.text
    generated = after.json()["generated"]
    assert len(generated) == 200 and set(generated) <= set("0123456789 "), generated


def test_read_routes_show_no_server_paths_or_tracebacks(serve_app, session_storage, shakespeare):
    broken = upload(serve_app, "phoenix-broken", shakespeare[:20_000], init_from="phoenix:1")
    assert broken.status_code == 202, broken.text  # phoenix:1 is now a model of digits
    wait_status(serve_app, "phoenix-broken", 1, {"failed"})
    bodies = [requests.get(f"{serve_app}{route}", timeout=30).text for route in (
        "/models", "/models/phoenix", "/models/phoenix/versions/1/logs",
        "/models/phoenix-broken", "/models/phoenix-broken/versions/1/logs")]
    for body in bodies:
        assert str(session_storage) not in body and "uploads/" not in body, body
        assert "Traceback" not in body and 'File "' not in body, body
    assert "outside the model's vocabulary" in bodies[-1]  # the reason is still there

"""What is served is what the registry says: a model deleted and re-created under the same name
(so its version number is 1 again) is served with the new weights by a replica that had the old
ones loaded. And what the registry shows is public: no server paths, no tracebacks."""

from __future__ import annotations

import pytest
import requests

from tests.integration.api import recreate_and_generate, upload, wait_status

pytestmark = pytest.mark.integration


def test_a_recreated_model_is_served_with_its_new_weights(serve_app, shakespeare):
    # (That the re-created version gets a new model id is tests/unit/test_registry.py's.)
    before, after = recreate_and_generate(serve_app, "phoenix", shakespeare[:20_000])
    assert not set(before) <= set("0123456789 "), before
    assert len(after) == 200 and set(after) <= set("0123456789 "), after


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

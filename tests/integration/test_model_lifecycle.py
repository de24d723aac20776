"""What is served is what the registry says: a model deleted and re-created under the same name
(so its version number is 1 again) is served with the new weights by a replica that had the old
ones loaded."""

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

"""Cross-site requests against the real app: a page on another origin cannot upload or delete,
and a rebound host name is not answered; nothing is stored. (The app's own page uploading in a
real browser is tests/integration/test_web_page.py.)"""

from __future__ import annotations

import pytest
import requests

from tests.integration.api import TRAIN_FORM

pytestmark = pytest.mark.integration


def test_a_cross_origin_upload_is_refused_and_stores_nothing(serve_app, shakespeare, registry):
    before = requests.get(f"{serve_app}/models", timeout=10).json()
    response = requests.post(f"{serve_app}/models",
                             data={"name": "forged", **TRAIN_FORM},
                             files={"file": ("c.txt", shakespeare[:20_000].encode())},
                             headers={"Origin": "http://evil.example"}, timeout=30)
    assert response.status_code == 403 and "cross-origin" in response.json()["error"]
    assert requests.get(f"{serve_app}/models", timeout=10).json() == before
    assert "forged" not in registry.artifacts.list("uploads")


def test_a_rebound_host_name_gets_no_answer(serve_app):
    port = serve_app.rsplit(":", 1)[1]
    response = requests.get(f"{serve_app}/models", headers={"Host": f"evil.example:{port}"},
                            timeout=10)
    assert response.status_code == 403 and response.json()["error"]

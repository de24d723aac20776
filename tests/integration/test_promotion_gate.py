"""The promotion gate compares versions on the same data: production's held-out text.

A version trained on another text with a much lower loss on its *own* held-out tail must not
take production (the old gate compared those numbers); a genuinely better retrain on the same
text must."""

from __future__ import annotations

import pytest
import requests

from tests.conftest import wait_for
from tests.integration.api import upload, wait_status

pytestmark = pytest.mark.integration


def logs(url: str, version: int) -> list[str]:
    return requests.get(f"{url}/models/crown/versions/{version}/logs", timeout=10).json()["lines"]


def train(url: str, text: str, **form) -> int:
    """Upload, wait until ready and until the gate has decided (it runs after publishing)."""
    response = upload(url, "crown", text, **form)
    assert response.status_code == 202, response.text
    version = response.json()["version"]
    wait_status(url, "crown", version, {"ready"})
    wait_for(lambda: any(line.startswith((f"promoted version {version}",
                                          f"version {version} stays a candidate"))
                         for line in logs(url, version)), 120, what="the promotion decision")
    return version


def test_a_hijack_stays_a_candidate_and_a_better_retrain_takes_production(serve_app, shakespeare,
                                                                          registry):
    text = shakespeare[:20_000]
    first = train(serve_app, text)
    assert registry.get_alias("crown", "production") == first

    # Every character of the text, over and over: the same vocabulary, a trivially
    # predictable tail, and nothing like the play.
    charset = "".join(sorted(set(text)))
    hijack = train(serve_app, charset * (len(text) // len(charset)))
    own = registry.get_version("crown", hijack).metrics["val_loss"]
    assert own < registry.get_version("crown", first).metrics["val_loss"]  # looks better...
    assert registry.get_alias("crown", "production") == first  # ...and is not
    assert any(f"stays a candidate: val_loss on version {first}'s held-out data" in line
               for line in logs(serve_app, hijack)), logs(serve_app, hijack)

    better = train(serve_app, text, max_steps="160")
    assert registry.get_alias("crown", "production") == better
    assert any(line.startswith(f"promoted version {better} to production: val_loss on version "
                               f"{first}'s held-out data") for line in logs(serve_app, better))

"""HTTP helpers shared by the tests that drive the Serve app's API."""

from __future__ import annotations

import http.client
from urllib.parse import urlparse

import requests

from tests.conftest import wait_for


def connect_from(url: str, source: str, timeout: float = 60) -> http.client.HTTPConnection:
    """A connection to the app at `url` from the address `source`: all of 127/8 is this
    machine, and each address is a client of its own to the rate and in-flight limits."""
    parts = urlparse(url)
    return http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout,
                                      source_address=(source, 0))


# A model small enough to train in well under a minute on this 2-core machine.
TRAIN_FORM = {"max_steps": "40", "lstm_size": "48", "num_layers": "2", "num_seqs": "16",
              "num_steps": "32", "save_every_n": "20", "log_every_n": "10",
              "learning_rate": "0.01"}


def upload(url: str, name: str, text: str, headers: dict | None = None,
           **form) -> requests.Response:
    return requests.post(f"{url}/models", data={"name": name, **TRAIN_FORM, **form},
                         files={"file": ("corpus.txt", text.encode("utf-8"), "text/plain")},
                         headers=headers, timeout=60)


def wait_status(url: str, name: str, version: int, wanted: set[str], timeout: float = 400) -> dict:
    def current():
        # The page of that one version (a cursor is the version before, none for the first).
        after = {"cursor": version - 1} if version > 1 else {}
        body = requests.get(f"{url}/models/{name}", params={"limit": 1, **after},
                            timeout=10).json()
        [record] = body["versions"]
        return record if record["status"] in wanted else None

    return wait_for(current, timeout, interval=1, what=f"{name} v{version} to be {wanted}")


def generate(url: str, name: str, **body) -> requests.Response:
    return requests.post(f"{url}/models/{name}/generate", json=body, timeout=120)


def metric_total(metrics_url: str, name: str, **labels: str) -> float:
    """Sum of the samples of `ray_<name>` on Ray's metrics port whose labels include `labels`."""
    wanted = [f'{key}="{value}"' for key, value in labels.items()]
    total = 0.0
    for line in requests.get(metrics_url, timeout=10).text.splitlines():
        if line.startswith(f"ray_{name}{{") and all(label in line for label in wanted):
            total += float(line.rsplit(" ", 1)[1])
    return total


DIGITS_TEXT = "".join(f"{n * n % 1000:03d} " for n in range(5000))  # digits and spaces only


def recreate_and_generate(url: str, name: str, first_text: str,
                          headers: dict | None = None) -> tuple[str, str]:
    """Train `name` on `first_text` and generate from it (a replica now holds those weights),
    delete it, train it again (version 1 again) on DIGITS_TEXT and generate: returns both
    generations."""
    texts = []
    for text, prime in ((first_text, "A"), (DIGITS_TEXT, "1")):
        response = upload(url, name, text, headers=headers)
        assert response.status_code == 202, response.text
        assert response.json()["version"] == 1
        wait_status(url, name, 1, {"ready"})
        generated = generate(url, name, prime=prime, max_length=200, seed=3)
        assert generated.status_code == 200, generated.text
        texts.append(generated.json()["generated"])
        if len(texts) == 1:
            assert requests.delete(f"{url}/models/{name}", headers=headers, timeout=30).ok
    return texts[0], texts[1]

"""Locust load test of the rnnserve HTTP API.

    locust -f loadtest/locustfile.py --headless -u 32 -r 8 -t 60s --host http://127.0.0.1:8000

By default the users target every ready model that `GET /models` lists (char-RNNs for
generation, classifiers for prediction); `RNNSERVE_MODELS=a,b` narrows that. Streamed
generation (native, and OpenAI's `/v1/completions` as Server-Sent Events) reads each stream to
its end and reports the time to the first chunk as its own entry. Name user classes after the
file to run only those (`... locustfile.py StreamUser` or `OpenAIStreamUser`).

The users are locust's `FastHttpUser` (geventhttpclient): locust runs on the machine it
measures, and it costs several times less CPU per request than the `requests`-based HttpUser.
"""

from __future__ import annotations

import json
import os
import random
import time

from locust import FastHttpUser, between, events, task

GENERATE_LENGTH = int(os.environ.get("RNNSERVE_LOAD_LENGTH", "200"))
_models: dict[str, list[str]] | None = None


def ready_models(client) -> dict[str, list[str]]:
    """{kind: [names]} of the ready models, read once per locust process."""
    global _models
    if _models is None:
        wanted = {m for m in os.environ.get("RNNSERVE_MODELS", "").split(",") if m}
        listed = client.get("/models", name="/models").json()["models"]
        _models = {}
        for model in listed:
            if model.get("production_version") or model.get("status") == "ready":
                if not wanted or model["name"] in wanted:
                    _models.setdefault(model["kind"], []).append(model["name"])
    return _models


def pick_model(client, kind: str) -> str | None:
    """A random ready model of this kind, or None (the user then idles this turn)."""
    names = ready_models(client).get(kind)
    return random.choice(names) if names else None


def post_generate(client, stream: bool):
    """The generate request both generate users send, or None when no model is ready yet
    (the user then idles this turn)."""
    name = pick_model(client, "charrnn")
    if name is None:
        return None
    body = {"prime": "The ", "max_length": GENERATE_LENGTH, "temperature": 0.8, "stream": stream}
    label = "/models/[name]/generate" + (" stream" if stream else "")
    return client.post(f"/models/{name}/generate", name=label, json=body, stream=stream,
                       catch_response=True)


def read_stream(response, started: float) -> tuple[float | None, str]:
    """(ms from `started` to the first byte of the body or None, the whole body): the first
    byte is read alone so its time is exact, the rest in one read."""
    first = next(response.iter_content(chunk_size=1, decode_content=False), b"")
    first_ms = (time.perf_counter() - started) * 1000 if first else None
    rest = b"".join(response.iter_content(chunk_size=1 << 20, decode_content=False))
    return first_ms, (first + rest).decode("utf-8", errors="replace")


def report_first_chunk(name: str, first_chunk_ms: float | None) -> None:
    if first_chunk_ms is not None:
        events.request.fire(request_type="TTFC", name=name, response_time=first_chunk_ms,
                            response_length=0, exception=None, context={})


class GenerateUser(FastHttpUser):
    """Plain generation: one JSON answer per request."""

    wait_time = between(0.1, 0.5)
    weight = 3

    @task
    def generate(self):
        request = post_generate(self.client, stream=False)
        if request is None:
            return
        with request as response:
            if response.status_code != 200:
                response.failure(f"{response.status_code}: {response.text[:200]}")
            elif len(response.json()["generated"]) != GENERATE_LENGTH:
                response.failure("wrong length")


class StreamUser(FastHttpUser):
    """Streamed generation, read to the end; time to first chunk reported separately."""

    wait_time = between(0.1, 0.5)
    weight = 3

    @task
    def stream(self):
        started = time.perf_counter()
        request = post_generate(self.client, stream=True)
        if request is None:
            return
        with request as response:
            if response.status_code != 200:
                response.failure(f"{response.status_code}")
                return
            first_chunk_ms, text = read_stream(response, started)
            if len(text) != GENERATE_LENGTH:
                response.failure(f"stream ended after {len(text)} characters")
        report_first_chunk("stream first chunk", first_chunk_ms)


class OpenAIStreamUser(FastHttpUser):
    """OpenAI completions streamed as Server-Sent Events (`/v1/completions`, `stream: true`),
    read to `data: [DONE]`; the same engine as StreamUser behind another protocol."""

    wait_time = between(0.1, 0.5)
    weight = 2

    @task
    def complete(self):
        name = pick_model(self.client, "charrnn")
        if name is None:
            return
        started, received, done = time.perf_counter(), 0, False
        body = {"model": name, "prompt": "The ", "max_tokens": GENERATE_LENGTH,
                "temperature": 0.8, "stream": True}
        with self.client.post("/v1/completions", name="/v1/completions stream", json=body,
                              stream=True, catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"{response.status_code}")
                return
            first_chunk_ms, events_text = read_stream(response, started)
            for line in events_text.splitlines():
                if not line.startswith("data: "):
                    continue
                if line == "data: [DONE]":
                    done = True
                    break
                choices = json.loads(line[6:]).get("choices") or [{}]
                received += len(choices[0].get("text", ""))
            if not done or received != GENERATE_LENGTH:
                response.failure(f"stream ended after {received} characters (done: {done})")
        report_first_chunk("/v1 stream first chunk", first_chunk_ms)


class PredictUser(FastHttpUser):
    """Classifier predictions with one 28x28 example of random pixels."""

    wait_time = between(0.05, 0.2)
    weight = 2

    @task
    def predict(self):
        name = pick_model(self.client, "lstm-classifier")
        if name is None:
            return
        pixels = [random.random() for _ in range(784)]
        with self.client.post(f"/models/{name}/predict",
                              name="/models/[name]/predict", json={"data": pixels},
                              catch_response=True) as response:
            if response.status_code != 200 or len(response.json().get("y", [])) == 0:
                response.failure(f"{response.status_code}")


class BrowseUser(FastHttpUser):
    """What a person's page does: list models, open one, tail its training log."""

    wait_time = between(0.5, 2)
    weight = 1

    @task
    def browse(self):
        models = self.client.get("/models", name="/models").json()["models"]
        if not models:
            return
        model = random.choice(models)
        detail = self.client.get(f"/models/{model['name']}", name="/models/[name]").json()
        version = detail["latest_version"]
        self.client.get(f"/models/{model['name']}/versions/{version}/logs?offset=0",
                        name="/models/[name]/versions/[v]/logs")

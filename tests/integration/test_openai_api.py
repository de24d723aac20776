"""OpenAI completions against the real app, driven by the official `openai` client."""

from __future__ import annotations

import http.client
import json
from concurrent.futures import ThreadPoolExecutor

import httpx2
import openai
import pytest
import requests

from tests.conftest import wait_for
from tests.integration.api import connect_from, generate, metric_total
from tests.integration.protocol_models import ready_charrnn, ready_classifier, ready_copies

pytestmark = pytest.mark.integration

BARD, DIGITS = "openai-bard", "openai-digits"
IN_FLIGHT_CAP = 32  # serve_config.yaml's limits.max_in_flight_per_client


def client_for(url: str, source: str = "127.0.0.1") -> openai.OpenAI:
    """No retries (the tests look at each answer); `source` picks the client's address,
    which owns the rate and in-flight buckets (all of 127/8 is this machine)."""
    transport = httpx2.HTTPTransport(local_address=source)
    return openai.OpenAI(base_url=f"{url}/v1", api_key="not-checked", max_retries=0,
                         http_client=openai.DefaultHttpxClient(transport=transport))


@pytest.fixture(scope="module")
def url(serve_app, shakespeare):
    ready_charrnn(serve_app, BARD, shakespeare[:30_000])
    ready_classifier(serve_app, DIGITS)
    return serve_app


@pytest.fixture(scope="module")
def client(url):
    return client_for(url)


def streamed(client, **params) -> tuple[dict[int, str], dict[int, str], list]:
    """(text per choice, finish_reason per choice, every chunk) of a streamed completion."""
    texts, reasons, chunks = {}, {}, []
    for chunk in client.completions.create(stream=True, **params):
        chunks.append(chunk)
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + choice.text
            if choice.finish_reason:
                reasons[choice.index] = choice.finish_reason
    return texts, reasons, chunks


def test_a_completion_is_the_native_generation(client, url):
    completion = client.completions.create(model=BARD, prompt="ROMEO:", max_tokens=60,
                                           temperature=0.8, seed=7, user="ignored")
    assert completion.object == "text_completion" and completion.model == f"{BARD}:1"
    assert completion.id.startswith("cmpl-") and completion.created > 0
    [choice] = completion.choices
    assert choice.index == 0 and choice.finish_reason == "length" and len(choice.text) == 60
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens,
            completion.usage.total_tokens) == (6, 60, 66)
    native = generate(url, BARD, prime="ROMEO:", max_length=60, temperature=0.8, seed=7).json()
    assert native["generated"] == choice.text  # one engine underneath
    versioned = client.completions.create(model=f"{BARD}:1", prompt="ROMEO:", max_tokens=60,
                                          temperature=0.8, seed=7)
    assert versioned.choices[0].text == choice.text


def test_a_stream_is_the_whole_text_in_chunks(client):
    # Long enough to outlast several 50 ms stream intervals (the compiled runner makes this
    # small model's hundreds of characters within one engine hop).
    params = dict(model=BARD, prompt="KING", max_tokens=10_000, seed=3)
    whole = client.completions.create(**params).choices[0].text
    texts, reasons, chunks = streamed(client, stream_options={"include_usage": True}, **params)
    assert texts == {0: whole} and reasons == {0: "length"}
    # The first character goes out at once and the rest after it (at most one chunk per
    # stream_interval_s): even a generation faster than that interval comes in two pieces.
    text_chunks = [c for c in chunks if c.choices and c.choices[0].text]
    assert len(text_chunks) > 1, "the text arrived in one piece, not streamed"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 10_000
    assert all(c.usage is None for c in chunks[:-1])


def test_n_samples_count_the_seed_up_and_prompts_answer_in_turn(client):
    many = client.completions.create(model=BARD, prompt="A", max_tokens=40, n=3, seed=10)
    assert [c.index for c in many.choices] == [0, 1, 2]
    for offset, choice in enumerate(many.choices):
        alone = client.completions.create(model=BARD, prompt="A", max_tokens=40,
                                          seed=10 + offset)
        assert choice.text == alone.choices[0].text
    assert len({c.text for c in many.choices}) == 3
    assert many.usage.completion_tokens == 120 and many.usage.prompt_tokens == 1
    prompts = client.completions.create(model=BARD, prompt=["To be", "Or not"], max_tokens=20,
                                        n=2, seed=1, echo=True)
    assert [c.text[:5] for c in prompts.choices] == ["To be", "To be", "Or no", "Or no"]
    texts, reasons, _ = streamed(client, model=BARD, prompt="A", max_tokens=40, n=3, seed=10)
    assert texts == {c.index: c.text for c in many.choices}
    assert reasons == {0: "length", 1: "length", 2: "length"}


def test_a_stop_string_ends_the_text_before_it(client):
    params = dict(model=BARD, prompt="First", max_tokens=300, seed=21)
    free = client.completions.create(**params).choices[0].text
    stop = next(free[i:i + 2] for i in range(40, 200) if free[i:i + 2].strip())
    expected = free[:free.index(stop)]
    stopped = client.completions.create(stop=[stop, "\u2603\u2603"], **params)
    assert stopped.choices[0].text == expected
    assert stopped.choices[0].finish_reason == "stop"
    assert stopped.usage.completion_tokens == len(expected)
    texts, reasons, _ = streamed(client, stop=stop, **params)
    assert texts == {0: expected} and reasons == {0: "stop"}


def test_logprobs_of_each_character_and_its_alternatives(client):
    completion = client.completions.create(model=BARD, prompt="The", max_tokens=30, seed=4,
                                           logprobs=3, echo=True)
    [choice] = completion.choices
    logprobs = choice.logprobs
    assert choice.text.startswith("The") and "".join(logprobs.tokens) == choice.text
    # Every echoed prompt character but the first has its log-probability, as OpenAI answers.
    assert logprobs.token_logprobs[0] is None and logprobs.top_logprobs[0] is None
    assert logprobs.text_offset == list(range(len(choice.text)))
    for token, chosen, top in zip(logprobs.tokens[1:], logprobs.token_logprobs[1:],
                                  logprobs.top_logprobs[1:], strict=True):
        assert chosen <= 0 and len(top) == 3 and max(top.values()) >= chosen - 1e-9
        if token in top:
            assert top[token] == pytest.approx(chosen)
    _, _, chunks = streamed(client, model=BARD, prompt="The", max_tokens=30, seed=4,
                            logprobs=3, echo=True)
    blocks = [ch.logprobs for c in chunks for ch in c.choices if ch.logprobs]
    assert [t for b in blocks for t in b.tokens] == logprobs.tokens
    assert [lp for b in blocks for lp in b.token_logprobs] == pytest.approx(
        [None, *logprobs.token_logprobs[1:]])


def test_models_list_the_ready_char_rnn_models(client, url):
    ids = {model.id for model in client.models.list()}
    assert {BARD, f"{BARD}:1"} <= ids and DIGITS not in ids
    assert client.models.retrieve(BARD).id == BARD
    assert client.models.retrieve(f"{BARD}:1").owned_by == "rnnserve"
    # The same path answers a TF Serving client for a classifier.
    status = requests.get(f"{url}/v1/models/{DIGITS}", timeout=10).json()
    assert status["model_version_status"][0]["state"] == "AVAILABLE"


def test_the_models_list_holds_the_newest_ready_versions_up_to_its_limit(client, url, registry):
    with ready_copies(registry, BARD, "openai-many", 3) as many:
        listed = requests.get(f"{url}/v1/models", params={"limit": 2}, timeout=10).json()
        assert [m["id"] for m in listed["data"]] == [many, f"{many}:2", f"{many}:3"]
        assert listed["has_more"] is True and listed["object"] == "list"
        ids = {m["id"] for m in requests.get(f"{url}/v1/models", timeout=10).json()["data"]}
        assert {many, f"{many}:1", f"{many}:3", BARD, f"{BARD}:1"} <= ids
        assert {m.id for m in client.models.list()} == ids  # the client reads it as before
    for limit in (0, 501):
        refused = requests.get(f"{url}/v1/models", params={"limit": limit}, timeout=10)
        assert refused.status_code == 400 and refused.json()["error"]["param"] == "query.limit"


def test_errors_are_the_clients_typed_exceptions(client, url):
    with pytest.raises(openai.NotFoundError) as missing:
        client.completions.create(model="no-such-model", prompt="x")
    assert missing.value.body["code"] == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")
    with pytest.raises(openai.BadRequestError) as bad:
        client.completions.create(model=BARD, prompt="x", temperature=-1)
    assert bad.value.body["param"] == "temperature"
    with pytest.raises(openai.BadRequestError) as too_many:
        client.completions.create(model=BARD, prompt="x", max_tokens=10_001)
    assert too_many.value.body["param"] == "max_tokens"
    with pytest.raises(openai.BadRequestError):  # a classifier is no completion model
        client.completions.create(model=DIGITS, prompt="x")
    with pytest.raises(openai.BadRequestError) as long_prompt:  # limits.max_prime_chars
        client.completions.create(model=BARD, prompt="x" * 2001)
    # The limit is the native route's, named as the client sent it.
    assert long_prompt.value.body["param"] == "prompt"
    assert long_prompt.value.body["message"].startswith("prompt is longer than 2000")
    too_large = requests.post(f"{url}/v1/completions", data=b"x" * (3 * 1024 * 1024),
                              headers={"content-type": "application/json"}, timeout=30)
    assert too_large.status_code == 413 and too_large.json()["error"]["message"]


def test_a_client_that_leaves_a_stream_frees_every_slot_of_it(url, ray_cluster):
    """Hang up an `n=3` stream after its first event: the engine retires all three sequences
    as `cancelled` at a step boundary instead of sampling 10,000 characters each for nobody.
    (With logprobs, as `_open_stream`'s, so that they are still being sampled then.)"""
    def cancelled() -> float:
        return metric_total(ray_cluster["metrics"], "rnnserve_requests_finished_total",
                            model=f"{BARD}:1", reason="cancelled")

    before = cancelled()
    response = requests.post(f"{url}/v1/completions", stream=True, timeout=120,
                             json={"model": BARD, "prompt": "KING", "max_tokens": 10_000,
                                   "n": 3, "stream": True, "logprobs": 5})
    assert response.status_code == 200
    assert next(response.iter_lines()).startswith(b"data: {")
    response.close()  # unread body: the connection is dropped
    wait_for(lambda: cancelled() >= before + 3, 60, interval=1,
             what="the dropped stream's three sequences to be counted as cancelled")


def _open_stream(url: str, source: str) -> http.client.HTTPResponse:
    """A stream of 10,000 characters from `source`, left unread. With logprobs, so that it
    stays open for the test's whole window: every character then takes the engine's
    per-character path, and its events carry five alternatives each (a plain stream of this
    small model once ended before the 33rd request arrived, on a slow machine, and freed its
    place)."""
    connection = connect_from(url, source)
    connection.request("POST", "/v1/completions", headers={"Content-Type": "application/json"},
                       body=json.dumps({"model": BARD, "prompt": "A", "max_tokens": 10_000,
                                        "stream": True, "logprobs": 5}))
    response = connection.getresponse()
    response.connection = connection
    return response


def test_a_client_over_its_in_flight_cap_gets_a_rate_limit_error(url):
    """The native route's limits hold for /v1 (one bucket per client for both): past its
    streams in flight, the openai client raises RateLimitError with the server's Retry-After."""
    source = "127.0.0.5"
    with ThreadPoolExecutor(IN_FLIGHT_CAP) as pool:
        held = list(pool.map(lambda _: _open_stream(url, source), range(IN_FLIGHT_CAP)))
    try:
        assert [r.status for r in held] == [200] * IN_FLIGHT_CAP
        with pytest.raises(openai.RateLimitError) as limited:
            client_for(url, source).completions.create(model=BARD, prompt="x", max_tokens=5)
        assert limited.value.response.headers["retry-after"]
        assert "in flight" in limited.value.body["message"]
    finally:
        for response in held:
            response.close()
            response.connection.close()

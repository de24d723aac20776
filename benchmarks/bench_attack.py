"""Generate latency on a ready model while another client attacks the app (issue 13):
oversized JSON bodies (declared and chunked), upload bombs and oversized uploads, in a loop.

    python -m benchmarks.bench_attack        # make bench-attack

Starts the app when none answers on --host (as `make loadtest` does), with serve_config.yaml's
per-client limits (`--limits off`: none, so every attack request is read and refused by its
size check rather than by the cheaper 429). The attackers are separate processes from another
address (127.0.0.2). Idle and attacked phases alternate --rounds times; prints the p50/p95 of a
50-character generate in each, each round's ratio and their median (target: p50 within 2x of
idle); writes benchmarks/results/attack-limits-*.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import time
from collections import Counter
from functools import partial

import requests
from requests.adapters import HTTPAdapter
from urllib3 import encode_multipart_formdata

from benchmarks import RESULTS
from deployments.serve_config import rnnserve_app, shipped_config
from loadtest.hostile import chunks, npz_bomb, padded_json
from loadtest.run_load import LOAD_LIMITS, ensure_app, ensure_model

SHIPPED_LIMITS = rnnserve_app(shipped_config())["args"]["limits"]
BODY_CAP = SHIPPED_LIMITS["max_body_bytes"]  # what the attack's bodies are sized against
UPLOAD_CAP = SHIPPED_LIMITS["max_upload_bytes"]
KINDS = ("declared body", "chunked body", "npz bomb", "oversized upload")


def latencies(url: str, model: str, count: int, per_s: float = 20) -> list[float]:
    """Seconds per 50-character generate, sent one at a time at most `per_s` a second (a user
    within the shipped rate limit of 50/s); raises on any non-200."""
    seconds = []
    for seed in range(count):
        started = time.perf_counter()
        response = requests.post(f"{url}/models/{model}/generate",
                                 json={"max_length": 50, "seed": seed}, timeout=30)
        response.raise_for_status()
        seconds.append(time.perf_counter() - started)
        time.sleep(max(0.0, 1 / per_s - seconds[-1]))
    return seconds


class FromAddress(HTTPAdapter):
    """Connections from another loopback address: to the app, another client."""

    def __init__(self, address: str):
        self.address = address
        super().__init__()

    def init_poolmanager(self, *args, **kwargs):
        kwargs["source_address"] = (self.address, 0)
        super().init_poolmanager(*args, **kwargs)


def sender(session: requests.Session, url: str, model: str, kind: str):
    """A function sending one attack request of `kind`, its body encoded once: what the
    attacker spends per request is then a send, not a Python re-encoding."""
    generate = f"{url}/models/{model}/generate"
    json_type = {"content-type": "application/json"}
    if kind == "declared body":
        return partial(session.post, generate, data=padded_json(3 * BODY_CAP),
                       headers=json_type, timeout=30)
    if kind == "chunked body":
        body = padded_json(3 * BODY_CAP)

        def send_chunked():
            return session.post(generate, data=chunks(body), headers=json_type, timeout=30)
        return send_chunked
    name, upload_kind, payload = (
        ("attack-bomb", "lstm-classifier", npz_bomb(250)) if kind == "npz bomb"  # 200 MB unpacked
        else ("attack-upload", "charrnn", b"a" * (UPLOAD_CAP + 1024 * 1024)))
    body, content_type = encode_multipart_formdata(
        {"name": name, "kind": upload_kind, "file": ("x", payload)})
    return partial(session.post, f"{url}/models", data=body,
                   headers={"content-type": content_type}, timeout=30)


def attack(url: str, model: str, kind: str, stop, answers) -> None:
    """One attacker process: `kind` in a loop from 127.0.0.2 until `stop`; its answers (status
    counts, 0 for a connection the server cut after answering) go to `answers`. A process of
    its own at the lowest CPU priority: on this machine it shares the server's cores, and what
    is measured is what the attack costs the server, not what it costs the attacker (whose CPU
    would be elsewhere)."""
    os.nice(19)
    session = requests.Session()
    session.mount("http://", FromAddress("127.0.0.2"))
    send = sender(session, url, model, kind)
    counts: Counter[int] = Counter()
    while not stop.is_set():
        try:
            counts[send().status_code] += 1
        except requests.RequestException:
            counts[0] += 1
    answers.put((kind, dict(counts)))


def summary(seconds: list[float]) -> dict:
    ordered = sorted(seconds)
    return {"requests": len(seconds), "p50_ms": round(1000 * statistics.median(ordered), 2),
            "p95_ms": round(1000 * ordered[int(0.95 * (len(ordered) - 1))], 2)}


def under_attack(url: str, model: str, requests_count: int) -> tuple[dict, dict]:
    """(the latency summary, each attacker's answers) of one phase with the attackers on."""
    context = multiprocessing.get_context("spawn")
    stop, queue = context.Event(), context.Queue()
    attackers = [context.Process(target=attack, args=(url, model, kind, stop, queue))
                 for kind in KINDS]
    for attacker in attackers:
        attacker.start()
    time.sleep(3)
    attacked = summary(latencies(url, model, requests_count))
    stop.set()
    answers = dict(queue.get(timeout=60) for _ in attackers)
    for attacker in attackers:
        attacker.join(30)
    return attacked, answers


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="http://127.0.0.1:8000")
    parser.add_argument("--requests", type=int, default=150, help="generates per phase")
    parser.add_argument("--rounds", type=int, default=3,
                        help="idle and attacked phases alternate this many times: on a shared "
                             "machine the ratio of neighbouring phases is the steadier figure")
    parser.add_argument("--limits", choices=("shipped", "off"), default="shipped",
                        help="the per-client rate limits of serve_config.yaml, or none")
    args = parser.parse_args(argv)
    # The measuring client is one well-behaved user; the shipped per-client limits stay on
    # unless --limits off, where every attack request is read and refused by its size check.
    load_before = os.getloadavg()[0]
    ensure_app(args.host, {} if args.limits == "shipped" else {
        **LOAD_LIMITS, "uploads_per_minute": 0})
    model = ensure_model(args.host)
    latencies(args.host, model, 20)  # warm: the model loaded, connections open
    rounds, answers = [], {}
    for number in range(1, args.rounds + 1):
        idle = summary(latencies(args.host, model, args.requests))
        attacked, answers_now = under_attack(args.host, model, args.requests)
        for kind, counts in answers_now.items():
            answers[kind] = dict(Counter(answers.get(kind, {})) + Counter(counts))
        ratio = attacked["p50_ms"] / idle["p50_ms"]
        rounds.append({"idle": idle, "under_attack": attacked, "p50_ratio": round(ratio, 3),
                       "load_average": round(os.getloadavg()[0], 1)})
        print(f"round {number}: generate 50 chars p50 idle {idle['p50_ms']} ms "
              f"(p95 {idle['p95_ms']}), under attack {attacked['p50_ms']} ms "
              f"(p95 {attacked['p95_ms']}): {ratio:.2f}x")
    median_ratio = statistics.median(r["p50_ratio"] for r in rounds)
    print(f"median of the rounds' p50 ratios: {median_ratio:.2f}x idle (target <= 2x)")
    for kind, counts in answers.items():
        print(f"  attack {kind}: answers {counts}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"attack-limits-{args.limits}.json").write_text(json.dumps(
        {"machine": f"{os.cpu_count()} cores", "model": model, "limits": args.limits,
         # The machine may be shared: its 1-minute load average before the run and after
         # each round.
         "load_average_before": round(load_before, 1), "rounds": rounds,
         "p50_ratio_median": round(median_ratio, 3), "attacks": answers}, indent=2))
    if any(status >= 500 for counts in answers.values() for status in counts):
        raise SystemExit("an attack request got a 5xx")


if __name__ == "__main__":
    main()

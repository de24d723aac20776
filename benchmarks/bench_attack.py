"""Generate latency on a ready model while another client attacks the app (issue 13):
oversized JSON bodies (declared and chunked), upload bombs and oversized uploads, in a loop.

    python -m benchmarks.bench_attack        # make bench-attack

Starts the app as `make loadtest` does when none answers on --host, with the upload rate limit
off too, so every attack request is read and refused by its size check rather than by the
cheaper 429. Prints the p50/p95 of a 50-character generate, idle and under attack, and their
ratio (target: p50 within 2x of idle); writes benchmarks/results/attack.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import threading
import time
from collections import Counter

import requests

from benchmarks import RESULTS
from loadtest.hostile import chunks, npz_bomb, padded_json
from loadtest.run_load import ensure_app, ensure_model

BODY_CAP = 2 * 1024 * 1024  # serve_config.yaml's limits.max_body_bytes
UPLOAD_CAP = 10 * 1024 * 1024  # ...and max_upload_bytes


def latencies(url: str, model: str, count: int) -> list[float]:
    """Seconds per sequential 50-character generate; raises on any non-200."""
    seconds = []
    for seed in range(count):
        started = time.perf_counter()
        response = requests.post(f"{url}/models/{model}/generate",
                                 json={"max_length": 50, "seed": seed}, timeout=30)
        response.raise_for_status()
        seconds.append(time.perf_counter() - started)
    return seconds


class Attacker(threading.Thread):
    """Sends one kind of hostile request in a loop until stopped; counts the answers."""

    def __init__(self, url: str, model: str, kind: str):
        super().__init__(daemon=True)
        self.url, self.model, self.kind = url, model, kind
        self.answers: Counter[int] = Counter()
        self.stop = threading.Event()
        self.bomb = npz_bomb(250)  # 200 MB unpacked
        self.body = padded_json(3 * BODY_CAP)
        self.too_big_upload = b"a" * (UPLOAD_CAP + 1024 * 1024)

    def send(self) -> requests.Response:
        generate = f"{self.url}/models/{self.model}/generate"
        json_type = {"content-type": "application/json"}
        if self.kind == "declared body":
            return requests.post(generate, data=self.body, headers=json_type, timeout=30)
        if self.kind == "chunked body":
            return requests.post(generate, data=chunks(self.body), headers=json_type, timeout=30)
        if self.kind == "npz bomb":
            return requests.post(f"{self.url}/models", files={"file": ("x.npz", self.bomb)},
                                 data={"name": "attack-bomb", "kind": "lstm-classifier"},
                                 timeout=30)
        return requests.post(f"{self.url}/models", files={"file": ("x.txt", self.too_big_upload)},
                             data={"name": "attack-upload"}, timeout=30)

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.answers[self.send().status_code] += 1
            except requests.RequestException:
                self.answers[0] += 1  # the server hung up mid-body (after answering 413)


def summary(seconds: list[float]) -> dict:
    ordered = sorted(seconds)
    return {"requests": len(seconds), "p50_ms": round(1000 * statistics.median(ordered), 2),
            "p95_ms": round(1000 * ordered[int(0.95 * (len(ordered) - 1))], 2)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="http://127.0.0.1:8000")
    parser.add_argument("--requests", type=int, default=200, help="generates per phase")
    args = parser.parse_args(argv)
    ensure_app(args.host, uploads_per_minute=0)
    model = ensure_model(args.host)
    latencies(args.host, model, 20)  # warm: the model loaded, connections open
    idle = summary(latencies(args.host, model, args.requests))
    attackers = [Attacker(args.host, model, kind) for kind in
                 ("declared body", "chunked body", "npz bomb", "oversized upload")]
    for attacker in attackers:
        attacker.start()
    time.sleep(2)
    attacked = summary(latencies(args.host, model, args.requests))
    for attacker in attackers:
        attacker.stop.set()
    for attacker in attackers:
        attacker.join(60)
    answers = {a.kind: dict(a.answers) for a in attackers}
    ratio = attacked["p50_ms"] / idle["p50_ms"]
    print(f"generate 50 chars, idle:         p50 {idle['p50_ms']} ms, p95 {idle['p95_ms']} ms")
    print(f"generate 50 chars, under attack: p50 {attacked['p50_ms']} ms, "
          f"p95 {attacked['p95_ms']} ms  ({ratio:.2f}x idle p50; target <= 2x)")
    for kind, counts in answers.items():
        print(f"  attack {kind}: answers {counts}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "attack.json").write_text(json.dumps(
        {"machine": f"{os.cpu_count()} cores", "model": model, "idle": idle,
         "under_attack": attacked, "p50_ratio": round(ratio, 3), "attacks": answers}, indent=2))
    if any(status >= 500 for counts in answers.values() for status in counts):
        raise SystemExit("an attack request got a 5xx")


if __name__ == "__main__":
    main()

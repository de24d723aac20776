"""Native streamed generation against OpenAI's streamed completions (`/v1/completions`,
Server-Sent Events) on the same app, model and load: what the protocol costs.

    python -m benchmarks.bench_protocols --users 32 --seconds 45 --rounds 2

Runs on a Ray head of its own (fresh loopback ports and temp dir, stopped at the end, so it
shares the machine with other clusters), the app from serve_config.yaml with the per-client
inference limits off (every locust user comes from one address), a small model trained
through the app; then locust with only `StreamUser`, then only `OpenAIStreamUser`, each for
the same time, alternated for `--rounds`. Writes benchmarks/results/protocols.json.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from benchmarks import RESULTS, SHARED_DATA
from deployments.serve_config import changed_config, write_config
from loadtest.run_load import BIN, LENGTH, LOAD_LIMITS, REPORTS, locust_stats

USERS = {"native": ("StreamUser", "/models/[name]/generate stream", "stream first chunk"),
         "openai": ("OpenAIStreamUser", "/v1/completions stream", "/v1 stream first chunk")}


def run_locust(url: str, model: str, kind: str, users: int, seconds: int) -> dict:
    user_class, request_name, ttfc_name = USERS[kind]
    prefix = REPORTS / f"protocols-{kind}-{users}u-{time.strftime('%H%M%S')}"
    rows, elapsed, _ = locust_stats(url, users, seconds, model, prefix, (user_class,), quiet=True)
    done = int(rows[request_name]["Request Count"]) - int(rows[request_name]["Failure Count"])
    ttfc = rows.get(ttfc_name, {})
    return {"protocol": kind, "users": users, "seconds": seconds,
            "requests_per_s": round(done / elapsed, 1),
            "chars_per_s": round(done * LENGTH / elapsed),
            "failures": int(rows[request_name]["Failure Count"]),
            "ttfc_ms": {p: float(ttfc.get(p) or "nan") for p in ("50%", "95%")}}


def main(argv: list[str] | None = None) -> None:
    import requests

    from tests.conftest import deploy_app, free_port, start_ray_head, stop_ray
    from tests.integration.api import TRAIN_FORM, upload, wait_status

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=32)
    parser.add_argument("--seconds", type=int, default=45)
    parser.add_argument("--rounds", type=int, default=2, help="native then openai, this often")
    args = parser.parse_args(argv)

    storage = Path(f"/tmp/rnnserve-bench-protocols-{os.getpid()}")
    env = {**os.environ, "RNNSERVE_STORAGE": str(storage),
           "RNNSERVE_DB_URL": f"sqlite:///{storage}/registry.db", "RAY_AUTH_MODE": "disabled",
           "RAY_USAGE_STATS_ENABLED": "0", "PATH": f"{BIN}:{os.environ.get('PATH', '')}"}
    port = free_port()
    storage.mkdir(parents=True, exist_ok=True)
    config_path = write_config(changed_config(port, **LOAD_LIMITS), storage / "serve_config.yaml")
    url = f"http://127.0.0.1:{port}"
    cluster = start_ray_head(env)
    try:
        deploy_app(cluster, config_path, url)
        text = (SHARED_DATA / "tinyshakespeare.txt").read_text(encoding="utf-8")[:30_000]
        response = upload(url, "bench-bard", text)
        response.raise_for_status()
        wait_status(url, "bench-bard", 1, {"ready"}, timeout=600)
        requests.post(f"{url}/models/bench-bard/generate", json={"max_length": 5}, timeout=60)
        # Alternated, so a change in the machine's other load falls on both protocols.
        results = [run_locust(url, "bench-bard", kind, args.users, args.seconds)
                   for _ in range(args.rounds) for kind in ("native", "openai")]
    finally:
        stop_ray(env)
    load = os.getloadavg()
    summary = {"users": args.users, "seconds": args.seconds, "length": LENGTH,
               "model": {k: TRAIN_FORM[k] for k in ("lstm_size", "num_layers")},
               "load_average_1m_after": round(load[0], 1), "results": results}
    (RESULTS / "protocols.json").write_text(json.dumps(summary, indent=2) + "\n")
    for r in results:
        print(f"{r['protocol']:>6} {r['users']} users: {r['requests_per_s']} req/s, "
              f"{r['chars_per_s']:,} chars/s, {r['failures']} failures, TTFC p50/p95 "
              f"{r['ttfc_ms']['50%']:.0f}/{r['ttfc_ms']['95%']:.0f} ms")


if __name__ == "__main__":
    main()

"""The head-loss part of `make bench-cluster` (issue 20): the GCS of a Redis-backed head killed
(kill -9) under a generate load and started again 15 s later with its own command line, measured
through the scenario `make test-ha` asserts on (tests/ha/scenario.py's `gcs_outage`, on the
head, Redis and app of tests/ha/hacluster.py: one node of this machine, the real app).

Figures: the outage's length; requests served and failed before, during and after it; the
first answer after the restart; how long after the restart an upload was accepted (its
training job submitted: the cluster takes new work again) and ready; what became of an upload
sent during the outage and of the run that was training across it; then a scale-up (the app
deployed again with one Generator replica more, tests/ha/scale_up.py): how long until the new
replica ran, and whether it answered.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from pathlib import Path

from tests.ha.hacluster import deploy_app, running_redis, start_head
from tests.ha.scale_up import scale_up_generator
from tests.ha.scenario import AFTER_S, gcs_outage


class TempDirs:
    """New directories under `root`, as pytest's tmp_path_factory.mktemp makes them."""

    def __init__(self, root: Path):
        self.root = root

    def mktemp(self, name: str) -> Path:
        return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.root))


def load_phase(entries: list) -> dict:
    """Requests served and failed in one phase of the load, and their latency."""
    latencies = sorted(entry[1] for entry in entries)
    return {"requests": len(entries), "failed": sum(1 for entry in entries if entry[2]),
            "latency_p50_s": round(latencies[len(latencies) // 2], 2) if latencies else None,
            "latency_max_s": round(latencies[-1], 2) if latencies else None}


def rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 1)


def summarize(r: dict) -> dict:
    timings = r["timings"]
    return {
        "gcs_down_s": rounded(timings["down_s"]),
        "load": {"clients": 2, "request": "generate, 20 characters, seeded"},
        "before": load_phase(r["before"]),
        "gcs_down": load_phase(r["down"]),
        f"first_{AFTER_S}_s_after": load_phase(r["later"]),
        "first_answer_after_restart_s": rounded(timings["first_answer_after_s"]),
        "upload_during_outage": {key: r["during"].get(key) for key in ("code", "seconds", "final")},
        "upload_accepted_after_restart_s": rounded(timings["upload_accepted_after_s"]),
        "upload_after_restart_final": r["after_final"],
        "upload_after_restart_ended_after_s": rounded(timings["upload_ended_after_s"]),
        "inflight_run_statuses": r["inflight_seen"],
        "gcs_alive_at_end": r["gcs_alive"], "app_answering_at_end": r["app_alive"],
    }


def measure(work: Path) -> dict:
    """One GCS restart on a Redis-backed head of its own (files under `work`); the figures."""
    dirs = TempDirs(work)
    started, load_at_start = time.monotonic(), os.getloadavg()[0]
    with running_redis(dirs.mktemp("redis")) as redis, \
            contextlib.contextmanager(start_head)(dirs, redis) as head:
        url = deploy_app(head, dirs)
        r = gcs_outage(head, url, "fault tolerance on Redis")
        scaled = scale_up_generator(head, url, dirs.mktemp("scale-up"), "after")
    scale_up = {"generator_replicas": [scaled["before"], scaled.get("after")],
                "new_replica_running_after_redeploy_s": rounded(scaled.get("running_after_s")),
                "new_replica_answered": scaled.get("status_code") == 200
                and bool(scaled.get("new_replica_loaded_it"))}
    return {**summarize(r), "scale_up_after_restart": scale_up,
            "total_seconds": round(time.monotonic() - started, 1),
            "load_average_1min": {"start": load_at_start, "end": os.getloadavg()[0]}}

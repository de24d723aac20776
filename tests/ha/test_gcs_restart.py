"""rnnserve across a restart of the head's GCS with fault tolerance on Redis (issue 20).

A tiny model is trained and served; a second, longer run is `training`. Under a bounded load of
seeded generate requests, the GCS process is killed (kill -9) and, after DOWN_S seconds,
started again with its own command line and environment, the way a supervisor restarts a
head's GCS; Ray's GCS fault tolerance reloads its state from Redis. Asserted: no generate
request fails during the outage or after; an upload after the restart trains to `ready`; the
run that was training across the restart is never marked `failed` (the job-status sync treats
the unreachable job server as "could not ask") and ends `ready`. The figures are printed.
"""

from __future__ import annotations

import os
import threading
import time

import pytest
import requests

from tests.conftest import SHARED_DATA, wait_for
from tests.ha.conftest import cpu_seconds, gcs_process, restart_gcs

pytestmark = pytest.mark.integration

DOWN_S = 15  # the GCS outage
AFTER_S = 15  # load kept up after the restart
TINY = {"max_steps": "40", "lstm_size": "32", "num_layers": "1", "num_seqs": "16",
        "num_steps": "32", "save_every_n": "20", "log_every_n": "10", "learning_rate": "0.01"}


def upload(url: str, name: str, text: str, timeout: float = 60, **form) -> requests.Response:
    return requests.post(f"{url}/models", data={"name": name, **TINY, **form}, timeout=timeout,
                         files={"file": ("corpus.txt", text.encode(), "text/plain")})


def status(registry, name: str, version: int) -> str | None:
    try:
        return registry.get_version(name, version).status
    except Exception:  # noqa: BLE001 - not created yet
        return None


def load(url: str, name: str, stop: threading.Event, log: list, worker: int) -> None:
    """Seeded generate requests, one at a time, until `stop`; logs (start, seconds, error)."""
    seed = worker * 1_000_000
    while not stop.is_set():
        seed += 1
        started = time.monotonic()
        try:
            response = requests.post(f"{url}/models/{name}/generate", timeout=60,
                                     json={"prime": "A", "max_length": 20, "seed": seed})
            error = None if response.status_code == 200 and len(
                response.json()["generated"]) == 20 else f"{response.status_code} {response.text[:80]}"
        except requests.RequestException as exc:
            error = repr(exc)[:120]
        log.append((started, time.monotonic() - started, error))
        time.sleep(0.02)


def watch(registry, name: str, version: int, stop: threading.Event, seen: list) -> None:
    """Every status the in-flight version goes through (read from the registry directly)."""
    while not stop.is_set():
        current = status(registry, name, version)
        if not seen or seen[-1][1] != current:
            seen.append((time.monotonic(), current))
        time.sleep(0.5)


def try_upload(url: str, name: str, text: str, result: dict) -> None:
    started = time.monotonic()
    try:
        response = upload(url, name, text, timeout=120)
        result.update(code=response.status_code, body=response.text[:160])
        if response.status_code == 202:
            result["version"] = response.json()["version"]
    except requests.RequestException as exc:
        result["error"] = repr(exc)[:160]
    result["seconds"] = round(time.monotonic() - started, 1)


def upload_until_accepted(url: str, text: str, result: dict) -> None:
    """Uploads `after` until one is accepted (at most 180 s); records when and what came back."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        attempt: dict = {}
        try_upload(url, "after", text, attempt)
        result["attempts"].append(attempt.get("code") or attempt.get("error"))
        if attempt.get("version"):
            result.update(version=attempt["version"], at=time.monotonic())
            return
        time.sleep(1)


def phase(entries: list, seconds: float) -> str:
    """Requests, failures and latency of one phase of the load."""
    if not entries:
        return "no requests"
    latencies = sorted(entry[1] for entry in entries)
    return (f"{len(entries)} requests in {seconds:.1f} s, {sum(1 for e in entries if e[2])} failed, "
            f"latency p50 {latencies[len(latencies) // 2]:.2f} s, "
            f"p95 {latencies[int(len(latencies) * 0.95)]:.2f} s, max {latencies[-1]:.2f} s")


def cpu_use(start: dict, end: dict, seconds: float) -> str:
    """Cores used over a phase by this session's Ray processes, and the busiest kinds."""
    by_name: dict = {}
    for pid, (name, used) in end.items():
        by_name[name] = by_name.get(name, 0.0) + used - start.get(pid, (name, 0.0))[1]
    top = sorted(by_name.items(), key=lambda item: -item[1])[:4]
    return (f"{sum(by_name.values()) / seconds:.2f} cores; busiest: "
            + ", ".join(f"{name} {used / seconds:.2f}" for name, used in top))


def test_gcs_restart_under_load(ha_head, ha_app, registry):
    url = ha_app
    text = (SHARED_DATA / "tinyshakespeare.txt").read_text(encoding="utf-8")[:60_000]

    t_first = time.monotonic()
    first = upload(url, "steady", text)
    assert first.status_code == 202, first.text
    wait_for(lambda: status(registry, "steady", 1) == "ready", 400, interval=1,
             what="the first model to be ready")
    first_ready_s = time.monotonic() - t_first
    warm = requests.post(f"{url}/models/steady/generate", timeout=120,
                         json={"prime": "A", "max_length": 20, "seed": 1})
    assert warm.status_code == 200, warm.text

    # A run long enough to be training across the whole outage: a 1-minute time budget.
    long = upload(url, "inflight", text, max_steps="100000", max_minutes="1",
                  save_every_n="200", log_every_n="100")
    assert long.status_code == 202, long.text
    inflight = long.json()["version"]
    wait_for(lambda: status(registry, "inflight", inflight) == "training", 300, interval=1,
             what="the long run to be training")

    stop_load, stop_watch = threading.Event(), threading.Event()
    log: list = []
    seen: list = []
    workers = [threading.Thread(target=load, args=(url, "steady", stop_load, log, i))
               for i in range(2)]
    watcher = threading.Thread(target=watch, args=(registry, "inflight", inflight, stop_watch, seen))
    for thread in (*workers, watcher):
        thread.start()
    during: dict = {}
    after: dict = {"attempts": []}
    restarted = uploader = side = None
    try:
        time.sleep(3)
        gcs = gcs_process(ha_head["gcs_port"])
        assert gcs is not None, "no GCS process of this session"
        cmdline, environ = gcs.cmdline(), gcs.environ()
        cpu = {"before": cpu_seconds()}
        t_kill = time.monotonic()
        os.kill(gcs.pid, 9)
        time.sleep(5)
        # An upload while the GCS is down: what does the client get? (reported, not asserted)
        side = threading.Thread(target=try_upload, args=(url, "during", text, during))
        side.start()
        time.sleep(DOWN_S - 5)
        cpu["down"] = cpu_seconds()
        restarted = restart_gcs(cmdline, environ)
        t_back = time.monotonic()
        # Uploads from the moment the GCS is back, until one is accepted.
        uploader = threading.Thread(target=upload_until_accepted, args=(url, text, after))
        uploader.start()
        time.sleep(AFTER_S)
        cpu["after"] = cpu_seconds()
    finally:
        stop_load.set()
        for thread in workers:
            thread.join()
    for thread in (uploader, side):
        if thread is not None:
            thread.join()
    accepted = after.get("version")
    assert accepted is not None, f"no upload accepted within 180 s of the restart: {after}"
    wait_for(lambda: status(registry, "after", accepted) in ("ready", "failed"), 400, interval=1,
             what="the upload after the restart to finish")
    t_after_ready = time.monotonic()
    wait_for(lambda: status(registry, "inflight", inflight) not in ("queued", "training"), 400,
             interval=1, what="the in-flight run to end")
    if during.get("version"):
        wait_for(lambda: status(registry, "during", during["version"]) not in (
            "queued", "training"), 400, interval=1, what="the upload during the outage to end")
    stop_watch.set()
    watcher.join()

    down = [entry for entry in log if t_kill <= entry[0] < t_back]
    later = [entry for entry in log if entry[0] >= t_back]
    before = [entry for entry in log if entry[0] < t_kill]
    failed = [entry for entry in log if entry[2]]
    ok_later = [entry for entry in later if not entry[2]]
    first_ok = ok_later[0][0] + ok_later[0][1] - t_back if ok_later else None
    inflight_logs = registry.read_logs("inflight", inflight)
    print(f"\nGCS restart, fault tolerance on Redis, {len(workers)} load threads, "
          f"GCS down {t_back - t_kill:.1f} s:")
    for label, part, seconds in (("before", before, t_kill - log[0][0]),
                                 ("GCS down", down, t_back - t_kill), ("after", later, AFTER_S)):
        print(f"  {label}: {phase(part, seconds)}")
    print("  first answer after the restart: "
          + (f"{first_ok:.2f} s after it" if first_ok is not None else "none"))
    if during.get("version"):
        during["final"] = status(registry, "during", during["version"])
        during["log"] = registry.read_logs("during", during["version"])[-2:]
    print(f"  upload during the outage: {during}")
    print(f"  upload after the restart: accepted {after['at'] - t_back:.1f} s after it "
          f"(attempts {after['attempts']}), {status(registry, 'after', accepted)} "
          f"{t_after_ready - t_back:.1f} s after it (the first upload, before the outage: ready "
          f"{first_ready_s:.1f} s after its upload)")
    print(f"  in-flight run: statuses {[s for _, s in seen]}; last log line {inflight_logs[-2:-1]}")
    for label, start, end, seconds in (("GCS down", "before", "down", t_back - t_kill),
                                       ("after", "down", "after", AFTER_S)):
        usage = cpu_use(cpu[start], cpu[end], seconds)
        print(f"  CPU of this session's Ray processes while {label}: {usage}")
    if failed:
        print(f"  failed requests: {sorted({e[2] for e in failed})[:5]}")

    assert not failed, f"{len(failed)} generate requests failed: {sorted({e[2] for e in failed})[:5]}"
    assert len(down) > 0 and len(later) > 0
    assert status(registry, "after", accepted) == "ready", registry.read_logs("after", accepted)[-5:]
    assert "failed" not in [s for _, s in seen], (seen, inflight_logs[-5:])
    assert status(registry, "inflight", inflight) == "ready", inflight_logs[-5:]
    assert gcs_process(ha_head["gcs_port"]) is not None and restarted.poll() is None

"""The head-restart scenario of tests/ha, with and without GCS fault tolerance.

A tiny model is trained and served; a second, longer run is `training`. Under a bounded load of
seeded generate requests, the GCS process is killed (kill -9) and, after DOWN_S seconds,
started again with its own command line and environment, the way a supervisor restarts a
head's GCS. An upload is sent during the outage and uploads from the moment the GCS is back.
`gcs_outage` measures, prints and returns what happened; the tests assert on it.
"""

from __future__ import annotations

import os
import threading
import time

import requests

from tests.conftest import SHARED_DATA, wait_for
from tests.ha.conftest import cpu_seconds, gcs_process, open_registry, restart_gcs

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
    current = status(registry, name, version)  # the last word, read after `stop`
    if not seen or seen[-1][1] != current:
        seen.append((time.monotonic(), current))


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


def upload_until_accepted(url: str, text: str, result: dict, budget_s: float) -> None:
    """Uploads `after` until one is accepted (for at most `budget_s`); records when and what
    came back."""
    deadline = time.monotonic() + budget_s
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



def app_answers(url: str) -> bool:
    try:
        return requests.get(f"{url}/healthz", timeout=5).status_code == 200
    except requests.RequestException:
        return False


def wait_until(predicate, timeout: float, interval: float = 1.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


def gcs_outage(head: dict, url: str, label: str, upload_budget_s: float = 180,
               end_wait_s: float = 400) -> dict:
    """Run the scenario on `head` (its app at `url`); returns the figures (also printed)."""
    registry = open_registry()
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
        gcs = gcs_process(head["gcs_port"])
        assert gcs is not None, "no GCS process of this session"
        cmdline, environ = gcs.cmdline(), gcs.environ()
        cpu = {"before": cpu_seconds()}
        t_kill = time.monotonic()
        os.kill(gcs.pid, 9)
        time.sleep(5)
        # An upload while the GCS is down: what does the client get?
        side = threading.Thread(target=try_upload, args=(url, "during", text, during))
        side.start()
        time.sleep(DOWN_S - 5)
        cpu["down"] = cpu_seconds()
        restarted = restart_gcs(cmdline, environ)
        t_back = time.monotonic()
        # Uploads from the moment the GCS is back, until one is accepted.
        uploader = threading.Thread(target=upload_until_accepted,
                                    args=(url, text, after, upload_budget_s))
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
    if accepted is not None:
        wait_until(lambda: status(registry, "after", accepted) in ("ready", "failed"), end_wait_s)
    t_after_end = time.monotonic()
    wait_until(lambda: status(registry, "inflight", inflight) not in ("queued", "training"),
               end_wait_s)
    if during.get("version"):
        wait_until(lambda: status(registry, "during", during["version"]) not in (
            "queued", "training"), end_wait_s)
    stop_watch.set()
    watcher.join()

    r = {"before": [e for e in log if e[0] < t_kill],
         "down": [e for e in log if t_kill <= e[0] < t_back],
         "later": [e for e in log if e[0] >= t_back], "during": during, "after": after,
         "after_final": status(registry, "after", accepted) if accepted else None,
         "inflight_seen": [s for _, s in seen],
         "inflight_final": status(registry, "inflight", inflight),
         "inflight_logs": registry.read_logs("inflight", inflight),
         "gcs_alive": gcs_process(head["gcs_port"]) is not None and restarted.poll() is None,
         "app_alive": app_answers(url)}
    r["failed"] = [e for e in log if e[2]]
    ok_later = [e for e in r["later"] if not e[2]]
    first_ok = ok_later[0][0] + ok_later[0][1] - t_back if ok_later else None
    print(f"\nGCS restart, {label}, {len(workers)} load threads, GCS down {t_back - t_kill:.1f} s:")
    for name, part, seconds in (("before", r["before"], t_kill - log[0][0]),
                                ("GCS down", r["down"], t_back - t_kill),
                                ("after", r["later"], AFTER_S)):
        print(f"  {name}: {phase(part, seconds)}")
    print("  first answer after the restart: "
          + (f"{first_ok:.2f} s after it" if first_ok is not None else "none"))
    if during.get("version"):
        during["final"] = status(registry, "during", during["version"])
        during["log"] = registry.read_logs("during", during["version"])[-2:]
    print(f"  upload during the outage: {during}")
    if accepted is not None:
        print(f"  upload after the restart: accepted {after['at'] - t_back:.1f} s after it "
              f"(attempts {after['attempts']}), {r['after_final']} {t_after_end - t_back:.1f} s "
              f"after it (the first upload, before the outage: ready {first_ready_s:.1f} s "
              f"after its upload)")
    else:
        print(f"  upload after the restart: none accepted in {upload_budget_s:.0f} s "
              f"(attempts {after['attempts'][:5]})")
    print(f"  in-flight run: statuses {r['inflight_seen']}; last log lines "
          f"{r['inflight_logs'][-2:]}")
    for name, start, end, seconds in (("GCS down", "before", "down", t_back - t_kill),
                                      ("after", "down", "after", AFTER_S)):
        usage = cpu_use(cpu[start], cpu[end], seconds)
        print(f"  CPU of this session's Ray processes while {name}: {usage}")
    versions = [(v.name, v.version, v.status, "job" if v.job_id else "no job")
                for m in registry.list_models() for v in registry.list_versions(m["name"])]
    print(f"  at the end ({time.monotonic() - t_back:.0f} s after the restart): GCS alive "
          f"{r['gcs_alive']}, app answering {r['app_alive']}; versions {versions}")
    if r["failed"]:
        print(f"  failed requests: {sorted({e[2] for e in r['failed']})[:5]}")
    return r

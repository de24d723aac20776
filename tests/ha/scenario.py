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
from pathlib import Path

import requests

from tests.conftest import SHARED_DATA, wait_for
from tests.ha.hacluster import (
    TEMP_DIR,
    cpu_seconds,
    gcs_process,
    kill_redis,
    launch_redis,
    open_registry,
    restart_gcs,
)

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


def restart_gcs_under_uploads(cmdline: list[str], environ: dict, url: str, text: str,
                              after: dict, budget_s: float):
    """Start the GCS again (`restart_gcs`), note when, and from that moment upload until one
    upload is accepted (`upload_until_accepted` into `after`, in a thread); returns after
    AFTER_S seconds of load with (the GCS process, the restart's time, the uploading thread:
    join it)."""
    restarted = restart_gcs(cmdline, environ)
    t_back = time.monotonic()
    uploader = threading.Thread(target=upload_until_accepted, args=(url, text, after, budget_s))
    uploader.start()
    time.sleep(AFTER_S)
    return restarted, t_back, uploader


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

def corpus() -> str:
    return (SHARED_DATA / "tinyshakespeare.txt").read_text(encoding="utf-8")[:60_000]


def serve_a_ready_model(url: str, registry, text: str) -> float:
    """Upload the tiny model `steady`, wait until it is ready and has answered once; returns
    the seconds from upload to ready."""
    started = time.monotonic()
    first = upload(url, "steady", text)
    assert first.status_code == 202, first.text
    wait_for(lambda: status(registry, "steady", 1) == "ready", 400, interval=1,
             what="the first model to be ready")
    ready_s = time.monotonic() - started
    warm = requests.post(f"{url}/models/steady/generate", timeout=120,
                         json={"prime": "A", "max_length": 20, "seed": 1})
    assert warm.status_code == 200, warm.text
    return ready_s


def start_load(url: str, stop: threading.Event, log: list, threads: int = 2) -> list:
    """`threads` clients of `load` on the model `steady`, started; join them after `stop`."""
    workers = [threading.Thread(target=load, args=(url, "steady", stop, log, i))
               for i in range(threads)]
    for worker in workers:
        worker.start()
    return workers


def first_answer_after(entries: list, moment: float) -> float | None:
    """Seconds from `moment` until the first successful request among `entries` ended."""
    ok = [e for e in entries if not e[2]]
    return ok[0][0] + ok[0][1] - moment if ok else None


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
    registry, text = open_registry(), corpus()
    first_ready_s = serve_a_ready_model(url, registry, text)

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
    workers = start_load(url, stop_load, log)
    watcher = threading.Thread(target=watch, args=(registry, "inflight", inflight, stop_watch, seen))
    watcher.start()
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
        restarted, t_back, uploader = restart_gcs_under_uploads(
            cmdline, environ, url, text, after, upload_budget_s)
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
    first_ok = first_answer_after(r["later"], t_back)
    r["timings"] = {"down_s": t_back - t_kill, "first_answer_after_s": first_ok,
                    "upload_accepted_after_s": after["at"] - t_back if accepted else None,
                    "upload_ended_after_s": t_after_end - t_back if accepted else None}
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


def watch_gcs(gcs_port: int, stop: threading.Event, seen: dict) -> None:
    """Records in seen["gone"] when this session's GCS process was first found gone."""
    while not stop.is_set() and "gone" not in seen:
        if gcs_process(gcs_port) is None:
            seen["gone"] = time.monotonic()
        time.sleep(0.25)


def gcs_exit_reason() -> str | None:
    """The last line of this session's GCS logs that mentions Redis (why a GCS exited), stack
    frames left out."""
    lines = [line for path in Path(TEMP_DIR).glob("session_*/logs/gcs_server*")
             for line in path.read_text(errors="replace").splitlines()
             if "Redis" in line and "(+0x" not in line]
    return lines[-1][-300:] if lines else None


def redis_outage(head: dict, redis: dict, url: str, upload_budget_s: float = 180,
                 end_wait_s: float = 400) -> dict:
    """Redis itself lost: under the generate load, redis-server is killed (kill -9) and, after
    DOWN_S seconds, started again from its append-only file. AFTER_S seconds later, if the GCS
    is gone, it is started again with its own command line (what an operator or a supervisor
    must do); uploads from that moment until one is accepted. Returns the figures (printed)."""
    registry, text = open_registry(), corpus()
    serve_a_ready_model(url, registry, text)
    gcs = gcs_process(head["gcs_port"])
    assert gcs is not None, "no GCS process of this session"
    cmdline, environ = gcs.cmdline(), gcs.environ()  # the GCS may not outlive Redis
    stop_load, stop_watch = threading.Event(), threading.Event()
    log: list = []
    gcs_seen: dict = {}
    held: dict = {}
    after: dict = {"attempts": []}
    workers = start_load(url, stop_load, log)
    watcher = threading.Thread(target=watch_gcs, args=(head["gcs_port"], stop_watch, gcs_seen))
    watcher.start()
    restarted = uploader = side = t_gcs_back = None
    try:
        time.sleep(3)
        t_kill = time.monotonic()
        kill_redis(redis)
        time.sleep(DOWN_S)
        launch_redis(redis)  # from its append-only file
        t_redis_back = time.monotonic()
        # New work with Redis back and the GCS as Redis's loss left it: what does a client get?
        side = threading.Thread(target=try_upload, args=(url, "redisback", text, held))
        side.start()
        time.sleep(AFTER_S)
        gcs_alive_before_restart = gcs_process(head["gcs_port"]) is not None
        exit_reason = gcs_exit_reason()  # read before a restarted GCS logs on
        if not gcs_alive_before_restart:
            restarted, t_gcs_back, uploader = restart_gcs_under_uploads(
                cmdline, environ, url, text, after, upload_budget_s)
    finally:
        stop_load.set()
        stop_watch.set()
        for thread in (*workers, watcher):
            thread.join()
    for thread in (uploader, side):
        if thread is not None:
            thread.join()
    for name, result in (("after", after), ("redisback", held)):
        if result.get("version"):
            wait_until(lambda n=name, v=result["version"]: status(registry, n, v) in (
                "ready", "failed"), end_wait_s)
            result["final"] = status(registry, name, result["version"])
    t_end = time.monotonic()
    boundary = t_gcs_back or float("inf")
    r = {"before": [e for e in log if e[0] < t_kill],
         "redis_down": [e for e in log if t_kill <= e[0] < t_redis_back],
         "redis_back": [e for e in log if t_redis_back <= e[0] < boundary],
         "gcs_back": [e for e in log if e[0] >= boundary],
         "failed": [e for e in log if e[2]],
         "gcs_gone_after_s": gcs_seen["gone"] - t_kill if "gone" in gcs_seen else None,
         "gcs_alive_before_restart": gcs_alive_before_restart,
         "gcs_exit_reason": exit_reason,
         "gcs_restarted": restarted is not None,
         "held": held, "after": after,
         "gcs_alive": gcs_process(head["gcs_port"]) is not None,
         "app_alive": app_answers(url)}
    r["upload_accepted_after_gcs_s"] = after["at"] - t_gcs_back if after.get("at") else None
    print_redis_outage(r, t_kill, t_redis_back, t_gcs_back, t_end)
    return r


def print_redis_outage(r: dict, t_kill: float, t_redis_back: float, t_gcs_back: float | None,
                       t_end: float) -> None:
    gone = r["gcs_gone_after_s"]
    print(f"\nRedis lost (kill -9) for {t_redis_back - t_kill:.1f} s, restarted from its "
          f"append-only file; GCS gone {f'{gone:.1f} s after the kill' if gone else 'never'}; "
          f"GCS alive {AFTER_S} s after Redis was back: {r['gcs_alive_before_restart']}"
          + (f"; GCS restarted {t_gcs_back - t_redis_back:.1f} s after Redis" if t_gcs_back
             else ""))
    for name, part, seconds in (
            ("before", r["before"], 3), ("Redis down", r["redis_down"], t_redis_back - t_kill),
            ("Redis back, GCS not restarted", r["redis_back"],
             (t_gcs_back or t_end) - t_redis_back),
            ("GCS restarted", r["gcs_back"], AFTER_S)):
        print(f"  {name}: {phase(part, seconds)}")
    if t_gcs_back:
        first = first_answer_after(r["gcs_back"], t_gcs_back)
        print(f"  first answer after the GCS restart: {first:.2f} s after it" if first is not None
              else "  no answer after the GCS restart")
    print(f"  upload sent when Redis was back (GCS not restarted): {r['held']}")
    accepted = r["upload_accepted_after_gcs_s"]
    print(f"  uploads after the GCS restart: accepted {accepted and round(accepted, 1)} s after "
          f"it, attempts {r['after']['attempts'][:6]}, {r['after'].get('final')}")
    print(f"  at the end: GCS alive {r['gcs_alive']}, app answering {r['app_alive']}; the "
          f"GCS's last words on Redis: {r['gcs_exit_reason']}")
    if r["failed"]:
        print(f"  failed requests: {sorted({e[2] for e in r['failed']})[:5]}")

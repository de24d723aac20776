"""End-to-end load runs with locust: the Serve app, Ray Serve's floor, the naive server.

    python -m loadtest.run_load --users 32 --seconds 60                    # make loadtest
    python -m loadtest.run_load --users 8,32,64 --seconds 40 --rounds 2 --floor --naive  # bench-e2e

Starts what is missing (a local Ray head and the Serve app from serve_config.yaml), seeds a
small model when none is ready, runs locust headless per user count and writes CSV + HTML
reports and a summary (requests/s, failures, time to first character percentiles, total
chars/s, CPU per request of each process on the path, what the sampling engines did: time to a
request's first and last character, calls and sequences per call; Generator replicas over
time) under results/loadtest/ and benchmarks/results/. With --floor, the same load then goes to
loadtest/floor_app.py (rnnserve's topology with no model, streaming as many chunks per
request as rnnserve did at that user count), and rnnserve / floor requests/s is reported.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests

from benchmarks import REPO, RESULTS, SHARED_DATA
from deployments.proxy_guard import CALLBACK as PROXY_CALLBACK
from deployments.serve_config import changed_config, deployment, shipped_config, write_config
from loadtest.engine_figures import EngineMeter
from loadtest.process_cpu import CpuMeter, HostMeter, serve_roles

BIN = Path(sys.executable).parent
REPORTS = REPO / "results" / "loadtest"  # locust's CSV and HTML reports
SEED_MODEL = "loadtest-bard"
LENGTH = 200  # characters per generate request (RNNSERVE_LOAD_LENGTH for the locustfile)
METRICS_PORT = 8080  # Ray's metrics export of the head this starts


# Every simulated user comes from this one address: the per-client inference limits would
# turn the load test into a 429 test.
LOAD_LIMITS = {"inference_per_s": 0, "max_in_flight_per_client": 0}
SERVE_APP = "rnnserve"  # the application's name in serve_config.yaml
FLOOR_APP, FLOOR_PREFIX = "floor", "/floor"


def load_config(limits: dict) -> Path:
    """serve_config.yaml with `limits` changed."""
    REPORTS.mkdir(parents=True, exist_ok=True)
    return write_config(changed_config(**limits), REPORTS / "serve_config.load.yaml")


def healthy(url: str) -> bool:
    try:
        return requests.get(f"{url}/healthz", timeout=2).ok
    except requests.RequestException:
        return False


def ensure_app(url: str, limits: dict = LOAD_LIMITS) -> None:
    """The app at `url`, or a local head with the app deployed with `limits` changed."""
    # Ray 2.60 turns token auth on for a head started where ~/.ray/auth_token exists (any
    # earlier local ray.init() writes one), but the `serve` CLI sends the token only in token
    # mode; saying so explicitly makes the head and every client here agree either way.
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    # The head it starts is the product as `make run` starts it: Serve's proxy with its guard.
    os.environ.setdefault("RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH", PROXY_CALLBACK)
    if healthy(url):
        print(f"using the app already at {url} (its per-client rate limits apply)", flush=True)
        return
    subprocess.run([str(BIN / "ray"), "get-auth-token", "--generate"], capture_output=True,
                   check=True)  # the token a head in token mode needs, made once
    subprocess.run([str(BIN / "ray"), "start", "--head", "--disable-usage-stats",
                    "--dashboard-host", "127.0.0.1", "--metrics-export-port", str(METRICS_PORT)],
                   cwd=REPO, capture_output=True)
    subprocess.run([str(BIN / "serve"), "deploy", str(load_config(limits))], cwd=REPO,
                   check=True)
    for _ in range(180):
        if healthy(url):
            return
        time.sleep(1)
    raise SystemExit("the Serve app did not come up")


def ensure_model(url: str) -> str:
    """A ready char-RNN to load: the first one listed, else a small one trained now."""
    for model in requests.get(f"{url}/models", timeout=10).json()["models"]:
        if model["kind"] == "charrnn" and model["production_version"]:
            return model["name"]
    text = (SHARED_DATA / "tinyshakespeare.txt").read_bytes()[:200_000]
    response = requests.post(f"{url}/models", timeout=60, files={"file": ("seed.txt", text)},
                             data={"name": SEED_MODEL, "max_steps": "300", "save_every_n": "100"})
    response.raise_for_status()
    print(f"seeding model {SEED_MODEL} (job {response.json()['job_id']})", flush=True)
    for _ in range(900):
        detail = requests.get(f"{url}/models/{SEED_MODEL}", timeout=10).json()
        status = detail["status"]  # its latest version's
        if status == "ready":
            return SEED_MODEL
        if status in ("failed", "cancelled"):
            raise SystemExit(f"seeding failed: {status}")
        time.sleep(2)
    raise SystemExit("seeding timed out")


# Serve API calls of this process, one at a time: building a deployment's config (the floor's,
# at import and deploy) registers and unregisters a module for pickling by value, a global of
# cloudpickle's, and `serve.status()` on the sampler's thread does too; overlapping, one of
# them fails ("not registered for pickle by value": it ended a run here).
SERVE_CALLS = threading.Lock()


class ReplicaSampler(threading.Thread):
    """Polls the Generator's running replica count (Serve's status API) once a second."""

    def __init__(self):
        super().__init__(daemon=True)
        self.samples: list[tuple[float, int]] = []
        self.stopped = threading.Event()
        self.started = time.monotonic()

    def run(self):
        from ray import serve

        while not self.stopped.is_set():
            try:
                with SERVE_CALLS:
                    status = serve.status()
                app = status.applications["rnnserve"]
                states = app.deployments["Generator"].replica_states
                self.samples.append((time.monotonic() - self.started, states.get("RUNNING", 0)))
            except Exception:  # noqa: BLE001 - not on a Serve cluster (naive server)
                pass
            time.sleep(1)


def locust_stats(host: str, users: int, seconds: int, model: str, prefix: Path,
                 user_classes: tuple[str, ...], *extra: str,
                 quiet: bool = False) -> tuple[dict[str, dict], float, float]:
    """Run loadtest/locustfile.py headless with `user_classes` against `model` (requests of
    LENGTH characters); returns its stats rows by name (CSV at `prefix`), the seconds it
    took and the CPU seconds locust itself spent. `extra` goes to locust."""
    REPORTS.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "RNNSERVE_MODELS": model, "RNNSERVE_LOAD_LENGTH": str(LENGTH)}
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run([str(BIN / "locust"), "-f", "loadtest/locustfile.py", "--headless",
                    "-u", str(users), "-r", str(max(1, users // 2)), "-t", f"{seconds}s",
                    "--host", host, "--csv", str(prefix), *extra, "--only-summary",
                    *user_classes],
                   cwd=REPO, env=env, check=False, capture_output=quiet)
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # locust is one process, now reaped
    locust_cpu = (after.ru_utime - children.ru_utime) + (after.ru_stime - children.ru_stime)
    with open(f"{prefix}_stats.csv") as f:
        return {row["Name"]: row for row in csv.DictReader(f)}, elapsed, locust_cpu


class ChunkProbe(threading.Thread):
    """One more client during a step, streaming one request after another and counting the
    HTTP chunks each arrives in: what the floor then streams per request."""

    def __init__(self, url: str, model: str):
        super().__init__(daemon=True)
        self.url, self.model = url, model
        self.counts: list[int] = []
        self.stopped = threading.Event()

    def run(self):
        body = {"prime": "The ", "max_length": LENGTH, "temperature": 0.8, "stream": True}
        while not self.stopped.wait(0.3):
            try:
                with requests.post(f"{self.url}/models/{self.model}/generate", json=body,
                                   stream=True, timeout=60) as response:
                    chunks = sum(1 for chunk in response.iter_content(chunk_size=None) if chunk)
                if response.ok:
                    self.counts.append(chunks)
            except requests.RequestException:
                pass

    def median(self) -> int:
        return int(statistics.median(self.counts)) if self.counts else 1


def run_locust(host: str, users: int, seconds: int, model: str, label: str,
               meter: CpuMeter | None = None) -> dict:
    """One locust step; with `meter`, the CPU each process of the path spent per request."""
    prefix = REPORTS / f"{label}-{users}u"
    if meter:
        meter.start()
    machine_meter = HostMeter()
    machine_meter.start()
    rows, elapsed, locust_cpu = locust_stats(host, users, seconds, model, prefix,
                                             ("GenerateUser", "StreamUser"),
                                             "--html", f"{prefix}.html")
    spent = {**(meter.stop() if meter else {}), "locust": locust_cpu}
    machine = machine_meter.stop()
    total = rows["Aggregated"]
    ttfc = rows.get("stream first chunk", {})
    generated = sum(int(rows[name]["Request Count"]) - int(rows[name]["Failure Count"])
                    for name in ("/models/[name]/generate", "/models/[name]/generate stream")
                    if name in rows)
    requests_only = int(total["Request Count"]) - int(ttfc.get("Request Count", 0) or 0)
    return {"label": label, "users": users, "seconds": seconds,
            "requests_per_s": requests_only / elapsed, "generated_requests": generated,
            "failures": int(total["Failure Count"]),
            "cpu_ms_per_request": {role: 1000 * cpu / max(requests_only, 1)
                                   for role, cpu in spent.items()},
            "locust_cores": locust_cpu / elapsed,
            "host_busy_cores": machine["busy_cores"], "host_stolen_cores": machine["stolen_cores"],
            "ttfc_ms": {p: float(ttfc.get(p, "nan") or "nan") for p in ("50%", "95%", "99%")},
            "chars_per_s": generated * LENGTH / elapsed,
            "report": f"{prefix}.html"}


def start_naive(model: str) -> subprocess.Popen:
    naive = subprocess.Popen([sys.executable, "-m", "loadtest.naive_server", "--name", model,
                              "--port", "8100"], cwd=REPO)
    for _ in range(120):
        try:
            if requests.get("http://127.0.0.1:8100/models", timeout=2).ok:
                return naive
        except requests.RequestException:
            time.sleep(1)
    naive.terminate()
    raise SystemExit("the naive server did not come up")


def deploy_floor(chunks: int) -> str:
    """The floor app at FLOOR_PREFIX, streaming `chunks` chunks per request, its deployments
    with the options of rnnserve's Ingress and Generator in serve_config.yaml; returns the
    model name it answers to."""
    from ray import serve

    config = shipped_config()
    options = {name: {k: v for k, v in deployment(config, name).items() if k != "name"}
               for name in ("Ingress", "Generator")}
    with SERVE_CALLS:
        # Imported here, as ray is in main(): Ray reads RAY_AUTH_MODE when it is first imported.
        from loadtest import floor_app

        serve.run(floor_app.build(chunks, options["Ingress"], options["Generator"]),
                  name=FLOOR_APP, route_prefix=FLOOR_PREFIX)
    return floor_app.MODEL


def report(results: list[dict]) -> None:
    for r in results:
        print(f"{r['label']:>5} {r['users']:>3} users: {r['requests_per_s']:6.1f} req/s, "
              f"{r['failures']} failures, TTFC p50/p95/p99 {r['ttfc_ms']['50%']:.0f}/"
              f"{r['ttfc_ms']['95%']:.0f}/{r['ttfc_ms']['99%']:.0f} ms, "
              f"{r['chars_per_s']:,.0f} chars/s"
              + (f", Generator replicas max {r['max_replicas']}" if "max_replicas" in r else "")
              + (f", {r['chunks_per_stream']} chunks/stream" if "chunks_per_stream" in r else ""))
        if engine := r.get("engine"):
            print(f"      engines: {engine['requests']} requests, first character "
                  f"~{_ms(engine['first_char_ms'])} ms, then ~{_ms(engine['sampling_ms'])} ms "
                  f"to the last (histogram estimates); {_figure(engine['calls_per_request'])} "
                  f"sampling calls a request of {_figure(engine['sequences_per_call'])} "
                  "sequences each")
        cpu = r.get("cpu_ms_per_request", {})
        print("      CPU ms/request: " + ", ".join(f"{role} {ms:.1f}" for role, ms in cpu.items())
              + f" (locust used {r['locust_cores']:.2f} cores; the machine "
              f"{r['host_busy_cores']:.2f} busy, {r['host_stolen_cores']:.2f} stolen)")
    for users in sorted({r["users"] for r in results}):
        serve_runs = [r for r in results if r["label"] == "serve" and r["users"] == users]
        floor_runs = [r for r in results if r["label"] == "floor" and r["users"] == users]
        ratios = [s["requests_per_s"] / f["requests_per_s"]
                  for s, f in zip(serve_runs, floor_runs, strict=False) if f["requests_per_s"]]
        if ratios:
            print(f"  {users} users: Serve / floor requests/s = "
                  + ", ".join(f"{r:.0%}" for r in ratios)
                  + f" (median {statistics.median(ratios):.0%})")
            # The same question in CPU: less swayed by what else runs on the machine.
            cpu = [_path_cpu_ms(f) / _path_cpu_ms(s)
                   for s, f in zip(serve_runs, floor_runs, strict=False) if _path_cpu_ms(s)]
            print(f"  {users} users: floor / Serve CPU per request (proxy + ingress + model) = "
                  + ", ".join(f"{r:.0%}" for r in cpu) + f" (median {statistics.median(cpu):.0%})")
        naive = [r for r in results if r["label"] == "naive" and r["users"] == users]
        if serve_runs and naive and naive[0]["chars_per_s"]:
            served = statistics.median(r["chars_per_s"] for r in serve_runs)
            print(f"  {users} users: Serve / naive chars/s = "
                  f"{served / naive[0]['chars_per_s']:.1f}x")


def _ms(value: float | None) -> str:
    return "?" if value is None else f"{value:.0f}"


def _figure(value: float | None) -> str:
    return "?" if value is None else f"{value:.1f}"


def _path_cpu_ms(run: dict) -> float:
    """CPU ms per request of the Serve processes on the path (locust not counted)."""
    return sum(ms for role, ms in run.get("cpu_ms_per_request", {}).items() if role != "locust")


def _medians(runs: list[dict]) -> list[dict]:
    """One run per user count (the median requests/s of its rounds), in user order."""
    by_users: dict[int, list[dict]] = {}
    for run in runs:
        by_users.setdefault(run["users"], []).append(run)
    return [sorted(group, key=lambda r: r["requests_per_s"])[len(group) // 2]
            for _, group in sorted(by_users.items())]


def plot(results: list[dict], replicas: list[tuple[float, int]], phases: list[dict],
         path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (rate_ax, ttfc_ax, replica_ax) = plt.subplots(1, 3, figsize=(17, 4.5))
    for label, style in (("serve", "o-"), ("floor", "^:"), ("naive", "s--")):
        runs = _medians([r for r in results if r["label"] == label])
        if not runs:
            continue
        users = [r["users"] for r in runs]
        rate_ax.plot(users, [r["chars_per_s"] for r in runs], style, label=label)
        for percentile, alpha in (("50%", 1.0), ("95%", 0.6), ("99%", 0.3)):
            ttfc_ax.plot(users, [r["ttfc_ms"][percentile] for r in runs], style, alpha=alpha,
                         label=f"{label} p{percentile[:-1]}")
    rate_ax.set(xlabel="locust users", ylabel="generated chars/s (all requests)",
                title="throughput")
    ttfc_ax.set(xlabel="locust users", ylabel="ms", yscale="log",
                title="time to first character (streamed)")
    if replicas:
        replica_ax.step([t for t, _ in replicas], [n for _, n in replicas], where="post")
    for phase in phases:
        replica_ax.axvspan(phase["start"], phase["end"], alpha=0.12, color="tab:orange")
        replica_ax.text(phase["start"], 0.2, phase["name"], fontsize=8)
    replica_ax.set(xlabel="seconds", ylabel="running Generator replicas", ylim=(0, None),
                   title="autoscaling under the load steps")
    for ax in (rate_ax, ttfc_ax):
        ax.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def serve_step(args, users: int, model: str, session_dir: str) -> dict:
    """A locust step against rnnserve, with a probe counting the chunks of its streams, and
    what the engines did meanwhile."""
    probe = ChunkProbe(args.host, model)
    engines = EngineMeter(f"http://127.0.0.1:{METRICS_PORT}/metrics")
    engines.start()
    probe.start()
    result = run_locust(args.host, users, args.seconds, model, "serve",
                        CpuMeter(serve_roles(SERVE_APP, "Ingress", "Generator"), session_dir))
    probe.stopped.set()
    probe.join()
    return {**result, "chunks_per_stream": probe.median(),
            "engine": engines.stop(result["generated_requests"] + len(probe.counts), LENGTH)}


def floor_step(args, users: int, chunks: int, session_dir: str) -> dict:
    """The same locust step against the floor app streaming `chunks` chunks per request."""
    model = deploy_floor(chunks)
    result = run_locust(args.host + FLOOR_PREFIX, users, args.seconds, model, "floor",
                        CpuMeter(serve_roles(FLOOR_APP, "FloorIngress", "FloorGenerator"),
                                 session_dir))
    return {**result, "chunks_per_stream": chunks}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="http://127.0.0.1:8000")
    parser.add_argument("--users", default="32", help="comma-separated user counts")
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--cooldown", type=int, default=90,
                        help="idle seconds after the load, to record the scale-down")
    parser.add_argument("--floor", action="store_true",
                        help="also load Ray Serve's floor (loadtest/floor_app.py)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="serve (and floor) steps per user count, alternating")
    parser.add_argument("--naive", action="store_true", help="also load the naive server")
    args = parser.parse_args(argv)
    users = [int(u) for u in args.users.split(",")]
    ensure_app(args.host)
    model = ensure_model(args.host)

    import ray

    ray.init(address="auto", log_to_driver=False)
    # Only this cluster's processes count (a test suite's cluster may run an app of this name).
    session_dir = ray._private.worker._global_node.get_session_dir_path()
    results, phases = [], []
    sampler = ReplicaSampler()
    sampler.start()

    def step(name: str, run, *run_args) -> dict:
        begin = time.monotonic() - sampler.started
        result = run(*run_args)
        phases.append({"name": name, "start": begin, "end": time.monotonic() - sampler.started})
        return result

    for count in users:
        # Serve and floor alternate, `rounds` times: on a shared machine the load of other
        # processes drifts, and a ratio of neighbouring steps is steadier than of distant ones.
        for round_ in range(args.rounds):
            result = step(f"{count} users", serve_step, args, count, model, session_dir)
            result["max_replicas"] = max((n for t, n in sampler.samples
                                          if phases[-1]["start"] <= t <= phases[-1]["end"]),
                                         default=0)
            results.append({**result, "round": round_})
            if args.floor:
                floor = step(f"{count} floor", floor_step, args, count,
                             result["chunks_per_stream"], session_dir)
                results.append({**floor, "round": round_})
    print(f"load over; recording {args.cooldown} s of scale-down", flush=True)
    time.sleep(args.cooldown)
    sampler.stopped.set()
    if args.floor:
        from ray import serve

        with SERVE_CALLS:
            serve.delete(FLOOR_APP)
    if args.naive:
        naive = start_naive(model)
        try:
            for count in users:
                results.append(run_locust("http://127.0.0.1:8100", count, args.seconds, model,
                                          "naive"))
        finally:
            naive.terminate()
    report(results)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "load.json").write_text(json.dumps(
        {"machine": f"{os.cpu_count()} cores", "model": model, "runs": results,
         "replicas": sampler.samples, "phases": phases}, indent=2))
    plot(results, sampler.samples, phases, RESULTS / "load.png")
    print(f"wrote {RESULTS / 'load.json'} and load.png; locust reports in {REPORTS}")
    if any(r["failures"] for r in results if r["label"] in ("serve", "floor")):
        raise SystemExit("failed requests against a Serve app")


if __name__ == "__main__":
    main()

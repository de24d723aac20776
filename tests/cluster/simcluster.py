"""A simulated multi-node Ray cluster on this machine, and what the cluster tests and the
cluster benchmark do with it: train through the trainer's command line, deploy the Serve app,
put a bounded HTTP load on it, and look up where Ray placed things.

`ray.cluster_utils.Cluster` starts a head plus extra raylets on this machine; removing a raylet
(`remove_node(..., allow_graceful=False)`) is a node dying. All nodes share this filesystem,
which stands in for the shared storage (NFS) of a real cluster.

Everything runs beside other Ray instances on the machine: every port is a fresh one, every
Ray file (and Ray's "current cluster" address file) lives under this process's own temp dir,
and teardown ends only this cluster's processes.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from deployments.serve_config import changed_config, deployment, write_config
from tests.conftest import deploy_app
from tests.processes import kill_processes_marked

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = Path(os.environ.get("RNNSERVE_SHARED_DATA", REPO.parent / "shared" / "data"))
# Short: Unix socket paths of every node live below it (the kernel caps them at 107 bytes).
TEMP_ROOT = f"/tmp/rnc-{os.getpid()}"
APP = "rnnserve"
# A model small enough for 1-CPU nodes on a shared 2-core machine.
TINY_MODEL = ["--lstm_size", "32", "--num_layers", "1", "--num_seqs", "8", "--num_steps", "20",
              "--learning_rate", "0.01", "--val_frac", "0.05"]


def corpus_slice(directory: Path) -> str:
    """A slice of tinyshakespeare (from the shared data) written to `directory`: enough text
    for the tiny model, quick to split and batch. Returns its path."""
    text = (SHARED_DATA / "tinyshakespeare.txt").read_text(encoding="utf-8")
    path = Path(directory) / "shakespeare-slice.txt"
    path.write_text(text[:60_000], encoding="utf-8")
    return str(path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float, interval: float = 0.5, what: str = "condition"):
    """Poll until predicate() is truthy and return its value; TimeoutError names `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def cluster_env(storage: Path, db_url: str, temp_root: str) -> dict:
    """What every process of a test cluster reads from its environment: the shared storage and
    registry, and Ray's settings for a cluster that lives beside others on this machine."""
    return {
        "RNNSERVE_STORAGE": str(storage), "RNNSERVE_DB_URL": db_url,
        # Ray writes its "current cluster" file under RAY_TMPDIR: keep it out of /tmp/ray,
        # where another Ray instance of this machine may keep its own.
        "RAY_TMPDIR": temp_root,
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_AUTH_MODE": "disabled",  # loopback only, as in the main test session
        # Proxies on a busy 2-core machine take longer than Serve's default to be ready.
        "RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": "20",
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }


class ClusterView:
    """What tests read from a running test cluster through its dashboard (`self.dashboard`)
    and the GCS (this process's `ray.init`). Its Ray files live under `self.temp_root`."""

    dashboard: str
    temp_root: str

    def _dashboard_up(self) -> bool:
        import requests

        try:
            return requests.get(f"{self.dashboard}/api/version", timeout=2).ok
        except requests.RequestException:
            return False

    def alive_nodes(self) -> dict[str, dict]:
        import ray

        return {n["NodeID"]: n for n in ray.nodes() if n["Alive"]}

    def metrics_url(self, node_id: str) -> str:
        return f"http://127.0.0.1:{self.alive_nodes()[node_id]['MetricsExportPort']}/metrics"

    def actors(self, class_name: str) -> list[dict]:
        """Alive actors whose class name contains `class_name`, with their node ids."""
        from ray.util.state import list_actors

        found = list_actors(address=self.dashboard, filters=[("state", "=", "ALIVE")],
                            limit=10_000, raise_on_missing_output=False)
        return [{"node_id": a.node_id, "name": a.name, "class_name": a.class_name,
                 "pid": a.pid} for a in found if class_name in a.class_name]

    def log_lines_with(self, text: str) -> list[str]:
        """Lines of any process's log on any node of this cluster (Serve replicas, Ray workers,
        job drivers: every node writes under the cluster's temp dir) that contain `text`."""
        found = []
        for path in Path(self.temp_root).glob("ray/session_*/logs/**/*"):
            if path.is_file() and path.suffix in (".log", ".out", ".err"):
                with open(path, errors="replace") as f:
                    found += [f"{path.name}: {line.strip()[:300]}" for line in f if text in line]
        return found


class SimCluster(ClusterView):
    """A head with 0 CPUs (GCS, dashboard, Serve controller, a proxy, the drivers) and worker
    nodes of 1 CPU each, so every training worker and Generator replica lands on a node that
    can be removed."""

    temp_root = TEMP_ROOT

    def __init__(self, storage: Path, workers: int = 2, head_resources: dict | None = None):
        import ray
        from ray.cluster_utils import Cluster

        self.storage = Path(storage)
        self.db_url = f"sqlite:///{self.storage}/registry.db"
        os.makedirs(TEMP_ROOT, exist_ok=True)
        # The raylets and their workers inherit this process's environment.
        os.environ.update(cluster_env(self.storage, self.db_url, TEMP_ROOT))
        self.env = dict(os.environ)
        self.dashboard_port = free_port()
        self.cluster = Cluster(initialize_head=True, head_node_args={
            "num_cpus": 0, "temp_dir": f"{TEMP_ROOT}/ray",
            "include_dashboard": True, "dashboard_host": "127.0.0.1",
            "dashboard_port": self.dashboard_port, "metrics_export_port": free_port(),
            "dashboard_agent_listen_port": free_port(), "runtime_env_agent_port": free_port(),
            "resources": head_resources or {},
        })
        self.head = self.cluster.head_node
        self.workers = []
        for _ in range(workers):
            self.add_worker()
        self.cluster.wait_for_nodes()
        ray.init(address=self.address, log_to_driver=False)
        self.dashboard = f"http://127.0.0.1:{self.dashboard_port}"
        wait_until(self._dashboard_up, 60, what="the dashboard")

    @property
    def address(self) -> str:
        return self.cluster.address

    def add_worker(self, **resources):
        node = self.cluster.add_node(
            num_cpus=1, temp_dir=f"{TEMP_ROOT}/ray",
            metrics_export_port=free_port(), runtime_env_agent_port=free_port(),
            resources=resources or None)
        self.workers.append(node)
        return node

    def remove_worker(self, node_id: str) -> None:
        """The node with this id dies (its raylet and every process on it are killed)."""
        node = next(n for n in self.workers if n.node_id == node_id)
        self.workers.remove(node)
        self.cluster.remove_node(node, allow_graceful=False)

    def shutdown(self) -> None:
        import ray

        try:
            from ray import serve

            serve.shutdown()
        except Exception:  # noqa: BLE001 - the cluster may be half gone already
            pass
        ray.shutdown()
        try:
            self.cluster.shutdown()
        finally:
            # Leftovers (a trainer's driver, dashboard modules): only processes that carry
            # this cluster's temp dir on their command line, and their children (with the
            # slash: /tmp/rnc-12 must not match another process's /tmp/rnc-123).
            kill_processes_marked(f"{TEMP_ROOT}/")


# ---- training ------------------------------------------------------------------------------
def start_trainer(cluster: SimCluster, *args: str, db_url: str | None = None) -> subprocess.Popen:
    """`python -m trainers.charrnn ...` as a user runs it against the cluster; the registry is
    the cluster's unless `db_url` names another."""
    env = {**cluster.env, "RAY_ADDRESS": cluster.address}
    return subprocess.Popen(
        [sys.executable, "-m", "trainers.charrnn", *args, "--storage", str(cluster.storage),
         "--db_url", db_url or cluster.db_url],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def registry_for(cluster: SimCluster, db_url: str | None = None):
    """The cluster's registry (or the one at `db_url`); making it creates the schema."""
    from registry import Registry, Settings

    return Registry(Settings.from_env(storage=str(cluster.storage),
                                      db_url=db_url or cluster.db_url))


def logs_of(registry, name: str, version: int = 1) -> list[str]:
    try:
        return registry.read_logs(name, version)
    except Exception:  # noqa: BLE001 - the version may not exist yet
        return []


def checkpoint_steps(lines: list[str]) -> list[int]:
    return [int(m.group(1)) for line in lines if (m := re.match(r"checkpoint: step (\d+)", line))]


def logged_steps(lines: list[str]) -> list[int]:
    return [int(m.group(1)) for line in lines if (m := re.match(r"step (\d+)/\d+ ", line))]


def resumed_steps(lines: list[str]) -> list[int]:
    return [int(m.group(1)) for line in lines
            if (m := re.match(r"resumed from checkpoint at step (\d+)", line))]


def train_workers(cluster: SimCluster) -> list[dict]:
    return cluster.actors("RayTrainWorker")


@dataclass
class NodeLossRun:
    """What happened to a training run that lost a node."""

    killed_node: str
    checkpoint_at_kill: int  # latest checkpoint Ray Train's controller had when the node died
    step_at_kill: int  # latest step in the log when the node died
    resumed_at: list[int]
    nodes_after: list[str]  # nodes of the two workers after the resume
    regrouped_after_s: float | None  # from the node's death to two workers running again
    lines: list[str]
    output: str
    returncode: int
    seconds: float

    @property
    def steps_lost(self) -> int:
        """Steps trained before the loss and trained again after it (lower bound from the log:
        the highest step logged before the resume line, minus the step resumed from)."""
        resume_index = next(i for i, line in enumerate(self.lines)
                            if line.startswith("resumed from checkpoint"))
        before = logged_steps(self.lines[:resume_index])
        return max(before) - self.resumed_at[0]


def train_and_lose_a_node(cluster: SimCluster, registry, corpus: str, name: str, *,
                          max_steps: int, save_every_n: int, log_every_n: int,
                          after_checkpoints: int = 2,
                          timeout: float = 480) -> NodeLossRun:
    """Train with two workers on two nodes; once `after_checkpoints` checkpoints are logged and
    Ray Train's controller has the latest one, the node of one worker dies and a spare node
    joins; wait for the run to end."""
    started = time.monotonic()
    process = start_trainer(cluster, "--input_file", corpus, "--name", name, "--num_workers", "2",
                            "--max_steps", str(max_steps), "--save_every_n", str(save_every_n),
                            "--log_every_n", str(log_every_n), "--max_failures", "3", *TINY_MODEL)
    try:
        def controller_checkpoint():
            """Step of the latest checkpoint Ray Train's controller has on its books (its
            snapshot beside the run's checkpoints on the shared storage)."""
            for path in Path(cluster.storage, "runs").rglob("checkpoint_manager_snapshot.json"):
                if name in path.relative_to(cluster.storage).parts:
                    try:
                        latest = json.loads(path.read_text())["latest_checkpoint_result"]
                    except (ValueError, KeyError, OSError):
                        return None  # being rewritten
                    return latest and latest["metrics"]["step"]
            return None

        def caught_up():
            """At least `after_checkpoints` checkpoints logged, the latest one already on the
            controller's books (a node lost before that resumes from the one before), and
            room left before the end of the run."""
            if process.poll() is not None:
                raise RuntimeError("trainer ended early:\n" + process.stdout.read()[-3000:])
            steps = checkpoint_steps(logs_of(registry, name))
            if len(steps) < after_checkpoints or steps[-1] > max_steps - 2 * save_every_n:
                return None
            return controller_checkpoint() == steps[-1]

        wait_until(lambda: len(train_workers(cluster)) == 2, timeout / 2, interval=1,
                   what="two training workers")
        victim = sorted({w["node_id"] for w in train_workers(cluster)})[-1]
        wait_until(caught_up, timeout / 2, interval=0.1, what="a checkpoint on the books")
        checkpoint_at_kill = controller_checkpoint()
        lines = logs_of(registry, name)
        step_at_kill = max(logged_steps(lines))
        t_kill = time.monotonic()
        cluster.remove_worker(victim)
        cluster.add_worker()

        def new_group():
            if process.poll() is not None:
                return True
            workers = train_workers(cluster)
            nodes = [w["node_id"] for w in workers]
            return nodes if len(nodes) == 2 and victim not in nodes else None

        nodes_after = wait_until(new_group, timeout / 2, interval=1, what="a new worker group")
        regrouped_after_s = None if nodes_after is True else time.monotonic() - t_kill
        nodes_after = [] if nodes_after is True else nodes_after
        output, _ = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    lines = logs_of(registry, name)
    return NodeLossRun(victim, checkpoint_at_kill, step_at_kill, resumed_steps(lines),
                       nodes_after, regrouped_after_s, lines,
                       output, process.returncode, time.monotonic() - started)


# ---- serving -------------------------------------------------------------------------------
def cluster_serve_config(port: int, generator_replicas: int = 2,
                         proxy_location: str = "EveryNode",
                         generator_autoscaling: dict | None = None) -> dict:
    """serve_config.yaml, changed for the simulated cluster: the HTTP port; Generator replicas
    spread one per node; the Ingress (2 replicas) on the head, as cluster.yaml places it (the
    head carries a custom resource `ingress` for it); a small Generator queue bound
    (max_ongoing_requests) so the router spreads one model's requests over both replicas; the
    per-client rate limit off (every simulated client comes from one address).
    `generator_autoscaling`, if given, replaces the Generator's fixed replica count: Serve then
    scales it (one replica per node, so each replica added needs a node)."""
    config = changed_config(port, inference_per_s=0)  # 0 turns the limiter off
    config["proxy_location"] = proxy_location
    deployment(config, "Ingress").update(num_replicas=2, ray_actor_options={
        "num_cpus": 0, "resources": {"ingress": 1}})
    generator = deployment(config, "Generator")
    generator.pop("autoscaling_config", None)
    generator.update(max_replicas_per_node=1, max_ongoing_requests=4, health_check_period_s=1,
                     health_check_timeout_s=5)
    if generator_autoscaling:
        generator["autoscaling_config"] = generator_autoscaling
    else:
        generator["num_replicas"] = generator_replicas
    classifier = deployment(config, "Classifier")
    classifier.pop("autoscaling_config", None)
    classifier.update(num_replicas=1)
    return config


def deploy(cluster: SimCluster, config: dict, tmp_dir: Path, timeout: float = 240) -> str:
    """`serve deploy` the config onto the cluster (as a user does), wait for /healthz; returns
    the app's base URL."""
    path = write_config(config, Path(tmp_dir) / "serve_config.yaml")
    url = f"http://127.0.0.1:{config['http_options']['port']}"
    deploy_app({"dashboard": cluster.dashboard, "env": cluster.env}, path, url, timeout)
    return url


def serve_shutdown(cluster: SimCluster) -> None:
    """Shut Serve down (the proxy location changes only with a fresh Serve instance); from this
    process, so its own Serve client is dropped too."""
    from ray import serve

    serve.shutdown()
    wait_until(lambda: not cluster.actors("ServeReplica:"), 120, what="Serve replicas to end")


def replica_states(deployment: str) -> dict:
    from ray import serve

    app = serve.status().applications.get(APP)
    if app is None or deployment not in app.deployments:
        return {}
    return dict(app.deployments[deployment].replica_states)


def running(deployment: str) -> int:
    return replica_states(deployment).get("RUNNING", 0)


@dataclass
class Outcome:
    started: float
    ended: float
    stream: bool
    kind: str  # "ok", "http" (an error answer), "connection" (no answer), "cut" (stream ended
    # with an error mid-way), "short" (stream ended cleanly but incomplete: must never happen)
    detail: str = ""
    chars: int = 0

    @property
    def latency(self) -> float:
        return self.ended - self.started


@dataclass
class Load:
    """A bounded closed-loop load on loopback: `clients` threads each send one generate request
    at a time (a fresh connection each, so the kernel spreads them over every node's proxy);
    `stream_clients` of them stream."""

    url: str
    model: str
    clients: int = 4
    stream_clients: int = 1
    max_length: int = 300
    outcomes: list[Outcome] = field(default_factory=list)

    def __post_init__(self):
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client, args=(i,), daemon=True)
                         for i in range(self.clients)]

    def start(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> list[Outcome]:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=120)
        return self.outcomes

    def _client(self, index: int) -> None:
        stream = index < self.stream_clients
        seed = index * 1000
        while not self._stop.is_set():
            seed += 1
            self.outcomes.append(self.request(stream, seed))

    def request(self, stream: bool, seed: int) -> Outcome:
        import requests

        body = {"prime": "ROMEO:", "max_length": self.max_length, "temperature": 0.8,
                "seed": seed, "stream": stream}
        started = time.monotonic()
        try:
            with requests.post(f"{self.url}/models/{self.model}/generate", json=body,
                               stream=stream, timeout=120,
                               headers={"Connection": "close"}) as response:
                if response.status_code != 200:
                    return Outcome(started, time.monotonic(), stream, "http",
                                   f"{response.status_code} {response.text[:200]}")
                if not stream:
                    chars = response.json()["generated_chars"]
                    return Outcome(started, time.monotonic(), stream, "ok", chars=chars)
                text = ""
                try:
                    for chunk in response.iter_content(chunk_size=None, decode_unicode=True):
                        text += chunk
                except requests.RequestException as error:
                    return Outcome(started, time.monotonic(), stream, "cut",
                                   type(error).__name__, len(text))
                kind = "ok" if len(text) == self.max_length else "short"
                return Outcome(started, time.monotonic(), stream, kind, chars=len(text))
        except requests.RequestException as error:
            return Outcome(started, time.monotonic(), stream, "connection",
                           f"{type(error).__name__}: {str(error)[:160]}")


def ingress_errors() -> list[str]:
    """Exception lines the Ingress replicas logged (their log files on the head): what the
    ingress saw when a request failed inside it."""
    found = []
    for path in Path(TEMP_ROOT, "ray").glob("session_*/logs/serve/replica_*Ingress*.log"):
        for line in path.read_text(errors="replace").splitlines():
            m = re.match(r"^(ray\.exceptions\.\w+|[\w.]*(?:Error|Exception)\w*):", line.strip())
            if m:
                found.append(line.strip()[:300])
    return found


def node_loss_under_load(cluster: SimCluster, url: str, model: str, *, clients: int = 4,
                         stream_clients: int = 1, max_length: int = 300, before_s: float = 4.0,
                         after_s: float = 4.0, timeout: float = 120) -> dict:
    """Load the app, kill the node of one Generator replica, add a spare node, wait until two
    Generator replicas run again; return the outcomes and the timings (monotonic seconds) with
    a timeline of (t, nodes alive, Generator replicas running)."""
    generators = cluster.actors("ServeReplica:rnnserve:Generator")
    victim = sorted(g["node_id"] for g in generators)[0]
    replicas_before = {g["name"] for g in generators}

    def replaced() -> bool:
        """A Generator replica started since the kill is alive: on a loaded machine the GCS and
        Serve's controller notice a dead node seconds late, and until then Serve still counts
        the lost replica as RUNNING."""
        return any(g["name"] not in replicas_before
                   for g in cluster.actors("ServeReplica:rnnserve:Generator"))
    timeline = []

    def sample() -> int:
        count = running("Generator")
        timeline.append((time.monotonic(), len(cluster.alive_nodes()), count))
        return count

    def watch(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            sample()
            time.sleep(0.25)

    load = Load(url, model, clients, stream_clients, max_length).start()
    t0 = time.monotonic()
    watch(before_s)
    t_kill = time.monotonic()
    cluster.remove_worker(victim)
    t_removed = time.monotonic()
    sample()
    cluster.add_worker()
    t_added = time.monotonic()
    back = None
    while time.monotonic() - t_kill < timeout:
        if sample() >= 2 and sum(replica_states("Generator").values()) == 2 and replaced():
            back = time.monotonic()  # two running, one new, nothing starting or stopping
            break
        time.sleep(0.25)
    watch(after_s)
    outcomes = load.stop()
    t_end = time.monotonic()
    return {"t0": t0, "t_kill": t_kill, "t_removed": t_removed, "t_added": t_added,
            "t_back": back, "t_end": t_end, "victim": victim, "outcomes": outcomes,
            "timeline": timeline, "ingress_errors": ingress_errors()}


# SQLite's lock error, and SQLAlchemy's OperationalError, which carries it and PostgreSQL's
# counterparts (a connection refused, lost or timed out, too many clients).
DATABASE_ERRORS = ("database is locked", "OperationalError")


def registry_errors(cluster: ClusterView, outcomes: list[Outcome]) -> list[str]:
    """Every mention of a database error (DATABASE_ERRORS) in any log of any node of the
    cluster (replicas, training workers, job drivers) and in any answer the clients got."""
    return [found for text in DATABASE_ERRORS for found in (
        cluster.log_lines_with(text) + [o.detail for o in outcomes if text in o.detail])]


def summarize_loss(result: dict) -> dict:
    """Figures of a node loss: requests in flight at or after the kill, by kind."""
    t_kill = result["t_kill"]
    during = [o for o in result["outcomes"] if o.ended >= t_kill]
    before = [o for o in result["outcomes"] if o.ended < t_kill]

    def count(kind, stream):
        return sum(1 for o in during if o.kind == kind and o.stream == stream)

    return {
        "requests_before_kill": len(before),
        "failed_before_kill": sum(1 for o in before if o.kind != "ok"),
        "requests_after_kill": len(during),
        "non_streaming": {k: count(k, False) for k in ("ok", "http", "connection")},
        "streaming": {k: count(k, True) for k in ("ok", "http", "connection", "cut", "short")},
        "http_errors": sorted({o.detail for o in during if o.kind == "http"})[:5],
        "connection_errors": sorted({o.detail for o in during if o.kind == "connection"})[:5],
        "longest_request_s": round(max((o.latency for o in during), default=0.0), 3),
        "replicas_back_after_s": (None if result["t_back"] is None
                                  else round(result["t_back"] - t_kill, 2)),
        "node_removed_in_s": round(result["t_removed"] - t_kill, 2),
        "ingress_exceptions": sorted(set(result["ingress_errors"]))[:5],
    }

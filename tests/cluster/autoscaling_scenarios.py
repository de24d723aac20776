"""What Ray's autoscaler does with rnnserve's own work on an AutoscalingSimCluster: a training
job submitted with `--use_gpu` (it needs a GPU-type node), and a Serve load past the
Generator's autoscaling target (Serve adds a replica, the replica needs a node). Each scenario
returns what happened with a timeline of worker nodes by type and Generator replicas against
time: `make test-autoscaler` asserts on it, `make bench-cluster` records and plots it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field

from tests.cluster.autoscaling_cluster import (
    GPU_TYPES,
    SERVER_TYPES,
    TYPE_LABEL,
    AutoscalingSimCluster,
    types_with,
)
from tests.cluster.simcluster import (
    REPO,
    TINY_MODEL,
    Load,
    Outcome,
    cluster_serve_config,
    deploy,
    free_port,
    replica_states,
    running,
    train_workers,
    wait_until,
)
from tests.conftest import BIN

TERMINAL_JOB_STATES = ("SUCCEEDED", "FAILED", "STOPPED")


@dataclass
class Timeline:
    """Worker nodes alive by type and (if `count_replicas`) Generator replicas, running and in
    any state (starting, running, stopping: Serve's decision shows first there), sampled
    every `interval` s in a thread while the scenario runs."""

    cluster: AutoscalingSimCluster
    count_replicas: bool = False
    interval: float = 0.5
    samples: list[dict] = field(default_factory=list)

    def __enter__(self) -> Timeline:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _sample(self) -> None:
        while not self._stop.is_set():
            try:
                nodes = self.cluster.worker_counts()
                states = replica_states("Generator") if self.count_replicas else {}
            except Exception:  # noqa: BLE001 - one missed sample (a busy GCS) is no failure
                nodes = None
            if nodes is not None:
                self.samples.append({"t": time.monotonic(), "nodes": nodes,
                                     "generator_replicas": states.get("RUNNING", 0),
                                     "generator_replicas_any_state": sum(states.values())})
            self._stop.wait(self.interval)

    def latest_nodes(self, types: tuple[str, ...]) -> int | None:
        """Worker nodes of these types in the latest sample (what a scenario waits on, so the
        moment it sees is in the timeline too)."""
        return count_of(types, self.samples[-1]["nodes"]) if self.samples else None

    def first(self, predicate, after: float = 0.0) -> float | None:
        """Monotonic time of the first sample at or after `after` for which predicate(sample)
        holds."""
        return next((s["t"] for s in self.samples if s["t"] >= after and predicate(s)), None)

    def relative_to(self, t0: float) -> list[dict]:
        return [{**s, "t": round(s["t"] - t0, 2)} for s in self.samples]


def count_of(types: tuple[str, ...], counts: dict[str, int]) -> int:
    """How many worker nodes of these types, in {type: count}."""
    return sum(counts.get(kind, 0) for kind in types)


def since(t0: float, t: float | None) -> float | None:
    return None if t is None else round(t - t0, 2)


# ---- training on a GPU node --------------------------------------------------------------
@dataclass
class GpuTrainingRun:
    job_id: str
    status: str
    driver_log: str
    driver_node_type: str  # where the job's driver ran ("" if its node was gone already)
    worker_node: str  # node id of the Ray Train worker
    worker_node_type: str
    worker_node_resources: dict
    worker_group_wait_s: float | None  # from its GPU request to its node up and placed
    submitted_at: float
    gpu_node_up_at: float | None
    worker_ended_at: float | None  # the GPU released: the GPU node's idle time starts
    job_ended_at: float  # the driver ended: its node's idle time starts
    gpu_node_gone_at: float | None
    all_nodes_gone_at: float | None
    timeline: Timeline

    def figures(self) -> dict:
        t0 = self.submitted_at
        return {"job_status": self.status, "driver_node_type": self.driver_node_type,
                "worker_node_type": self.worker_node_type,
                "worker_group_waited_for_its_gpu_node_s": self.worker_group_wait_s,
                "gpu_node_up_after_submit_s": since(t0, self.gpu_node_up_at),
                "worker_ended_after_submit_s": since(t0, self.worker_ended_at),
                "job_ended_after_submit_s": since(t0, self.job_ended_at),
                "gpu_node_removed_after_worker_end_s": since(self.worker_ended_at,
                                                             self.gpu_node_gone_at),
                "last_node_removed_after_job_end_s": since(self.job_ended_at,
                                                           self.all_nodes_gone_at)}


def placement_wait_s(cluster: AutoscalingSimCluster, resource: str) -> float | None:
    """How long the latest placed placement group that asks for `resource` waited, by Ray's own
    count (from its creation request to every bundle placed): for a group that needed a new
    node, the autoscaler's decision, the launch and the node's start. (Ray Train places its
    worker group so.)"""
    from ray.util.state import list_placement_groups

    waits = [int(g.stats["end_to_end_creation_latency_us"]) / 1e6
             for g in list_placement_groups(address=cluster.dashboard, detail=True, limit=1000,
                                            raise_on_missing_output=False)
             if g.stats and int(g.stats.get("end_to_end_creation_latency_us") or 0)
             and any(resource in b.get("unit_resources", {}) for b in g.bundles or [])]
    return round(waits[-1], 2) if waits else None


def submit_job(cluster: AutoscalingSimCluster, job_id: str, *entrypoint: str) -> None:
    """`ray job submit` as README's "Run on a cluster" does, with the driver where the app puts
    an upload's: on a node with the `training_driver` resource if a node type declares it
    (cluster.yaml's cpu_server), else on the head. The entrypoint finds the storage and the
    registry in its node's environment, as on cluster.yaml's nodes."""
    from deployments.training_jobs import DRIVER_RESOURCE

    on_a_driver_node = (["--entrypoint-resources", json.dumps({DRIVER_RESOURCE: 1})]
                        if types_with(DRIVER_RESOURCE) else [])
    subprocess.run([str(BIN / "ray"), "job", "submit", "--address", cluster.dashboard,
                    "--submission-id", job_id, "--no-wait", *on_a_driver_node, "--",
                    *entrypoint], check=True, env=cluster.env, cwd=REPO, capture_output=True)


def train_on_a_gpu_node(cluster: AutoscalingSimCluster, corpus: str, name: str, *,
                        max_steps: int = 40, timeout: float = 600) -> GpuTrainingRun:
    """Submit `python -m trainers.charrnn --use_gpu` (one worker, a tiny model) to a cluster
    with no worker node; see where its driver and its worker run, wait for the job to end and
    for the idle nodes to be removed."""
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(cluster.dashboard)
    job_id = f"gpu-train-{name}-{uuid.uuid4().hex[:6]}"

    def gpu_nodes(sample: dict) -> int:
        return count_of(GPU_TYPES, sample["nodes"])

    def type_of(node_id: str | None) -> str:
        return cluster.alive_nodes().get(node_id, {}).get("Labels", {}).get(TYPE_LABEL, "")

    with Timeline(cluster) as timeline:
        submitted_at = time.monotonic()
        submit_job(cluster, job_id, sys.executable, "-m", "trainers.charrnn", "--input_file",
                   corpus, "--name", name, "--use_gpu", "--num_workers", "1", "--max_steps",
                   str(max_steps), "--save_every_n", str(max_steps), "--log_every_n", "10",
                   *TINY_MODEL)

        def worker_or_end():
            if client.get_job_status(job_id).value in TERMINAL_JOB_STATES:
                return [None]
            return train_workers(cluster)

        worker = wait_until(worker_or_end, timeout / 2, interval=1, what="a Ray Train worker")[0]
        node = cluster.alive_nodes().get(worker["node_id"], {}) if worker else {}
        group_wait_s = placement_wait_s(cluster, "GPU")
        driver_node_type = type_of(client.get_job_info(job_id).driver_node_id)
        worker_ended_at = None

        def job_end():
            nonlocal worker_ended_at
            if worker_ended_at is None and not train_workers(cluster):
                worker_ended_at = time.monotonic()
            status = client.get_job_status(job_id).value
            return status in TERMINAL_JOB_STATES and status

        status = wait_until(job_end, timeout, interval=1, what=f"job {job_id} to end")
        job_ended_at = time.monotonic()
        # Now: the job's log is served by its driver's node, which is about to be removed.
        driver_log = client.get_job_logs(job_id)
        try:
            wait_until(lambda: timeline.samples and timeline.samples[-1]["nodes"] == {},
                       cluster.idle_timeout_s + 120, interval=1, what="every node removed")
        except TimeoutError:
            pass  # the *_gone_at times stay None: the test says so
    return GpuTrainingRun(
        job_id=job_id, status=status, driver_log=driver_log,
        driver_node_type=driver_node_type,
        worker_node=worker["node_id"] if worker else "",
        worker_node_type=node.get("Labels", {}).get(TYPE_LABEL, ""),
        worker_node_resources=node.get("Resources", {}),
        worker_group_wait_s=group_wait_s, submitted_at=submitted_at,
        gpu_node_up_at=timeline.first(gpu_nodes, submitted_at),
        worker_ended_at=worker_ended_at, job_ended_at=job_ended_at,
        gpu_node_gone_at=timeline.first(lambda s: not gpu_nodes(s),
                                        worker_ended_at or job_ended_at),
        all_nodes_gone_at=timeline.first(lambda s: s["nodes"] == {}, job_ended_at),
        timeline=timeline)


# ---- serving past the Generator's autoscaling target -------------------------------------
# Serve scales the Generator by requests in flight per replica: one replica per node
# (cluster_serve_config), 1 to 2 replicas, a low target so a few clients push past it, short
# delays so the test does not wait on Serve's defaults.
GENERATOR_AUTOSCALING = {"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 2,
                         "upscale_delay_s": 2, "downscale_delay_s": 10}


def deploy_scaling_app(cluster: AutoscalingSimCluster, model: str, tmp_dir) -> str:
    """The real app (cluster_serve_config with GENERATOR_AUTOSCALING) deployed, its one
    Generator replica on the one serving node the autoscaler launched for it, the model
    loaded there. Only the head's proxy: the load reaches it, and a worker node holds nothing
    but replicas, so it is idle (and removed) once its replica is gone. Returns the app's URL."""
    import requests

    config = cluster_serve_config(free_port(), proxy_location="HeadOnly",
                                  generator_autoscaling=GENERATOR_AUTOSCALING)
    url = deploy(cluster, config, tmp_dir)
    wait_until(lambda: running("Generator") == 1
               and count_of(SERVER_TYPES, cluster.worker_counts()) == 1, 240,
               what="one Generator replica on one serving node")
    for seed in range(3):
        response = requests.post(f"{url}/models/{model}/generate", timeout=120,
                                 json={"prime": "ROMEO:", "max_length": 100, "seed": seed})
        response.raise_for_status()
    return url


@dataclass
class ScaleRun:
    load_started_at: float
    replica_added_at: float | None  # Serve's decision: a second replica, starting
    second_node_up_at: float | None
    two_replicas_at: float | None  # both running
    load_ended_at: float
    one_replica_at: float | None  # the second replica gone: its node's idle time starts
    second_node_gone_at: float | None
    outcomes: list[Outcome]
    timeline: Timeline

    def figures(self) -> dict:
        t0, t_end = self.load_started_at, self.load_ended_at
        return {"requests": len(self.outcomes),
                "failed": sum(1 for o in self.outcomes if o.kind != "ok"),
                "replica_added_after_load_start_s": since(t0, self.replica_added_at),
                "serving_node_up_after_replica_added_s": since(self.replica_added_at,
                                                               self.second_node_up_at),
                "two_replicas_running_after_load_start_s": since(t0, self.two_replicas_at),
                "load_s": round(t_end - t0, 1),
                "one_replica_after_load_end_s": since(t_end, self.one_replica_at),
                "serving_node_removed_after_its_replica_s": since(self.one_replica_at,
                                                                  self.second_node_gone_at)}


def serve_past_the_target(cluster: AutoscalingSimCluster, url: str, model: str, *,
                          clients: int = 8, hold_s: float = 6,
                          timeout: float = 300) -> ScaleRun:
    """With one Generator replica on one serving node, `clients` closed-loop clients (more
    requests in flight than the target) until a second replica runs and `hold_s` more; then
    no load until Serve is back to one replica and the autoscaler to one serving node."""
    def server_nodes(sample: dict) -> int:
        return count_of(SERVER_TYPES, sample["nodes"])

    def settled():  # one replica running, none starting or stopping
        return running("Generator") == 1 and sum(replica_states("Generator").values()) == 1

    with Timeline(cluster, count_replicas=True) as timeline:
        load = Load(url, model, clients=clients, stream_clients=0).start()
        started = time.monotonic()
        try:
            wait_until(lambda: running("Generator") >= 2, timeout, interval=0.5,
                       what="a second Generator replica running")
            time.sleep(hold_s)
        finally:
            outcomes = load.stop()
        ended = time.monotonic()
        for condition, what in ((settled, "one Generator replica"),
                                (lambda: timeline.latest_nodes(SERVER_TYPES) == 1,
                                 "one serving node")):
            try:
                wait_until(condition, cluster.idle_timeout_s + timeout / 2, interval=0.5,
                           what=what)
            except TimeoutError:
                break  # the matching time stays None: the test says so
    return ScaleRun(
        load_started_at=started,
        replica_added_at=timeline.first(lambda s: s["generator_replicas_any_state"] >= 2,
                                        started),
        second_node_up_at=timeline.first(lambda s: server_nodes(s) >= 2, started),
        two_replicas_at=timeline.first(lambda s: s["generator_replicas"] >= 2, started),
        load_ended_at=ended,
        one_replica_at=timeline.first(lambda s: s["generator_replicas_any_state"] == 1, ended),
        second_node_gone_at=timeline.first(lambda s: server_nodes(s) <= 1, ended),
        outcomes=outcomes, timeline=timeline)

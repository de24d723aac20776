"""The autoscaler part of `make bench-cluster` (issue 15, item 5): Ray's real autoscaler with
cluster.yaml's node types scaled to this machine (tests/cluster/autoscaling_cluster.py),
measured through the scenarios `make test-autoscaler` asserts on
(tests/cluster/autoscaling_scenarios.py):

1. From no worker node, `ray job submit` of `python -m trainers.charrnn --use_gpu` (one
   worker, a tiny LSTM): how long the worker group waited for its GPU node, and how long after
   the worker ended the idle node was removed.
2. The real Serve app (Generator autoscaling 1-2 replicas, one per node) under a load past its
   target: when Serve added a replica, when the autoscaler's serving node for it was up, and
   after the load when the replica went and when its idle node was removed.

Node and replica counts against time go into the JSON and the plot.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from deployments.training_jobs import DRIVER_RESOURCE
from tests.cluster.autoscaling_cluster import (
    GPU_TYPES,
    SERVER_TYPES,
    TEMP_ROOT,
    AutoscalingSimCluster,
    fake_node_types,
    types_with,
)
from tests.cluster.autoscaling_scenarios import (
    GENERATOR_AUTOSCALING,
    count_of,
    deploy_scaling_app,
    serve_past_the_target,
    train_on_a_gpu_node,
)
from tests.cluster.simcluster import registry_errors, registry_for

IDLE_TIMEOUT_S = 15  # cluster.yaml: 10 minutes
MODEL = "gpu-bard"


def measure(work: Path, corpus: str) -> dict:
    storage = work / "autoscaler-storage"
    storage.mkdir()
    started = time.monotonic()
    cluster = AutoscalingSimCluster(storage, f"sqlite:///{storage}/registry.db",
                                    idle_timeout_s=IDLE_TIMEOUT_S, head_resources={"ingress": 2})
    try:
        registry = registry_for(cluster)  # the schema, before jobs on other nodes use it
        training = train_on_a_gpu_node(cluster, corpus, MODEL)
        if training.status != "SUCCEEDED" or registry.get_version(MODEL, 1).status != "ready":
            raise RuntimeError("the GPU job failed:\n" + training.driver_log[-3000:])
        print("autoscaler, training:", training.figures(), flush=True)
        url = deploy_scaling_app(cluster, MODEL, work)
        serving = serve_past_the_target(cluster, url, MODEL)
        print("autoscaler, serving:", serving.figures(), flush=True)
        database_errors = registry_errors(cluster, serving.outcomes)
    finally:
        cluster.shutdown()
        shutil.rmtree(TEMP_ROOT, ignore_errors=True)
    return {
        "cluster": {"head_cpus": 0, "node_types": fake_node_types(),
                    "idle_timeout_s": IDLE_TIMEOUT_S, "autoscaler_update_interval_s": 1,
                    "registry": "SQLite on the shared storage"},
        "training": {**training.figures(),
                     "timeline": training.timeline.relative_to(training.submitted_at)},
        "serving": {"generator_autoscaling": GENERATOR_AUTOSCALING, **serving.figures(),
                    "timeline": serving.timeline.relative_to(serving.load_started_at)},
        "database_error_mentions": len(database_errors),
        "total_seconds": round(time.monotonic() - started, 1),
    }


def plot(training_axis, serving_axis, data: dict) -> None:
    """Worker nodes by kind through the GPU job; serving nodes and Generator replicas through
    the load (its span shaded)."""
    training, serving = data["training"], data["serving"]
    tl = training["timeline"]
    t = [s["t"] for s in tl]
    training_axis.step(t, [count_of(GPU_TYPES, s["nodes"]) for s in tl], where="post",
                       label=f"GPU-type worker nodes ({training['worker_node_type']}: the worker)")
    driver_types = types_with(DRIVER_RESOURCE)
    training_axis.step(t, [count_of(driver_types, s["nodes"]) for s in tl], where="post",
                       linestyle="--", label=f"{training['driver_node_type'] or 'head'} nodes "
                                             f"(the job's driver)")
    for key, label, height in (("worker_ended_after_submit_s", "worker ended", 2.3),
                               ("job_ended_after_submit_s", "job ended", 2.0)):
        if training[key] is not None:
            training_axis.axvline(training[key], linestyle=":", linewidth=1, color="gray")
            training_axis.annotate(label, (training[key], height), fontsize=8)
    training_axis.set_ylim(0, 3.6)
    training_axis.set_yticks([0, 1, 2, 3])
    training_axis.set_xlabel("seconds since `ray job submit ... --use_gpu`")
    training_axis.set_ylabel("nodes")
    training_axis.set_title(
        f"Autoscaler, GPU job from no worker node: its worker group waited "
        f"{training['worker_group_waited_for_its_gpu_node_s']} s for a launched node; idle "
        f"nodes removed\n{training['gpu_node_removed_after_worker_end_s']} s after the worker "
        f"ended (GPU node), {training['last_node_removed_after_job_end_s']} s after the job "
        f"ended (driver's node); idle timeout {data['cluster']['idle_timeout_s']} s", fontsize=9)
    training_axis.legend(loc="upper left", fontsize=8)

    tl = serving["timeline"]
    t = [s["t"] for s in tl]
    serving_axis.step(t, [count_of(SERVER_TYPES, s["nodes"]) for s in tl], where="post",
                      label="serving worker nodes (cpu_server)")
    serving_axis.step(t, [s["generator_replicas"] for s in tl], where="post",
                      label="Generator replicas running")
    serving_axis.step(t, [s["generator_replicas_any_state"] for s in tl], where="post",
                      linestyle=":", label="Generator replicas, any state")
    serving_axis.axvspan(0, serving["load_s"], color="orange", alpha=0.15, label="load")
    serving_axis.set_ylim(0, 3.6)
    serving_axis.set_yticks([0, 1, 2, 3])
    serving_axis.set_xlabel("seconds since the load began")
    serving_axis.set_ylabel("count")
    serving_axis.set_title(
        f"Autoscaler, Serve load past the Generator's target: serving node up "
        f"{serving['serving_node_up_after_replica_added_s']} s after Serve added a replica; "
        f"its idle node removed\n{serving['serving_node_removed_after_its_replica_s']} s after "
        f"the replica went; {serving['failed']} of {serving['requests']} requests failed",
        fontsize=9)
    serving_axis.legend(loc="upper right", fontsize=8, ncol=2)

"""The autoscaler from cluster.yaml's node types (issue 15, item 5) and the registry reached
from every node with PostgreSQL (item 6).

Starting from no worker node: a `ray job submit` of the trainer with `--use_gpu` makes the
autoscaler launch a GPU-type node, which is removed once idle; then the real Serve app (one
Generator replica per node, Serve autoscaling 1-2) under a load past its target makes Serve add
a replica and the autoscaler a serving node, and both go after the load.
"""

from __future__ import annotations

from tests.autoscaler.conftest import IDLE_TIMEOUT_S
from tests.cluster.autoscaling_cluster import GPU_TYPES
from tests.cluster.autoscaling_scenarios import (
    deploy_scaling_app,
    serve_past_the_target,
    train_on_a_gpu_node,
)
from tests.cluster.simcluster import logged_steps, registry_lock_errors

MODEL = "gpu-bard"
# How long after its idle timeout the autoscaler may take to remove a node: its 1 s update
# loop, and a busy 2-core machine.
REMOVAL_SLACK_S = 45


def test_a_gpu_job_launches_a_gpu_node_that_is_removed_when_idle(cluster, registry, corpus):
    run = train_on_a_gpu_node(cluster, corpus, MODEL)
    print("\ntraining on a GPU node:", run.figures())
    assert run.status == "SUCCEEDED", run.driver_log[-4000:]
    assert run.timeline.samples[0]["nodes"] == {}, "a worker node was up before the job"
    # The Ray Train worker ran on a node the autoscaler launched for it, of a GPU type.
    assert run.worker_node_type in GPU_TYPES, (run.worker_node_type, run.worker_node_resources)
    assert run.worker_node_resources.get("GPU") == 1
    assert run.gpu_node_up_at is not None
    # The version is registered, and its training log came from the worker on that node.
    assert registry.get_version(MODEL, 1).status == "ready"
    assert max(logged_steps(registry.read_logs(MODEL, 1))) == 40
    # Idle once the job ended: removed after the idle timeout, back to no worker node.
    assert run.gpu_node_gone_at is not None, "the idle GPU node was not removed"
    idle_s = run.gpu_node_gone_at - run.job_ended_at
    assert idle_s <= IDLE_TIMEOUT_S + REMOVAL_SLACK_S, idle_s
    assert run.timeline.samples[-1]["nodes"] == {}


def test_serve_load_adds_a_replica_and_a_node_and_both_go_after(cluster, registry,
                                                                tmp_path_factory):
    assert registry.get_version(MODEL, 1).status == "ready", "needs the model trained above"
    url = deploy_scaling_app(cluster, MODEL, tmp_path_factory.mktemp("serve"))
    run = serve_past_the_target(cluster, url, MODEL)
    print("\nserving past the autoscaling target:", run.figures())
    # Serving nodes are of cluster.yaml's cpu_server type: a CPU-only replica takes no GPU node.
    assert {kind for s in run.timeline.samples for kind in s["nodes"]} == {"cpu_server"}
    # Up: Serve added a replica, the autoscaler a serving node for it.
    assert run.two_replicas_at is not None and run.second_node_up_at is not None
    assert run.second_node_up_at <= run.two_replicas_at
    # Down: after the load, one replica again, then the idle node removed.
    assert run.one_replica_at is not None, "Serve did not scale the Generator down"
    assert run.second_node_gone_at is not None, "the idle serving node was not removed"
    idle_s = run.second_node_gone_at - run.one_replica_at
    assert idle_s <= IDLE_TIMEOUT_S + REMOVAL_SLACK_S, idle_s
    assert run.figures()["failed"] == 0, [o.detail for o in run.outcomes if o.kind != "ok"][:5]

    # Item 6, PostgreSQL: the training job's worker (GPU node) and the Generator replicas on
    # both serving nodes reached the same registry and artifacts: each replica loaded the
    # version the job registered.
    loaded = {line.split(":", 1)[0] for line in cluster.log_lines_with(f"model {MODEL}:1@")
              if line.startswith("replica_rnnserve_Generator") and " loaded in " in line}
    assert len(loaded) == 2, loaded
    assert registry_lock_errors(cluster, run.outcomes) == []

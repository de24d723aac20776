"""The autoscaler from cluster.yaml's node types (issue 15, item 5) and the registry reached
from every node with PostgreSQL (item 6).

Starting from no worker node: a `ray job submit` of the trainer with `--use_gpu` makes the
autoscaler launch a GPU-type node for its worker (and a cpu_server node for its driver, as the
app's uploads ask), which are removed once idle; then the real Serve app (one
Generator replica per node, Serve autoscaling 1-2) under a load past its target makes Serve add
a replica and the autoscaler a serving node, and both go after the load.
"""

from __future__ import annotations

from deployments.training_jobs import DRIVER_RESOURCE
from tests.autoscaler.conftest import IDLE_TIMEOUT_S
from tests.cluster.autoscaling_cluster import GPU_TYPES, types_with
from tests.cluster.autoscaling_scenarios import (
    deploy_scaling_app,
    serve_past_the_target,
    train_on_a_gpu_node,
)
from tests.cluster.simcluster import logged_steps, registry_errors

MODEL = "gpu-bard"
# How long after its idle timeout the autoscaler may take to remove a node (its 1 s update
# loop, a busy 2-core machine), and how much earlier than the test's clock it may start
# counting (the test sees a worker or replica end through the state API, a little late).
REMOVAL_SLACK_S = 45
EARLY_S = 5


def assert_removed_by_the_idle_timeout(idle_s: float) -> None:
    assert IDLE_TIMEOUT_S - EARLY_S <= idle_s <= IDLE_TIMEOUT_S + REMOVAL_SLACK_S, idle_s


def test_a_gpu_job_launches_a_gpu_node_that_is_removed_when_idle(cluster, registry, corpus):
    run = train_on_a_gpu_node(cluster, corpus, MODEL)
    print("\ntraining on a GPU node:", run.figures())
    assert run.status == "SUCCEEDED", run.driver_log[-4000:]
    assert run.timeline.samples[0]["nodes"] == {}, "a worker node was up before the job"
    # The Ray Train worker ran on a node the autoscaler launched for it, of a GPU type; the
    # driver on a node of the type that declares `training_driver` (as the app's uploads).
    assert run.worker_node_type in GPU_TYPES, (run.worker_node_type, run.worker_node_resources)
    assert run.worker_node_resources.get("GPU") == 1
    assert run.gpu_node_up_at is not None and run.worker_group_wait_s is not None
    assert run.driver_node_type in types_with(DRIVER_RESOURCE), run.driver_node_type
    # Item 6: the driver (registering the version) and the worker (writing the training log)
    # reached the PostgreSQL registry and the shared artifacts from their worker nodes.
    assert registry.get_version(MODEL, 1).status == "ready"
    assert max(logged_steps(registry.read_logs(MODEL, 1))) == 40
    # Each node idle once its work ended (the worker's, then the driver's): removed after the
    # idle timeout, back to no worker node.
    assert run.gpu_node_gone_at is not None, "the idle GPU node was not removed"
    assert_removed_by_the_idle_timeout(run.gpu_node_gone_at - run.worker_ended_at)
    assert run.all_nodes_gone_at is not None, "an idle worker node was not removed"
    assert_removed_by_the_idle_timeout(run.all_nodes_gone_at - run.job_ended_at)
    assert run.timeline.samples[-1]["nodes"] == {}


def test_serve_load_adds_a_replica_and_a_node_and_both_go_after(cluster, registry,
                                                                tmp_path_factory):
    assert registry.get_version(MODEL, 1).status == "ready", "needs the model trained above"
    url = deploy_scaling_app(cluster, MODEL, tmp_path_factory.mktemp("serve"))
    run = serve_past_the_target(cluster, url, MODEL)
    print("\nserving past the autoscaling target:", run.figures())
    # Serving nodes are of cluster.yaml's cpu_server type: a CPU-only replica takes no GPU node.
    assert {kind for s in run.timeline.samples for kind in s["nodes"]} == {"cpu_server"}
    # Up: Serve added a replica, the autoscaler a serving node for it, then it ran there.
    assert run.replica_added_at is not None, "Serve did not scale the Generator up"
    assert run.second_node_up_at is not None, "no serving node was added"
    assert run.replica_added_at <= run.second_node_up_at <= run.two_replicas_at
    # Down: after the load, one replica again, then its idle node removed.
    assert run.one_replica_at is not None, "Serve did not scale the Generator down"
    assert run.second_node_gone_at is not None, "the idle serving node was not removed"
    assert_removed_by_the_idle_timeout(run.second_node_gone_at - run.one_replica_at)
    assert run.timeline.samples[-1]["nodes"] == {"cpu_server": 1}
    assert run.figures()["failed"] == 0, [o.detail for o in run.outcomes if o.kind != "ok"][:5]

    # Item 6, PostgreSQL: the training job's worker (GPU node) and the Generator replicas on
    # both serving nodes reached the same registry and artifacts: each replica loaded the
    # version the job registered.
    loaded = {line.split(":", 1)[0] for line in cluster.log_lines_with(f"model {MODEL}:1@")
              if line.startswith("replica_rnnserve_Generator") and " loaded in " in line}
    assert len(loaded) == 2, loaded
    # No database error (SQLAlchemy's OperationalError: a connection refused, lost or timed
    # out, too many clients) in any log of any node or any answer.
    assert registry_errors(cluster, run.outcomes) == []

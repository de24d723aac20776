"""Training across nodes, and a node lost mid-training (issue 15, items 1 and 2).

The trainer runs as a user runs it (`python -m trainers.charrnn ... --num_workers 2`) against
the simulated cluster; where its workers run is read from Ray's state API, what it did from the
registry's training log.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.cluster.simcluster import (
    TINY_MODEL,
    checkpoint_steps,
    logged_steps,
    start_trainer,
    train_and_lose_a_node,
    train_workers,
    wait_until,
)


def test_two_workers_train_on_two_nodes_and_register(cluster, registry, corpus):
    process = start_trainer(cluster, "--input_file", corpus, "--name", "spread",
                            "--num_workers", "2", "--max_steps", "60", "--save_every_n", "20",
                            "--log_every_n", "10", *TINY_MODEL)
    try:
        def two_workers():
            if process.poll() is not None:
                return True  # ended: the assertions below say how
            workers = train_workers(cluster)
            return workers if len(workers) == 2 else None

        workers = wait_until(two_workers, 240, interval=1, what="two Ray Train workers")
        output, _ = process.communicate(timeout=480)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, output[-4000:]
    assert workers is not True, "the run ended before two workers were seen:\n" + output[-3000:]

    worker_node_ids = {n.node_id for n in cluster.workers}
    nodes = [w["node_id"] for w in workers]
    assert len(set(nodes)) == 2, f"both workers on one node: {nodes}"
    assert set(nodes) <= worker_node_ids, "a worker ran outside the worker nodes (on the head?)"

    record = registry.get_version("spread", 1)
    assert record.status == "ready"
    assert record.metrics["step"] in (20, 40, 60)  # the best checkpoint by validation loss
    lines = registry.read_logs("spread", 1)
    assert checkpoint_steps(lines) == [20, 40, 60]
    assert max(logged_steps(lines)) == 60

    # Checkpoints are on the shared storage (every node's view of it), in the model's runs.
    checkpoints = sorted(p for p in Path(cluster.storage, "runs").rglob("checkpoint_*")
                         if p.is_dir() and "spread" in str(p.relative_to(cluster.storage)))
    assert checkpoints, sorted(str(p) for p in Path(cluster.storage).rglob("*"))[:40]
    for checkpoint in checkpoints:
        names = {p.name for p in checkpoint.iterdir()}
        assert {"model.weights.h5", "state.json"} <= names, (checkpoint, names)


SAVE_EVERY = 400


def test_a_node_lost_mid_training_resumes_from_the_latest_checkpoint(cluster, registry, corpus):
    started = time.monotonic()
    run = train_and_lose_a_node(cluster, registry, corpus, "survivor", max_steps=2000,
                                save_every_n=SAVE_EVERY, log_every_n=25)
    assert run.returncode == 0, run.output[-4000:]
    record = registry.get_version("survivor", 1)
    assert record.status == "ready"
    assert max(logged_steps(run.lines)) == 2000
    assert run.resumed_at, "no resume line in the log:\n" + "\n".join(run.lines[-40:])
    # It resumed from the latest checkpoint reported before the node died ...
    assert run.resumed_at[0] == run.checkpoint_at_kill, (run.resumed_at, run.checkpoint_at_kill)
    # ... so at most one checkpoint interval of work was done twice.
    assert 0 <= run.steps_lost <= SAVE_EVERY, run.steps_lost
    # The dead node's worker came back on another node (the spare), the survivor kept its own.
    assert run.killed_node not in run.nodes_after, (run.killed_node, run.nodes_after)
    assert len(set(run.nodes_after)) == 2
    print(f"node lost at step {run.step_at_kill} (checkpoint {run.checkpoint_at_kill}); resumed "
          f"at {run.resumed_at[0]}; {run.steps_lost} steps lost; run took "
          f"{time.monotonic() - started:.0f}s")


@pytest.fixture(autouse=True)
def _nodes_back(cluster):
    """Each test starts with two worker nodes (a test that kills one adds a spare)."""
    assert len(cluster.workers) == 2
    yield

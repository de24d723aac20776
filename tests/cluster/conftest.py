"""Cluster tests: a simulated multi-node Ray cluster (`ray.cluster_utils.Cluster`) in a pytest
run of its own (`make test-cluster`; `make test` does not collect them).

One cluster per session: a head with 0 CPUs and two worker nodes of 1 CPU. Tests remove nodes
and add spares, so the order matters and is said here: training first (it needs both worker
CPUs), then serving.
"""

from __future__ import annotations

import os
import shutil

import pytest

from tests.cluster.simcluster import TEMP_ROOT, SimCluster, corpus_slice, registry_for

if os.environ.get("RNNSERVE_CLUSTER_TESTS") != "1":
    # Own process only: this session starts its own Ray cluster and removes its nodes.
    collect_ignore_glob = ["test_*.py"]


ORDER = ("test_training_across_nodes", "test_serving_across_nodes")


def pytest_collection_modifyitems(config, items):
    """The cluster suites in ORDER (a stable sort: tests keep their order inside a file;
    anything else collected keeps its place before them)."""
    def rank(item) -> int:
        module = item.module.__name__.rsplit(".", 1)[-1] if item.module else ""
        return ORDER.index(module) if module in ORDER else -1

    items.sort(key=rank)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    storage = tmp_path_factory.mktemp("shared-storage")
    sim = SimCluster(storage, workers=2, head_resources={"ingress": 2})
    try:
        yield sim
    finally:
        sim.shutdown()
        shutil.rmtree(TEMP_ROOT, ignore_errors=True)


@pytest.fixture(scope="session")
def registry(cluster):
    return registry_for(cluster)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> str:
    return corpus_slice(tmp_path_factory.mktemp("corpus"))

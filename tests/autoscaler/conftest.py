"""Autoscaler tests (issue 15, items 5 and 6): Ray's real autoscaler launching and removing
nodes of cluster.yaml's types on this machine (tests/cluster/autoscaling_cluster.py), with the
registry in PostgreSQL as on cluster.yaml's cluster.

A pytest run of its own (`make test-autoscaler`; `make test` and `make test-cluster` do not
collect it): this process joins one Ray cluster with `ray.init`, and the autoscaler's nodes
and the SimCluster of tests/cluster would share this machine's 2 cores if both ran at once.
"""

from __future__ import annotations

import os
import shutil

import pytest

from tests.cluster.autoscaling_cluster import TEMP_ROOT, AutoscalingSimCluster
from tests.cluster.simcluster import corpus_slice, registry_for

if os.environ.get("RNNSERVE_AUTOSCALER_TESTS") != "1":
    collect_ignore_glob = ["test_*.py"]

# Short, so the test waits little for each node's removal (cluster.yaml: 10 minutes).
IDLE_TIMEOUT_S = 15


@pytest.fixture(scope="session")
def cluster(tmp_path_factory, db_servers):
    """No worker node at the start; the registry is a fresh PostgreSQL database (the session's
    server from tests/db_servers.py), the artifacts on a storage dir every node shares."""
    database = db_servers("postgresql").new_database()
    sim = AutoscalingSimCluster(tmp_path_factory.mktemp("shared-storage"), database,
                                idle_timeout_s=IDLE_TIMEOUT_S, head_resources={"ingress": 2})
    try:
        yield sim
    finally:
        sim.shutdown()
        shutil.rmtree(TEMP_ROOT, ignore_errors=True)


@pytest.fixture(scope="session")
def registry(cluster):
    """Made here first: it creates the schema before jobs and replicas on other nodes use it."""
    return registry_for(cluster)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> str:
    return corpus_slice(tmp_path_factory.mktemp("corpus"))

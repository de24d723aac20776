"""Head fault tolerance (issue 20): a GCS restart on a Redis-backed head, in a pytest run of its
own (`make test-ha`; `make test` does not collect these tests).

The fixtures wrap tests/ha/hacluster.py (shared with `make bench-cluster`): a redis-server on a
free port with its files in a temp dir, a `ray start --head` with GCS fault tolerance against it
on fresh loopback ports and its own --temp-dir, and the real Serve app on a free port. Teardown
kills only this session's processes; never `ray stop`.
"""

from __future__ import annotations

import os

import pytest

from tests.ha.hacluster import deploy_app, running_redis, start_head

if os.environ.get("RNNSERVE_HA_TESTS") != "1":
    collect_ignore_glob = ["test_*.py"]


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    """One Redis per test module, so a new head never finds an earlier head's state in it."""
    with running_redis(tmp_path_factory.mktemp("redis")) as redis:
        yield redis


# Module scope: each test module has its head to itself, torn down before the next starts.
@pytest.fixture(scope="module")
def ha_head(redis_server, tmp_path_factory):
    """A head with GCS fault tolerance on this session's Redis."""
    yield from start_head(tmp_path_factory, redis_server)


@pytest.fixture(scope="module")
def ha_app(ha_head, tmp_path_factory):
    return deploy_app(ha_head, tmp_path_factory)


@pytest.fixture(scope="module")
def plain_head(tmp_path_factory):
    """A head without GCS fault tolerance (what `make run` starts)."""
    yield from start_head(tmp_path_factory, None)


@pytest.fixture(scope="module")
def plain_app(plain_head, tmp_path_factory):
    return deploy_app(plain_head, tmp_path_factory)

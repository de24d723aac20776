"""Redis itself lost under a Redis-backed head (issue 20): the scenario of tests/ha/scenario.py's
`redis_outage`. redis-server is killed (kill -9) under the generate load and started again
15 s later from its append-only file.

Ray's GCS checks Redis every 100 ms (`gcs_redis_heartbeat_interval_milliseconds`) and exits
when the check fails, and nothing starts it again by itself. Asserted, as the README says:
serving through the existing proxy and replicas never fails (Redis down, Redis back, GCS
restarted); the GCS is gone while Redis is down and still gone once Redis is back; once the
GCS is started again (the operator's step) it reloads the cluster from Redis's append-only
file: an upload is accepted and trains to `ready`, and the app answers at the end.
"""

from __future__ import annotations

import pytest

from tests.ha.scenario import redis_outage

pytestmark = pytest.mark.integration


def test_redis_lost_and_restarted(ha_head, redis_server, ha_app):
    r = redis_outage(ha_head, redis_server, ha_app)

    failed = sorted({e[2] for e in r["failed"]})[:5]
    assert not r["failed"], f"{len(r['failed'])} generate requests failed: {failed}"
    assert r["redis_down"] and r["redis_back"] and r["gcs_back"]
    # The GCS does not outlive Redis, and does not come back by itself when Redis does.
    assert r["gcs_gone_after_s"] is not None and r["gcs_gone_after_s"] < 15
    assert not r["gcs_alive_before_restart"]
    assert r["gcs_restarted"] and r["gcs_alive"]
    # Restarted against the reloaded Redis, the cluster takes new work again.
    assert r["after"].get("final") == "ready", r["after"]
    assert r["held"].get("final") in (None, "ready"), r["held"]
    assert r["app_alive"]

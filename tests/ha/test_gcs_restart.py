"""rnnserve across a restart of the head's GCS with fault tolerance on Redis (issue 20): the
scenario of tests/ha/scenario.py on a head started with RAY_REDIS_ADDRESS.

Asserted: no generate request fails during the outage or after; uploads after the restart
(and one sent during the outage) train to `ready`; the run that was training across the
restart is never marked `failed` (the job-status sync treats an unreachable job server as
"could not ask") and ends `ready`. Then the app is deployed again with one more Generator
replica (tests/ha/scale_up.py): the new replica reaches RUNNING and answers (it loads and
serves a model no replica had loaded).
"""

from __future__ import annotations

import pytest

from tests.ha.scale_up import scale_up_generator
from tests.ha.scenario import gcs_outage

pytestmark = pytest.mark.integration


def test_gcs_restart_under_load(ha_head, ha_app, tmp_path):
    r = gcs_outage(ha_head, ha_app, "fault tolerance on Redis")

    failed = sorted({e[2] for e in r["failed"]})[:5]
    assert not r["failed"], f"{len(r['failed'])} generate requests failed: {failed}"
    assert r["down"] and r["later"]
    assert r["after"].get("version"), f"no upload accepted after the restart: {r['after']}"
    assert r["after_final"] == "ready"
    assert r["during"].get("final") in (None, "ready"), r["during"]
    assert "failed" not in r["inflight_seen"], (r["inflight_seen"], r["inflight_logs"][-5:])
    assert r["inflight_final"] == "ready", r["inflight_logs"][-5:]
    assert r["gcs_alive"]

    # A deployment scales up on the restarted GCS: a new replica starts and serves.
    scaled = scale_up_generator(ha_head, ha_app, tmp_path, "after")
    assert scaled["new"], f"no new Generator replica RUNNING: {scaled}"
    assert scaled["after"] == scaled["before"] + 1, scaled
    assert scaled["status_code"] == 200 and len(scaled["generated"]) == 20, scaled["answer"]
    assert scaled["new_replica_loaded_it"], "the new replica did not serve the unloaded model"

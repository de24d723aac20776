"""The same GCS restart on a head without fault tolerance (what `make run` starts): what the
README says happens. While the GCS is down Serve's data path keeps answering; a GCS that
comes back without its state leaves a cluster that takes no new work: no upload after the
restart trains, and the app itself stops answering once the node's processes are gone.
The run that was training does not end `ready`.
"""

from __future__ import annotations

import pytest

from tests.ha.scenario import gcs_outage

pytestmark = pytest.mark.integration


def test_gcs_restart_without_fault_tolerance(plain_head, plain_app):
    r = gcs_outage(plain_head, plain_app, "no fault tolerance", upload_budget_s=60,
                   end_wait_s=180)

    failed_down = [e for e in r["down"] if e[2]]
    assert not failed_down, f"{len(failed_down)} requests failed while the GCS was down"
    assert r["after_final"] != "ready", "an upload after the restart trained: new work ran"
    assert r["inflight_final"] != "ready", r["inflight_logs"][-3:]

"""A run whose workers the cluster cannot start ends `failed` with the reason in its log once
its start_timeout_s has passed, instead of waiting for resources forever (issue 13, item 3)."""

from __future__ import annotations

import requests

from tests.integration.api import upload, wait_status


def test_a_run_whose_workers_never_start_fails_with_the_reason(serve_app, shakespeare):
    # 4 workers x 4 CPUs: within the server's caps, but this 4-CPU cluster has no room for them
    # and no autoscaler to add any.
    response = upload(serve_app, "unschedulable", shakespeare[:20_000], num_workers="4",
                      cpus_per_worker="4", start_timeout_s="5")
    assert response.status_code == 202, response.text
    version = response.json()["version"]
    record = wait_status(serve_app, "unschedulable", version, {"ready", "failed"}, timeout=240)
    lines = requests.get(f"{serve_app}/models/unschedulable/versions/{version}/logs",
                         timeout=10).json()["lines"]
    assert record["status"] == "failed", lines
    assert any("did not start 4 worker(s)" in line and "within 5 s" in line for line in lines), lines

"""A whole head restarted on a Redis-backed, one-node cluster: every process of the head dies at
once (GCS, raylet, dashboard and job server, Serve's controller, proxy and replicas, the
training job's driver: a crash of the head node), then `ray start --head` runs again with the
same command line and the same Redis. The GCS reloads the cluster's state from Redis.

Asserted: Serve brings the app back by itself (no redeploy) and the ready model answers;
an upload after the restart trains to `ready`; the run whose driver died with the head is not
left `training`: it ends `failed` with the job's reason in its log (resubmit it).
"""

from __future__ import annotations

import subprocess
import time

import pytest
import requests

from tests.conftest import REPO, SHARED_DATA, wait_for
from tests.ha.conftest import kill_own_ray, open_registry
from tests.ha.scenario import status, upload, wait_until

pytestmark = pytest.mark.integration


def generate_ok(url: str) -> bool:
    try:
        response = requests.post(f"{url}/models/steady/generate", timeout=10,
                                 json={"prime": "A", "max_length": 20, "seed": 7})
        return response.status_code == 200
    except requests.RequestException:
        return False


def test_whole_head_restart(ha_head, ha_app):
    url, registry = ha_app, open_registry()
    text = (SHARED_DATA / "tinyshakespeare.txt").read_text(encoding="utf-8")[:60_000]
    assert upload(url, "steady", text).status_code == 202
    wait_for(lambda: status(registry, "steady", 1) == "ready", 400, interval=1,
             what="the first model to be ready")
    assert generate_ok(url)
    long = upload(url, "inflight", text, max_steps="100000", max_minutes="3",
                  save_every_n="200", log_every_n="100")
    assert long.status_code == 202, long.text
    wait_for(lambda: any("step" in line for line in registry.read_logs("inflight", 1)), 300,
             interval=1, what="the long run to report a training step")

    t_kill = time.monotonic()
    kill_own_ray()  # the head node crashes: all its processes at once
    time.sleep(5)
    subprocess.run(ha_head["command"], check=True, env=ha_head["env"], cwd=REPO,
                   capture_output=True)
    t_back = time.monotonic()
    serving = wait_until(lambda: generate_ok(url), 240, interval=0.5)
    t_serving = time.monotonic()
    attempts, accepted = [], None
    while accepted is None and time.monotonic() - t_back < 300:
        try:
            response = upload(url, "after", text)
            attempts.append(response.status_code)
            if response.status_code == 202:
                accepted = response.json()["version"]
        except requests.RequestException as exc:
            attempts.append(type(exc).__name__)
        if accepted is None:
            time.sleep(2)
    t_upload = time.monotonic()
    if accepted is not None:
        wait_until(lambda: status(registry, "after", accepted) in ("ready", "failed"), 400)
    wait_until(lambda: status(registry, "inflight", 1) not in ("queued", "training"), 400)
    t_end = time.monotonic()
    inflight_logs = registry.read_logs("inflight", 1)
    print(f"\nwhole head restart on Redis (down {t_back - t_kill:.1f} s, `ray start --head` again "
          f"with the same command line): the app answered a generate request "
          f"{t_serving - t_back:.1f} s after the restart ({serving}); an upload was accepted "
          f"{t_upload - t_back:.1f} s after it (attempts {attempts[:6]}), "
          f"{status(registry, 'after', accepted) if accepted else None}; the in-flight run "
          f"{status(registry, 'inflight', 1)} {t_end - t_back:.0f} s after it, last log lines "
          f"{inflight_logs[-2:]}")

    assert serving, "the app did not answer within 240 s of the head restart"
    assert accepted is not None and status(registry, "after", accepted) == "ready", attempts
    assert status(registry, "inflight", 1) == "failed", inflight_logs[-5:]
    assert inflight_logs[-1].startswith("job "), inflight_logs[-5:]

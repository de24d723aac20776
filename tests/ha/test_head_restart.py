"""A whole head restarted on a Redis-backed cluster of a head and one worker node: every process
of the head dies at once (GCS, raylet, dashboard and job server, Serve's controller, proxy and
replicas, and what ran there: a crash of the head node), then `ray start --head` runs again with
the same command line and the same Redis. The GCS reloads the cluster's state from Redis.

The worker node declares the `training_driver` resource, as cluster.yaml's serving nodes do, so
the driver of an uploaded run lives there; a run submitted by hand with `ray job submit` and no
entrypoint resources has its driver on the head (Ray's default).

Asserted: Serve brings the app back by itself (no redeploy) and the ready model answers; an
upload after the restart trains to `ready`; the uploaded run, training across the restart with
its driver and Ray Train's controller on the worker node, carries on and ends `ready`; the
hand-submitted run whose driver died with the head is not left `training`: it ends `failed`
with the job's reason in its log (resubmit it).
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import BIN, REPO, SHARED_DATA, wait_for
from tests.ha.hacluster import (
    TEMP_DIR,
    WORKER_TEMP_DIR,
    kill_own_ray,
    open_registry,
    start_worker,
)
from tests.ha.scenario import TINY, status, upload, wait_until

pytestmark = pytest.mark.integration


# A run long enough to be training when the head goes, short enough to end within the test.
LONG = {"max_steps": "100000", "max_minutes": "2", "save_every_n": "200", "log_every_n": "100"}


def where_runs(head: dict, classes: tuple[str, ...]) -> dict[str, list[str]]:
    """{actor class: ["head" or "worker" for each live actor of it]}, from Ray's state API."""
    def listed(kind: str) -> list[dict]:
        out = subprocess.run([str(BIN / "ray"), "list", kind, "--address", head["dashboard"],
                              "--format", "json", "--limit", "1000"], env=head["env"],
                             capture_output=True, text=True).stdout
        return json.loads(out or "[]")

    heads = {n["node_id"] for n in listed("nodes") if n.get("is_head_node")}
    return {cls: ["head" if a["node_id"] in heads else "worker" for a in listed("actors")
                  if a["class_name"] == cls and a["state"] == "ALIVE"] for cls in classes}


def logs(registry, name: str) -> list[str]:
    try:
        return registry.read_logs(name, 1)
    except Exception:  # noqa: BLE001 - the version is not created yet
        return []


def generate_ok(url: str) -> bool:
    try:
        response = requests.post(f"{url}/models/steady/generate", timeout=10,
                                 json={"prime": "A", "max_length": 20, "seed": 7})
        return response.status_code == 200
    except requests.RequestException:
        return False


def submit_by_hand(head: dict, corpus, name: str) -> None:
    """`ray job submit` of the trainer, as a user would: no entrypoint resources."""
    flags = [f"--{key}={value}" for key, value in {**TINY, **LONG}.items()]
    subprocess.run([str(BIN / "ray"), "job", "submit", "--address", head["dashboard"],
                    "--no-wait", "--", "python", "-m", "trainers.charrnn", "--name", name,
                    "--input_file", str(corpus), *flags],
                   check=True, env=head["env"], cwd=REPO, capture_output=True)


def test_whole_head_restart(ha_head, ha_app, tmp_path):
    url, registry = ha_app, open_registry()
    start_worker(ha_head, num_cpus=2, resources={"training_driver": 2})
    text = (SHARED_DATA / "tinyshakespeare.txt").read_text(encoding="utf-8")[:60_000]
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(text, encoding="utf-8")
    assert upload(url, "steady", text).status_code == 202
    wait_for(lambda: status(registry, "steady", 1) == "ready", 400, interval=1,
             what="the first model to be ready")
    assert generate_ok(url)
    long = upload(url, "inflight", text, **LONG)
    assert long.status_code == 202, long.text
    submit_by_hand(ha_head, corpus, "handmade")
    for name in ("inflight", "handmade"):
        wait_for(lambda name=name: any("step" in line for line in logs(registry, name)), 300,
                 interval=1, what=f"the run {name} to report a training step")

    placement = where_runs(ha_head, ("JobSupervisor", "TrainController", "RayTrainWorker"))
    t_kill = time.monotonic()
    kill_own_ray()  # the head node crashes: all its processes at once
    # `ray start --head` refuses to start where a GCS it knows of seems to run: it found this
    # head's address in the temp dir and in the worker node's command line (both on this
    # machine here; a real head restarts on a machine of its own).
    (Path(TEMP_DIR) / "ray_current_cluster").unlink(missing_ok=True)
    time.sleep(5)
    restarted = subprocess.run(ha_head["command"], env=ha_head["env"], cwd=REPO,
                               capture_output=True, text=True)
    assert restarted.returncode == 0, restarted.stdout[-2000:] + restarted.stderr[-2000:]
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
    for name in ("inflight", "handmade"):
        wait_until(lambda name=name: status(registry, name, 1) not in ("queued", "training"), 400)
    t_end = time.monotonic()
    inflight_logs, handmade_logs = logs(registry, "inflight"), logs(registry, "handmade")
    print(f"\nwhole head restart on Redis (down {t_back - t_kill:.1f} s, `ray start --head` again "
          f"with the same command line): the app answered a generate request "
          f"{t_serving - t_back:.1f} s after the restart ({serving}); an upload was accepted "
          f"{t_upload - t_back:.1f} s after it (attempts {attempts[:6]}), "
          f"{status(registry, 'after', accepted) if accepted else None}; {t_end - t_back:.0f} s "
          f"after it the uploaded run (driver on the worker node) was "
          f"{status(registry, 'inflight', 1)}, last log lines {inflight_logs[-2:]}; the run "
          f"submitted by hand (driver on the head) {status(registry, 'handmade', 1)}, "
          f"{handmade_logs[-1:]}; before the crash, actors ran on {placement}")

    if status(registry, "inflight", 1) != "ready":  # the driver's own logs say why
        logs_dir = next(Path(WORKER_TEMP_DIR).glob("session_*/logs"))
        for path in logs_dir.glob("job-driver-*inflight*.log"):
            print(path, "".join(path.read_text(errors="replace").splitlines(True)[-15:]))
        for path in [*logs_dir.glob("python-core-driver-*.log"), logs_dir / "raylet.out"]:
            lines = [line for line in path.read_text(errors="replace").splitlines()
                     if " E " in line or " C " in line or "xit" in line]
            print(path, "\n".join(lines[-25:]))

    assert serving, "the app did not answer within 240 s of the head restart"
    assert accepted is not None and status(registry, "after", accepted) == "ready", attempts
    # Its driver and Ray Train's controller were on the worker node: the run carries on.
    assert placement["TrainController"].count("worker") >= 1, placement
    assert status(registry, "inflight", 1) == "ready", inflight_logs[-5:]
    assert status(registry, "handmade", 1) == "failed", handmade_logs[-5:]
    assert handmade_logs[-1].startswith("job "), handmade_logs[-5:]

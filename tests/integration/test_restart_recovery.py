"""Stop the whole app, Ray included, and start it again on the same storage and database:
every ready model is still listed and servable, and a job that was running is not left
`training` forever. Marked `restarts_cluster`, so it runs after every other test
(tests/conftest.py): it replaces the session cluster."""

from __future__ import annotations

import pytest
import ray
import requests

from tests.conftest import deploy_app, start_ray_head, stop_ray, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.restarts_cluster]


def status_of(registry, name: str, version: int) -> str | None:
    try:
        return registry.get_version(name, version).status
    except Exception:  # noqa: BLE001 - not created yet
        return None


def test_restart_keeps_ready_models_and_fails_orphaned_jobs(ray_cluster, serve_app, registry,
                                                          shakespeare):
    form = {"name": "orphan", "max_steps": "1000000", "lstm_size": "32", "num_seqs": "16",
            "num_steps": "32", "save_every_n": "1000"}
    if not any(m["status"] == "ready" and m["kind"] == "charrnn" for m in registry.list_models()):
        form_ready = {**form, "name": "survivor-model", "max_steps": "20", "save_every_n": "10"}
        requests.post(f"{serve_app}/models", data=form_ready,
                      files={"file": ("t.txt", shakespeare[:30_000].encode())}, timeout=60)
        wait_for(lambda: status_of(registry, "survivor-model", 1) == "ready", 400, interval=2,
                 what="a ready model")
    ready = {m["name"]: m for m in registry.list_models() if m["production_version"]}
    response = requests.post(f"{serve_app}/models", data=form, timeout=60,
                             files={"file": ("t.txt", shakespeare[:30_000].encode())})
    orphan = response.json()["version"]
    wait_for(lambda: status_of(registry, "orphan", orphan) == "training", 300,
             interval=1, what="the long job to start training")

    stop_ray(ray_cluster["env"])  # everything dies: Serve, the job, its workers
    ray_cluster.update(start_ray_head(ray_cluster["env"]))
    ray.init(address=ray_cluster["address"], log_to_driver=False)
    deploy_app(ray_cluster, ray_cluster["serve_config"], serve_app)

    listed = {m["name"]: m for m in requests.get(f"{serve_app}/models", timeout=30).json()["models"]}
    for name, model in ready.items():
        assert listed[name]["production_version"] == model["production_version"]
    charrnn = next(name for name, m in ready.items() if m["kind"] == "charrnn")
    answer = requests.post(f"{serve_app}/models/{charrnn}/generate", timeout=120,
                           json={"prime": "A", "max_length": 20})
    assert answer.status_code == 200 and len(answer.json()["generated"]) == 20
    wait_for(lambda: registry.get_version("orphan", orphan).status == "failed", 60, interval=1,
             what="the orphaned run to be marked failed")
    logs = registry.read_logs("orphan", orphan)
    assert any("gone" in line or "ended" in line for line in logs), logs[-5:]

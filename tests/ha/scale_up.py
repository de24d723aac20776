"""A deployment scaled up on a head whose GCS was restarted (issue 20): the app is deployed again
with one more Generator replica as its floor (`min_replicas`), the way an operator adds
capacity. Starting a replica needs the GCS (a new actor), so this is new work the restarted
GCS must take.

The new replica is told apart from the old ones by its id (Serve's REST API, what `serve
status` reads). It is shown to answer through the app by a model no replica has loaded yet:
Serve's router sends a multiplexed model that no replica holds to the replica holding the
fewest models, the new one (none), which logs the load in its own log file.
"""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import urlparse

import requests

from tests.ha.hacluster import TEMP_DIR, app_config, deploy_config
from tests.ha.scenario import wait_until

APP, DEPLOYMENT = "rnnserve", "Generator"


def generator_replicas(head: dict) -> list[dict]:
    """The Generator's replicas as Serve's controller lists them: replica_id, state, ..."""
    details = requests.get(f"{head['dashboard']}/api/serve/applications/", timeout=10).json()
    app = details["applications"].get(APP) or {}
    return app.get("deployments", {}).get(DEPLOYMENT, {}).get("replicas", [])


def replica_log(replica_id: str) -> str:
    """The text of a Serve replica's own log file(s) on this session's head."""
    return "".join(path.read_text(errors="replace") for path in
                   Path(TEMP_DIR).glob(f"session_*/logs/serve/replica_*_{replica_id}.log"))


def scale_up_generator(head: dict, url: str, directory: Path, unloaded_model: str,
                       timeout: float = 300) -> dict:
    """Deploy the app at `url` again with one Generator replica more; wait until the new one is
    RUNNING; generate with `unloaded_model` (a ready model no replica has served yet). Returns
    the replica counts, the new replica's id and state, the seconds from the redeploy to
    RUNNING, the answer, and whether the new replica's log shows it loaded that model."""
    before = {r["replica_id"] for r in generator_replicas(head)}
    started = time.monotonic()
    deploy_config(head, app_config(urlparse(url).port, generator_min_replicas=len(before) + 1),
                  directory)

    new: dict = {}

    def new_running() -> bool:
        fresh = [r for r in generator_replicas(head) if r["replica_id"] not in before]
        new.update(next((r for r in fresh if r["state"] == "RUNNING"), {}))
        return bool(new)

    if not wait_until(new_running, timeout):
        return {"before": len(before), "new": None,
                "replicas": [(r["replica_id"], r["state"]) for r in generator_replicas(head)]}
    running_s = time.monotonic() - started
    time.sleep(2)  # the Ingress's router learns of the new replica from the controller
    response = requests.post(f"{url}/models/{unloaded_model}/generate", timeout=120,
                             json={"prime": "A", "max_length": 20, "seed": 7})
    line = f"model {unloaded_model}:"
    loaded = wait_until(lambda: line in replica_log(new["replica_id"]), 15, interval=0.5)
    result = {"before": len(before), "after": len(generator_replicas(head)), "new": new,
              "running_after_s": running_s, "status_code": response.status_code,
              "generated": response.json().get("generated", "") if response.ok else "",
              "answer": response.text[:160], "new_replica_loaded_it": loaded}
    print(f"\nscale-up after the GCS restart: Generator {result['before']} -> "
          f"{result['after']} replicas, the new one RUNNING {running_s:.1f} s after the "
          f"redeploy; {unloaded_model!r} answered {response.status_code}, loaded by the new "
          f"replica: {loaded}")
    return result


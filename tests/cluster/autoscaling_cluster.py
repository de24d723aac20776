"""A cluster run by Ray's real autoscaler on this machine, its worker node types read from
cluster.yaml and scaled down: the autoscaler's `fake_multinode` provider launches each node as
a raylet here, so a test sees nodes come and go as `ray up cluster.yaml` would on AWS.

How it is started, and why not `ray.cluster_utils.AutoscalingCluster`: that class reads an
`example.yaml` the Ray 2.60 wheel does not ship, and runs `ray stop --force`, which would end
every other Ray instance on this machine. Nothing about the fake autoscaler needs that: the head
is `ray start --head --autoscaling-config=...` with `RAY_FAKE_CLUSTER=1` (what the class does)
on fresh ports and a temp dir of its own (tests.conftest.start_ray_head). The provider starts
its nodes from the head's autoscaler process and would point them at port 6379 unless its
config names the GCS address; a node takes the head's temp dir, so teardown finds every process
of this cluster by that dir, as it does for SimCluster.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from tests.cluster.simcluster import REPO, ClusterView, cluster_env, free_port, wait_until
from tests.processes import kill_processes_marked

TEMP_ROOT = f"/tmp/rna-{os.getpid()}"  # short: Unix socket paths of every node live below it
HEAD_TYPE = "ray.head.default"  # the fake provider tags its head with this type name
# vCPUs, GPUs and GiB of memory of the instance types cluster.yaml names (AWS's figures): the
# autoscaler on AWS reads them from the instance type; the fake provider must be told.
INSTANCE_TYPES = {"m6i.2xlarge": (8, 0, 32), "c6i.2xlarge": (8, 0, 16), "g5.xlarge": (4, 1, 16)}
# A label naming each node's type: the autoscaler hands a type's labels to the nodes it
# launches. (Ray's own `ray.io/node-group` label is set from the environment of the process
# that starts the node: the fake provider starts them all from the autoscaler's process.)
TYPE_LABEL = "rnnserve/node-type"


def fake_node_types(cluster_yaml: Path = REPO / "cluster.yaml", max_per_type: int = 2) -> dict:
    """cluster.yaml's worker node types, scaled down to this 2-core machine: 1 CPU each, a
    logical GPU where the instance has one (Ray schedules on it; nothing computes on a GPU
    here), the type's own custom resources, and an object store of Ray's default share (30%)
    of the instance's memory per vCPU. (A node's `memory` cannot be scaled: the fake provider
    hands it to Ray as a custom resource, which Ray refuses, so every node reports this
    machine's; nothing in rnnserve asks for memory.) min_workers 0 for every type (cluster.yaml
    keeps one cpu_server up), so each worker node the tests see is one the autoscaler
    launched; at most `max_per_type` of each."""
    import yaml

    config = yaml.safe_load(cluster_yaml.read_text())
    types = {}
    for name, spec in config["available_node_types"].items():
        if name == config["head_node_type"]:
            continue
        vcpus, gpus, gib = INSTANCE_TYPES[spec["node_config"]["InstanceType"]]
        resources = {"CPU": 1, "object_store_memory": int(0.3 * gib / vcpus * 2**30),
                     **spec.get("resources", {})}
        if gpus:
            resources["GPU"] = 1
        types[name] = {"resources": resources, "labels": {TYPE_LABEL: name}, "node_config": {},
                       "min_workers": 0,
                       "max_workers": min(spec.get("max_workers", 1), max_per_type)}
    return types


def types_with(resource: str) -> tuple[str, ...]:
    """Names of cluster.yaml's worker node types that have `resource`."""
    return tuple(name for name, spec in fake_node_types().items() if resource in spec["resources"])


GPU_TYPES = types_with("GPU")  # gpu_trainer, gpu_server
SERVER_TYPES = types_with("server")  # cluster.yaml's serving types: cpu_server, gpu_server


def autoscaler_config(gcs_address: str, head_resources: dict, idle_timeout_s: float,
                      max_workers: int) -> dict:
    """The whole cluster config the autoscaler reads (every key it expects, empty where the
    fake provider has nothing to do: no SSH, setup or file sync)."""
    import yaml

    source = yaml.safe_load((REPO / "cluster.yaml").read_text())
    return {
        "cluster_name": "rnnserve-fake", "max_workers": max_workers,
        "upscaling_speed": source["upscaling_speed"],
        "idle_timeout_minutes": idle_timeout_s / 60,
        "provider": {"type": "fake_multinode", "gcs_address": gcs_address,
                     "use_node_id_as_ip": True, "disable_node_updaters": True,
                     "disable_launch_config_check": True},
        "available_node_types": {
            HEAD_TYPE: {"resources": {"CPU": 0, **head_resources}, "node_config": {},
                        "max_workers": 0},
            **fake_node_types(),
        },
        "head_node_type": HEAD_TYPE,
        "auth": {}, "docker": {}, "file_mounts": {}, "cluster_synced_files": [],
        "file_mounts_sync_continuously": False, "rsync_exclude": [], "rsync_filter": [],
        "initialization_commands": [], "setup_commands": [], "head_setup_commands": [],
        "worker_setup_commands": [], "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
    }


def node_type(node: dict) -> str:
    """A node's type name (from `ray.nodes()`): the label its type gave it, or the head's."""
    if "node:__internal_head__" in node["Resources"]:
        return HEAD_TYPE
    return node.get("Labels", {}).get(TYPE_LABEL, "unlabelled")


class AutoscalingSimCluster(ClusterView):
    """A head with 0 CPUs (GCS, dashboard, Serve controller, the Ingress, job drivers) and no
    worker node until the autoscaler launches one for work that asks for it; an idle worker
    node is removed after `idle_timeout_s`."""

    temp_root = TEMP_ROOT

    def __init__(self, storage: Path, db_url: str, idle_timeout_s: float = 15,
                 head_resources: dict | None = None, max_workers: int = 3):
        import ray

        self.storage, self.db_url = Path(storage), db_url
        self.idle_timeout_s = idle_timeout_s
        os.makedirs(TEMP_ROOT, exist_ok=True)
        self.env = {**os.environ, **cluster_env(self.storage, db_url, TEMP_ROOT),
                    "RAY_FAKE_CLUSTER": "1",
                    "AUTOSCALER_UPDATE_INTERVAL_S": "1",  # Ray's default: 5 s between decisions
                    # the autoscaler's own metrics port (default 44217, maybe another's)
                    "AUTOSCALER_METRIC_PORT": str(free_port())}
        for attempt in (1, 2):
            try:
                self._start_head(head_resources or {}, max_workers)
                break
            except subprocess.CalledProcessError:
                # On an overloaded machine the head's raylet can give up waiting for its
                # dashboard agent and exit, failing `ray start`: once more, on fresh ports.
                kill_processes_marked(f"{TEMP_ROOT}/")
                if attempt == 2:
                    raise
        try:
            ray.init(address=self.address, log_to_driver=False)
            wait_until(self._dashboard_up, 60, what="the dashboard")
        except BaseException:
            self.shutdown()
            raise

    def _start_head(self, head_resources: dict, max_workers: int) -> None:
        from tests.conftest import start_ray_head

        gcs_port = free_port()
        config_path = Path(TEMP_ROOT, "autoscaler.json")
        config_path.write_text(json.dumps(autoscaler_config(
            f"127.0.0.1:{gcs_port}", head_resources, self.idle_timeout_s, max_workers)))
        info = start_ray_head(self.env, temp_dir=f"{TEMP_ROOT}/ray", num_cpus=0,
                              gcs_port=gcs_port, extra_args=(
                                  f"--autoscaling-config={config_path}",
                                  f"--resources={json.dumps(head_resources)}"))
        self.address, self.dashboard = info["address"], info["dashboard"]

    def workers_by_type(self) -> dict[str, list[str]]:
        """Alive worker node ids by node type."""
        found: dict[str, list[str]] = {}
        for node_id, node in self.alive_nodes().items():
            kind = node_type(node)
            if kind != HEAD_TYPE:
                found.setdefault(kind, []).append(node_id)
        return found

    def worker_counts(self) -> dict[str, int]:
        """How many worker nodes of each type are alive."""
        return {kind: len(ids) for kind, ids in self.workers_by_type().items()}

    def shutdown(self) -> None:
        import ray

        try:
            from ray import serve

            if ray.is_initialized():
                serve.shutdown()
        except Exception:  # noqa: BLE001 - the cluster may be half gone already
            pass
        ray.shutdown()
        # The head's daemons and every node the autoscaler launched (their raylets were
        # started by the head's autoscaler process, with this temp dir on their command line).
        kill_processes_marked(f"{TEMP_ROOT}/")

"""Shared fixtures: one real Ray cluster per test session (ray.init costs ~15 s here).

The cluster is a real `ray start --head` on loopback, so the same instance serves Ray Train
runs, the Serve app, and `ray job submit`. It is told it has 4 CPUs on this 2-core machine so
the Serve replicas and a 2-worker training run fit at once (they mostly wait on each other).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deployments.proxy_guard import CALLBACK as PROXY_CALLBACK
from deployments.serve_config import changed_config, write_config
from tests.processes import kill_processes_marked

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("RNNSERVE_SHARED_DATA", REPO.parent / "shared" / "data"))
BIN = Path(sys.executable).parent
TEMP_DIR = f"/tmp/rnnserve-test-{os.getpid()}"  # this session's Ray cluster files
# Credentials for moto's S3 (any are accepted), distinctive so a test can look for leaks. The
# session cluster's nodes have them in their environment, as cluster.yaml's nodes have theirs.
S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "rnnserve-test-key-id",
                  "AWS_SECRET_ACCESS_KEY": "rnnserve-test-secret-never-in-job-lists",
                  "AWS_DEFAULT_REGION": "us-east-1"}


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """`count` distinct free ports: all bound at once, so the OS cannot hand one out twice."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def run_ray_start(command: list[str], env: dict) -> None:
    """Run a `ray start`; on failure, fail with the end of what it printed."""
    done = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:3])} failed ({done.returncode}): "
                           f"{(done.stdout + done.stderr)[-3000:]}")


def pytest_collection_modifyitems(config, items):
    """Tests marked `restarts_cluster` run after every other test: they replace the session's
    Ray cluster, which the others share. The sort is stable, so the rest keep their order."""
    items.sort(key=lambda item: item.get_closest_marker("restarts_cluster") is not None)


@pytest.fixture(scope="session")
def shakespeare() -> str:
    return (SHARED_DATA / "tinyshakespeare.txt").read_text(encoding="utf-8")


@pytest.fixture(scope="session")
def session_storage(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("storage")


def start_ray_head(env: dict, temp_dir: str = TEMP_DIR, num_cpus: int = 4,
                   extra_args: tuple[str, ...] = (), gcs_port: int | None = None) -> dict:
    """`ray start --head` on fresh loopback ports (the GCS on `gcs_port` if given), its files
    under `temp_dir`; returns the addresses (and `env`). `extra_args` go to `ray start`."""
    fresh = free_ports(9)
    ports = {"gcs": gcs_port or fresh[0], "dashboard": fresh[1], "metrics": fresh[2]}
    # Every port on a fresh free one: with Ray's defaults a second cluster on the machine
    # (say `make run`) would hold the dashboard agent's port and job submission would fail.
    agent_ports = [f"--{flag}={port}" for flag, port in zip((
        "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "runtime-env-agent-port",
        "ray-client-server-port", "node-manager-port", "object-manager-port"), fresh[3:], strict=True)]
    run_ray_start(
        [str(BIN / "ray"), "start", "--head", "--node-ip-address", "127.0.0.1",
         "--port", str(ports["gcs"]), "--num-cpus", str(num_cpus), "--include-dashboard", "true",
         "--dashboard-host", "127.0.0.1", "--dashboard-port", str(ports["dashboard"]),
         "--metrics-export-port", str(ports["metrics"]), *agent_ports,
         "--temp-dir", temp_dir, "--disable-usage-stats", *extra_args], env)
    return {"address": f"127.0.0.1:{ports['gcs']}",
            "dashboard": f"http://127.0.0.1:{ports['dashboard']}",
            "metrics": f"http://127.0.0.1:{ports['metrics']}/metrics", "env": env}


def stop_ray(env: dict) -> None:
    """Stop this session's cluster only (`ray stop` would kill every Ray instance on the
    machine): its daemons carry the session's temp dir on their command line, and workers,
    job drivers and dashboard modules are their descendants."""
    import ray

    ray.shutdown()
    kill_processes_marked(TEMP_DIR)


@pytest.fixture(scope="session")
def ray_cluster(session_storage):
    """A `ray start --head` cluster whose processes see RNNSERVE_STORAGE/DB of this session.

    Yields a dict of addresses (a test that restarts the cluster updates it in place);
    `ray.init` is connected to it in this process.
    """
    import ray

    env = {**os.environ, "RNNSERVE_STORAGE": str(session_storage),
           "RNNSERVE_DB_URL": f"sqlite:///{session_storage}/registry.db",
           "RAY_USAGE_STATS_ENABLED": "0", "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
           **S3_CREDENTIALS,
           # Loopback-only test cluster: Ray's token auth would need a shared token file.
           "RAY_AUTH_MODE": "disabled",
           # Serve's proxy refuses oversized declared bodies itself, as on a deployed node.
           "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH": PROXY_CALLBACK}
    os.environ.update({k: env[k] for k in ("RNNSERVE_STORAGE", "RNNSERVE_DB_URL", "RAY_AUTH_MODE")})
    try:  # a `ray start` that timed out leaves its daemons behind: stopped here too
        info = start_ray_head(env)
        ray.init(address=info["address"], log_to_driver=False)
        yield info
    finally:
        stop_ray(env)


@pytest.fixture(scope="session")
def registry(ray_cluster, session_storage):
    from registry import Registry, Settings

    return Registry(Settings.from_env())


def machine_room() -> str:
    """Free disk and memory, as Ray sees them: past 95% of either it refuses or kills work."""
    disk = shutil.disk_usage("/tmp")
    meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    available_gb = int(meminfo["MemAvailable"].split()[0]) / 2**20
    return (f"disk /tmp {disk.free / 2**30:.1f} GB free of {disk.total / 2**30:.0f}, "
            f"memory {available_gb:.1f} GB available, load {os.getloadavg()[0]:.1f}")


def wait_for(predicate, timeout: float, interval: float = 0.5, what: str = "condition"):
    """Poll until predicate() is truthy; returns its value or fails the test with `what`."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")


def deploy_app(ray_cluster: dict, config_path: Path, url: str, timeout: float = 300) -> None:
    """`serve deploy` the config onto the cluster (its "dashboard" address, its "env") and
    wait until the app answers. A deploy takes ~30-60 s here; the timeout leaves room for a
    fresh machine, whose every replica first reads TensorFlow from a cold disk."""
    import requests

    subprocess.run([str(BIN / "serve"), "deploy", str(config_path), "--address",
                    ray_cluster["dashboard"]], check=True, cwd=REPO, env=ray_cluster["env"],
                   capture_output=True)

    def healthy():
        try:
            return requests.get(f"{url}/healthz", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    try:
        wait_for(healthy, timeout, interval=1, what="the Serve app to answer /healthz")
    except pytest.fail.Exception:  # wait_for timed out (not a Ctrl-C, which ends the run)
        status = subprocess.run([str(BIN / "serve"), "status", "--address", ray_cluster["dashboard"]],
                                env=ray_cluster["env"], capture_output=True, text=True).stdout
        print(status)
        # On one line, so that the short summary (all a CI log may keep) says why.
        pytest.fail(f"the Serve app did not answer /healthz within {timeout:.0f}s; "
                    f"{machine_room()}; serve status: {' '.join(status.split())[:1500]}")


@pytest.fixture(scope="session")
def serve_app(ray_cluster, tmp_path_factory):
    """The real Serve app from serve_config.yaml (only the HTTP port changed), deployed with
    `serve deploy` onto the session cluster. Yields its base URL."""
    port = free_port()
    # Many uploads come from this one client in a few minutes: lift its upload rate limit
    # (test_serving checks the limiter itself on the inference routes).
    # Long generations (the schema's 10,000) give the disconnect test time to hang up mid-way.
    # The same client also keeps more training jobs going at once than a user may.
    config = changed_config(port, uploads_per_minute=6000, upload_burst=1000, max_length=10_000,
                            max_training_jobs=100, max_training_jobs_per_client=100)
    path = write_config(config, tmp_path_factory.mktemp("serve") / "serve_config.yaml")
    url = f"http://127.0.0.1:{port}"
    ray_cluster["serve_config"] = path
    deploy_app(ray_cluster, path, url)
    yield url
    subprocess.run([str(BIN / "serve"), "shutdown", "-y", "--address", ray_cluster["dashboard"]],
                   env=ray_cluster["env"], capture_output=True)


@pytest.fixture(scope="session")
def s3_endpoint():
    """moto's S3 server on loopback with a bucket `models`: it stands in for AWS S3, which
    this machine cannot reach. Its credentials go into this process's environment too."""
    import boto3
    from moto.server import ThreadedMotoServer

    os.environ.update(S3_CREDENTIALS)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="models")
    yield endpoint
    server.stop()


@pytest.fixture(scope="session")
def db_servers():
    """Started on first use: {"postgresql": server, "mariadb": server}."""
    from tests.db_servers import MariaDBServer, PostgresServer

    servers = {}

    def get(backend: str):
        if backend not in servers:
            servers[backend] = {"postgresql": PostgresServer, "mariadb": MariaDBServer}[backend]()
        return servers[backend]

    yield get
    for server in servers.values():
        server.stop()

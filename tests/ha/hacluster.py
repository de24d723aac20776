"""A Redis-backed Ray head of this session's own, for tests/ha and `make bench-cluster`'s
head-loss phase: Debian's redis-server on a free port (append-only file on, password on stdin),
`ray start --head` with GCS fault tolerance against it on fresh loopback ports and its own
--temp-dir, the real Serve app, and what kills and restarts their parts. tests/ha/conftest.py
wraps these in fixtures; the benchmark calls them directly.

Everything here shares the machine with other Ray instances: teardown kills only processes that
carry this session's temp dir (and their descendants), the restarted GCS and the Redis it
started; never `ray stop`.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
from pathlib import Path

from deployments.serve_config import changed_config, deployment, write_config
from tests.conftest import BIN, free_port, free_ports, run_ray_start, wait_for
from tests.conftest import deploy_app as serve_deploy
from tests.processes import kill_processes_marked, processes_marked

TEMP_DIR = f"/tmp/rnnserve-ha-{os.getpid()}"  # this session's Ray files (short: socket paths)
# A worker node's own (not a prefix of TEMP_DIR's name: a head's crash kills TEMP_DIR's only).
WORKER_TEMP_DIR = f"/tmp/rnnserve-hw-{os.getpid()}"


def launch_redis(redis: dict) -> None:
    """redis-server for `redis` (its port, password and directory; the append-only file there is
    reloaded if present) as redis["process"]; returns once it answers."""
    process = subprocess.Popen(
        ["redis-server", "-", "--port", str(redis["port"]), "--bind", "127.0.0.1",
         "--dir", str(redis["dir"]), "--appendonly", "yes", "--appendfsync", "everysec",
         "--save", "", "--logfile", str(redis["dir"] / "redis.log")],
        stdin=subprocess.PIPE, text=True)
    process.stdin.write(f'requirepass "{redis["password"]}"\n')
    process.stdin.close()
    redis["process"] = process
    wait_for(lambda: redis_answers(redis), 20, interval=0.2, what="redis-server to answer")


def redis_answers(redis: dict) -> bool:
    env = {**os.environ, "REDISCLI_AUTH": redis["password"]}
    return subprocess.run(["redis-cli", "-p", str(redis["port"]), "ping"], env=env,
                          capture_output=True, text=True).stdout.strip() == "PONG"


def kill_redis(redis: dict) -> None:
    """kill -9: Redis lost without a chance to flush (what it had in its append-only file
    survives, up to the last second's writes with appendfsync everysec)."""
    redis["process"].kill()
    redis["process"].wait(timeout=20)


@contextlib.contextmanager
def running_redis(directory: Path):
    """Debian's redis-server on a free loopback port, persistence on, a fresh password, files in
    `directory`: {"address", "password", "port", "dir", "process"}; stopped afterwards."""
    port = free_port()
    redis = {"address": f"127.0.0.1:{port}", "port": port, "password": secrets.token_hex(16),
             "dir": directory}
    try:
        launch_redis(redis)
        yield redis
    finally:
        if "process" in redis:  # the latest one: a test may have killed and restarted it
            redis["process"].terminate()
            redis["process"].wait(timeout=20)


def own_ray_processes() -> dict:
    """This session's Ray processes: those whose command line carries TEMP_DIR, and their
    descendants (workers, job drivers, dashboard modules), by pid."""
    return processes_marked(TEMP_DIR)


def cpu_seconds() -> dict:
    """CPU seconds (user + system) used so far by each of this session's Ray processes:
    {pid: (name, seconds)}."""
    import psutil

    used = {}
    for pid, process in own_ray_processes().items():
        try:
            times, args = process.cpu_times(), process.cmdline()
            name = os.path.basename(args[0]) if args else process.name()
            if name.startswith("python") and len(args) > 1:
                name = " ".join(os.path.basename(arg) for arg in args[1:3])
            used[pid] = (name[:40], times.user + times.system)
        except psutil.Error:
            pass
    return used


def kill_own_ray() -> None:
    """Kill this session's Ray processes only (`own_ray_processes`), never another's."""
    kill_processes_marked(TEMP_DIR)


def start_worker(head: dict, num_cpus: int, resources: dict) -> None:
    """A worker node on this machine joined to `head`, with files in WORKER_TEMP_DIR; it waits
    up to 300 s for a restarting GCS, as cluster.yaml's worker nodes do."""
    agent_ports = [f"--{flag}={port}" for flag, port in zip((
        "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "runtime-env-agent-port",
        "node-manager-port", "object-manager-port", "metrics-export-port"), free_ports(6),
        strict=True)]
    run_ray_start(
        [str(BIN / "ray"), "start", "--address", head["address"], "--node-ip-address",
         "127.0.0.1", "--num-cpus", str(num_cpus), "--resources", json.dumps(resources),
         *agent_ports, "--temp-dir", WORKER_TEMP_DIR, "--disable-usage-stats"],
        {**head["env"], "RAY_gcs_rpc_server_reconnect_timeout_s": "300"})


def start_head(tmp_path_factory, redis: dict | None):
    """`ray start --head` on fresh loopback ports in TEMP_DIR, with GCS fault tolerance on
    `redis` if given; the registry and artifacts in a new temp dir (also set in this process's
    environment). Yields the addresses; kills the head's processes afterwards.
    `tmp_path_factory`: pytest's, or anything whose mktemp(name) makes a new directory."""
    storage = tmp_path_factory.mktemp("storage")
    env = {**os.environ, "RNNSERVE_STORAGE": str(storage),
           "RNNSERVE_DB_URL": f"sqlite:///{storage}/registry.db",
           "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled",
           "PATH": f"{BIN}:{os.environ.get('PATH', '')}"}
    env.pop("RAY_REDIS_ADDRESS", None)
    redis_args = []
    if redis:
        env["RAY_REDIS_ADDRESS"] = redis["address"]
        redis_args = [f"--redis-password={redis['password']}"]
    os.environ.update({k: env[k] for k in ("RNNSERVE_STORAGE", "RNNSERVE_DB_URL")})
    fresh = free_ports(9)
    ports = {"gcs": fresh[0], "dashboard": fresh[1], "metrics": fresh[2]}
    agent_ports = [f"--{flag}={port}" for flag, port in zip((
        "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "runtime-env-agent-port",
        "ray-client-server-port", "node-manager-port", "object-manager-port"), fresh[3:], strict=True)]
    command = [str(BIN / "ray"), "start", "--head", "--node-ip-address", "127.0.0.1",
               "--port", str(ports["gcs"]), "--num-cpus", "4", "--include-dashboard", "true",
               "--dashboard-host", "127.0.0.1", "--dashboard-port", str(ports["dashboard"]),
               "--metrics-export-port", str(ports["metrics"]), *agent_ports, *redis_args,
               "--temp-dir", TEMP_DIR, "--disable-usage-stats"]
    try:
        run_ray_start(command, env)
        # `command` and `env` start the same head again (a head restart).
        yield {"address": f"127.0.0.1:{ports['gcs']}", "gcs_port": ports["gcs"],
               "dashboard": f"http://127.0.0.1:{ports['dashboard']}", "env": env,
               "storage": storage, "command": command}
    finally:
        kill_own_ray()
        kill_processes_marked(WORKER_TEMP_DIR)
        shutil.rmtree(TEMP_DIR, ignore_errors=True)
        shutil.rmtree(WORKER_TEMP_DIR, ignore_errors=True)


def app_config(port: int, generator_min_replicas: int = 1) -> dict:
    """serve_config.yaml with the HTTP port changed, the per-client limits lifted (every
    request of the test comes from one address) and the Generator's `min_replicas` set."""
    config = changed_config(port, uploads_per_minute=6000, upload_burst=1000, inference_per_s=0)
    deployment(config, "Generator")["autoscaling_config"]["min_replicas"] = generator_min_replicas
    return config


def deploy_config(head: dict, config: dict, directory: Path, timeout: float = 240) -> str:
    """`serve deploy` `config` (written to `directory`) onto `head`; returns once the app
    answers, with its URL. Deploying the same app again with other deployment options updates
    it in place (Serve keeps the replicas that still fit)."""
    path = write_config(config, Path(directory) / "serve_config.yaml")
    url = f"http://127.0.0.1:{config['http_options']['port']}"
    serve_deploy(head, path, url, timeout=timeout)
    return url


def deploy_app(head: dict, tmp_path_factory) -> str:
    """The real app (`app_config`) deployed onto `head` on a free port; its URL."""
    return deploy_config(head, app_config(free_port()), tmp_path_factory.mktemp("serve"))


def open_registry():
    """The registry of the current head (its settings are in this process's environment)."""
    from registry import Registry, Settings

    return Registry(Settings.from_env())


def gcs_process(gcs_port: int):
    """This session's GCS server process (found by its port), or None."""
    import psutil

    for process in psutil.process_iter(["name", "cmdline", "status"]):
        cmdline = process.info["cmdline"] or []
        if (cmdline and cmdline[0].endswith("gcs_server")
                and f"--gcs_server_port={gcs_port}" in cmdline
                and process.info["status"] != psutil.STATUS_ZOMBIE):
            return process
    return None


def restart_gcs(cmdline: list[str], environ: dict) -> subprocess.Popen:
    """Start the GCS again with the killed process's own command line and environment, as a
    process supervisor (systemd, Kubernetes) would restart a head's GCS."""
    log = open(Path(TEMP_DIR) / "gcs_restarted.out", "ab")
    return subprocess.Popen(cmdline, env=environ, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)

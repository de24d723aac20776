"""CPU seconds spent by each process of the HTTP path during a load step (psutil).

Ray names a Serve replica's process `ray::ServeReplica:<app>:<deployment>` and a proxy's
`ray::ProxyActor`; a role sums every process whose command line contains its marker (all
replicas of a deployment, the proxy of every node) and whose raylet runs the given Ray session:
other Ray clusters on the machine (a test suite's) may serve an app of the same name.
"""

from __future__ import annotations

import time

import psutil


def serve_roles(app: str, ingress: str, model: str) -> dict[str, str]:
    """role -> command-line marker, for an app's ingress and model deployments."""
    return {"proxy": "ray::ProxyActor", "ingress": f"ServeReplica:{app}:{ingress}",
            "model": f"ServeReplica:{app}:{model}"}


def _cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


class CpuMeter:
    """`start()` before a step, `stop()` after: CPU seconds per role in between. Processes that
    start during the step (a replica the autoscaler adds) count from zero."""

    def __init__(self, roles: dict[str, str], session_dir: str):
        self.roles = roles
        self.session = f"--session_dir={session_dir}"
        self._before: dict[int, float] = {}

    def _in_session(self, process: psutil.Process) -> bool:
        try:
            return any(self.session in parent.cmdline() for parent in process.parents())
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return False

    def _processes(self) -> dict[int, tuple[str, psutil.Process]]:
        found = {}
        for process in psutil.process_iter(["cmdline"]):
            line = " ".join(process.info["cmdline"] or ())
            for role, marker in self.roles.items():
                if marker in line and self._in_session(process):
                    found[process.pid] = (role, process)
        return found

    def start(self) -> None:
        self._before = {}
        for pid, (_, process) in self._processes().items():
            try:
                self._before[pid] = _cpu_seconds(process)
            except psutil.NoSuchProcess:
                pass

    def stop(self) -> dict[str, float]:
        spent = dict.fromkeys(self.roles, 0.0)
        for pid, (role, process) in self._processes().items():
            try:
                spent[role] += _cpu_seconds(process) - self._before.get(pid, 0.0)
            except psutil.NoSuchProcess:
                pass
        return spent


# Linux's CPU time fields that are this machine's own work (a guest's time is already in user).
BUSY_FIELDS = ("user", "nice", "system", "irq", "softirq")


class HostMeter:
    """The whole machine's busy cores between `start()` and `stop()`, and how many of them the
    hypervisor took for other guests (steal): on a shared virtual machine a step that ran while
    the host was taking CPU away is slower for reasons outside the path, and rnnserve and the
    floor are only comparable in steps that lost about as much."""

    def start(self) -> None:
        self._before, self._started = psutil.cpu_times(), time.monotonic()

    def stop(self) -> dict[str, float]:
        """Cores busy running this machine's work (user, system and interrupts) and cores
        stolen, averaged over the interval."""
        after, seconds = psutil.cpu_times(), time.monotonic() - self._started
        spent = {field: getattr(after, field) - getattr(self._before, field)
                 for field in after._fields}
        busy = sum(spent.get(field, 0.0) for field in BUSY_FIELDS)
        return {"busy_cores": busy / seconds, "stolen_cores": spent.get("steal", 0.0) / seconds}

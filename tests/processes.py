"""Finding and ending one test cluster's processes without touching any other Ray instance:
its daemons carry a directory of its own on their command line; workers, job drivers and
dashboard modules are their descendants."""

from __future__ import annotations

import os


def processes_marked(marker: str) -> dict:
    """{pid: psutil.Process} of the processes whose command line mentions `marker`, and their
    descendants."""
    import psutil

    daemons = [p for p in psutil.process_iter(["cmdline"])
               if any(marker in arg for arg in (p.info["cmdline"] or []))]
    family = {p.pid: p for p in daemons}
    for daemon in daemons:
        try:
            family.update({c.pid: c for c in daemon.children(recursive=True)})
        except psutil.NoSuchProcess:
            pass
    family.pop(os.getpid(), None)
    return family


def kill_processes_marked(marker: str) -> None:
    import psutil

    family = processes_marked(marker)
    for process in family.values():
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(list(family.values()), timeout=15)

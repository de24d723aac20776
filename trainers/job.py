"""What every training job does around the training itself: registry bookkeeping.

A job attaches to the version the server queued (or creates one when started by hand with
`ray job submit`), marks it `training`, runs the family's training function, publishes the
artifacts (the version turns `ready` only once they are all written), applies the promotion
gate, and on any failure records `failed` (or `cancelled` on SIGTERM, which `ray job stop`
sends) with the reason in the version's log, so no version is left `training` by a dead job.
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass

from registry import Registry, Settings, VersionRecord


class JobCancelled(BaseException):
    """Raised in the driver when the job is asked to stop (not an Exception: nothing swallows it)."""


class UserError(ValueError):
    """Bad input from the user (text too short, new characters...): fail with a clear log line."""


@dataclass
class RegistryLog:
    """A picklable log sink: prints the line (for `ray job logs`) and appends it to the registry.

    Ray Train workers receive it in their config, so each opens its own registry connection.
    """

    settings: Settings
    name: str
    version: int

    def __call__(self, line: str) -> None:
        print(line, flush=True)
        registry = self.__dict__.get("_registry")
        if registry is None:
            registry = Registry(self.settings)
            self.__dict__["_registry"] = registry
        registry.append_logs(self.name, self.version, [line])

    def __getstate__(self):
        return {"settings": self.settings, "name": self.name, "version": self.version}


def read_input(registry: Registry, path: str) -> bytes:
    """Training data from a local path or from a path inside the storage (server uploads)."""
    if os.path.isfile(path):
        with open(path, "rb") as f:
            return f.read()
    try:
        return registry.artifacts.get_bytes(path)
    except (FileNotFoundError, OSError, ValueError) as error:
        raise UserError(f"input file not found: {path}") from error


def submitted_job_id() -> str | None:
    """The Ray job submission id when this process is a `ray job submit` entrypoint.

    Ray's job supervisor hands the driver its job config (metadata included) as JSON in an
    environment variable; outside a job there is none.
    """
    try:
        config = json.loads(os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}"))
    except ValueError:
        return None
    return (config.get("metadata") or {}).get("job_submission_id")


# (record, output_dir, log) -> metrics; writes every artifact file into output_dir.
TrainFunction = Callable[[VersionRecord, str, RegistryLog], dict]


def run_job(settings: Settings, name: str, kind: str, params: dict, version: int | None,
            train: TrainFunction, score_name: str, higher_is_better: bool) -> int:
    """Run one training job end to end; returns the process exit code."""
    from trainers.promotion import promote_if_better

    registry = Registry(settings)
    record = (registry.get_version(name, version) if version is not None
              else registry.create_version(name, kind, params))
    log = RegistryLog(settings, name, record.version)
    job_id = submitted_job_id()
    # Record every resolved parameter (the server queued only what the user gave).
    registry.update_version(name, record.version, status="training",
                            params={**params, **record.params},
                            **({"job_id": job_id} if job_id and not record.job_id else {}))
    log(f"training {kind} model {name} version {record.version}")

    def on_sigterm(signum, frame):
        raise JobCancelled()

    # Signal handlers can only be set from the main thread (tests may run jobs in threads).
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, on_sigterm) if in_main else None
    try:
        with tempfile.TemporaryDirectory() as output_dir:
            metrics = train(record, output_dir, log)
            registry.publish_version(name, record.version, output_dir, metrics)
        log(f"version {record.version} is ready: "
            + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float)))
        promote_if_better(registry, name, record.version, score_name, higher_is_better, log)
        return 0
    except JobCancelled:
        _finish(registry, log, name, record.version, "cancelled", "job stopped; run cancelled")
        return 130
    except UserError as error:
        _finish(registry, log, name, record.version, "failed", f"error: {error}")
        return 2
    except Exception as error:  # noqa: BLE001 - every failure must reach the registry
        tail = traceback.format_exc().strip().splitlines()[-8:]
        _finish(registry, log, name, record.version, "failed",
                f"error: {type(error).__name__}: {error}\n" + "\n".join(tail))
        return 1
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)


def _finish(registry: Registry, log: RegistryLog, name: str, version: int, status: str,
            message: str) -> None:
    for line in message.splitlines():
        log(line)
    try:
        registry.update_version(name, version, status=status)
    except Exception as error:  # noqa: BLE001 - e.g. already cancelled by the server
        print(f"could not mark version {version} {status}: {error}", flush=True)

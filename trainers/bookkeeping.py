"""What every training job does around the training itself: registry bookkeeping.

A job attaches to the version the server queued (or creates one when started by hand with
`ray job submit`), marks it `training`, runs the family's training function, writes the files
every version has, publishes the artifacts (the version turns `ready` only once they are all
written), applies the promotion gate, and on any failure records `failed` (or `cancelled` on
SIGTERM, which `ray job stop` sends) with the reason in the version's log, so no version is
left `training` by a dead job.
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
import threading
import traceback
from typing import TYPE_CHECKING

from models.artifacts import write_version_files
from registry import Registry, Settings
from trainers.promotion import promote_if_better
from trainers.ray_run import JOB_CONFIG_ENV
from trainers.training_job import RegistryLog, TrainingJob, TrainingParams, UserError

if TYPE_CHECKING:
    from trainers.families import Family


class JobCancelled(BaseException):
    """Raised in the driver when the job is asked to stop (not an Exception: nothing swallows it)."""


def submitted_job_id() -> str | None:
    """The Ray job submission id when this process is a `ray job submit` entrypoint.

    Read from the job config Ray hands the driver (JOB_CONFIG_ENV); outside a job there is
    none.
    """
    try:
        config = json.loads(os.environ.get(JOB_CONFIG_ENV, "{}"))
    except ValueError:
        return None
    return (config.get("metadata") or {}).get("job_submission_id")


def run_job(family: Family, settings: Settings, name: str, inputs: dict[str, str],
            params: TrainingParams, version: int | None = None) -> int:
    """Run one training job end to end; returns the process exit code."""
    registry = Registry(settings)
    # The hyperparameters only: input paths stay on the job's command line, out of the
    # version's public record.
    recorded = params.as_dict()
    record = (registry.get_version(name, version) if version is not None
              else registry.create_version(name, family.kind, recorded))
    log = RegistryLog(settings, name, record.version)
    job_id = submitted_job_id()
    registry.update_version(name, record.version, status="training",
                            params={**record.params, **recorded},
                            **({"job_id": job_id} if job_id and not record.job_id else {}))
    log(f"training {family.kind} model {name} version {record.version}")

    def on_sigterm(signum, frame):
        raise JobCancelled()

    # Signal handlers can only be set from the main thread (tests may run jobs in threads).
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, on_sigterm) if in_main else None
    try:
        with tempfile.TemporaryDirectory() as output_dir:
            trained = family.train(TrainingJob(settings, record, inputs, params, family.score,
                                               output_dir, log))
            write_version_files(output_dir, family.kind, trained.params.model,
                                trained.params.run, trained.metrics)
            # The parameters as resolved from the data (vocabulary size, sequence shape).
            registry.update_version(name, record.version,
                                    params={**record.params, **recorded,
                                            **trained.params.as_dict()})
            registry.publish_version(name, record.version, output_dir, trained.metrics)
        log(f"version {record.version} is ready: "
            + ", ".join(f"{k} {v:.4f}" for k, v in trained.metrics.items() if isinstance(v, float)))
        promote_if_better(registry, family, name, record.version, log)
        return 0
    except JobCancelled:
        _finish(registry, name, record.version, "cancelled", "job stopped; run cancelled")
        return 130
    except UserError as error:
        _finish(registry, name, record.version, "failed", f"error: {error}")
        return 2
    except Exception as error:  # noqa: BLE001 - every failure must reach the registry
        # The traceback goes to the job's own log (`ray job logs`), not to the version's
        # public log, which gets one short line.
        traceback.print_exc()
        _finish(registry, name, record.version, "failed",
                f"error: {type(error).__name__}: {_first_line(error)}")
        return 1
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)


def _first_line(error: Exception, limit: int = 300) -> str:
    lines = str(error).strip().splitlines()
    return lines[0][:limit] if lines else ""


def _finish(registry: Registry, name: str, version: int, status: str, message: str) -> None:
    print(message, flush=True)  # for `ray job logs`; the registry gets it in the version's log
    try:
        registry.end_version(name, version, status, message)
    except Exception as error:  # noqa: BLE001 - e.g. already cancelled by the server
        print(f"could not mark version {version} {status}: {error}", flush=True)

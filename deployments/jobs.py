"""Training jobs: submitted with Ray's JobSubmissionClient, their end reflected in the registry.

The job runs exactly what a user would `ray job submit`: `python -m trainers.<family> ...`.
The trainer itself records `training`/`ready`/`failed`; `sync_statuses` covers what it cannot,
a job that died before it could write (killed, out of memory, never started).
"""

from __future__ import annotations

import shlex
import sys
import uuid

from registry import Registry, Settings, VersionRecord
from trainers.families import Family

ACTIVE = ("queued", "training")
# Ray job status -> the version status it implies once the job has ended.
ENDED = {"FAILED": "failed", "STOPPED": "cancelled", "SUCCEEDED": "failed"}


class TrainingJobs:
    def __init__(self, settings: Settings, dashboard_address: str | None = None):
        self.settings = settings
        self.dashboard_address = dashboard_address
        self._client = None

    @property
    def client(self):
        if self._client is None:
            import ray
            from ray.job_submission import JobSubmissionClient

            # Default: this replica's own cluster (found through its GCS), never a guess among
            # several Ray instances on the machine.
            address = self.dashboard_address or (
                ray.get_runtime_context().gcs_address if ray.is_initialized() else None)
            self._client = JobSubmissionClient(address)
        return self._client

    def entrypoint(self, family: Family, record: VersionRecord, input_file: str,
                   params: dict) -> str:
        # This replica's interpreter: the job runs in the same environment as the server.
        argv = [sys.executable, "-m", family.module, "--name", record.name,
                "--version", str(record.version), "--input_file", input_file]
        for key, value in params.items():
            argv += [f"--{key}", str(value).lower() if isinstance(value, bool) else str(value)]
        return shlex.join(argv)

    def submit(self, family: Family, record: VersionRecord, input_file: str,
               params: dict) -> str:
        job_id = f"rnnserve-{record.name}-v{record.version}-{uuid.uuid4().hex[:8]}"
        self.client.submit_job(
            entrypoint=self.entrypoint(family, record, input_file, params),
            submission_id=job_id,
            runtime_env={"env_vars": self.settings.to_env()},
            metadata={"rnnserve_model": record.name, "rnnserve_version": str(record.version)},
        )
        return job_id

    def stop(self, job_id: str) -> None:
        self.client.stop_job(job_id)

    def sync_statuses(self, registry: Registry) -> list[tuple[str, int, str]]:
        """Mark versions whose job ended without the trainer recording it; returns the changes."""
        changes = []
        for model in registry.list_models():
            for record in registry.list_versions(model["name"]):
                if record.status not in ACTIVE or not record.job_id:
                    continue
                try:
                    info = self.client.get_job_info(record.job_id)
                except Exception:  # noqa: BLE001 - unknown to this cluster (e.g. it restarted)
                    info = None
                job_status = str(getattr(info, "status", "LOST")).split(".")[-1]
                if info is not None and job_status not in ENDED:
                    continue
                # Re-read: the trainer may have finished between the two reads.
                if registry.get_version(record.name, record.version).status not in ACTIVE:
                    continue
                new_status = ENDED.get(job_status, "failed")
                message = getattr(info, "message", None) or "the job is gone (cluster restarted?)"
                registry.append_logs(record.name, record.version,
                                     [f"job {record.job_id} ended {job_status}: {message}"])
                registry.update_version(record.name, record.version, status=new_status)
                changes.append((record.name, record.version, new_status))
        return changes

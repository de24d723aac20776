"""Training jobs: started from an upload with Ray's JobSubmissionClient, their end reflected in
the registry.

The job runs exactly what a user would `ray job submit`: `python -m trainers.<family> ...`.
The trainer itself records `training`/`ready`/`failed`; `sync_statuses` covers what it cannot,
a job that died before it could write (killed, out of memory, never started). Not being able
to ask (the job server restarting, a timeout) is not an answer: a version is marked failed
only when its job reports an end, when the cluster says it has no such job, or after the job
server has been unreachable for a grace period. And a run that finishes anyway is published:
the registry lets a finished run turn a `failed` guess into `ready`.
"""

from __future__ import annotations

import asyncio
import logging
import shlex
import sys
import time
import uuid
from datetime import UTC, datetime

from deployments.errors import ApiError
from deployments.limits import Limits
from registry import ACTIVE, Conflict, Registry, Settings, VersionRecord, parse_model_ref
from trainers.families import Family, TrainingParams

logger = logging.getLogger("ray.serve")
# Ray job status -> the version status it implies once the job has ended.
ENDED = {"FAILED": "failed", "STOPPED": "cancelled", "SUCCEEDED": "failed"}
NEVER_SUBMITTED_AFTER_S = 600.0  # submitting takes seconds; this is a server that went away
# A custom resource that nodes able to host training drivers declare (cluster.yaml's serving
# nodes do): a driver placed there outlives a head restart, which ends every process on the
# head. Without such a node (`make run`, one machine) drivers run on the head, Ray's default.
DRIVER_RESOURCE = "training_driver"


class TrainingJobs:
    def __init__(self, registry: Registry, settings: Settings, limits: Limits,
                 dashboard_address: str | None = None, unreachable_grace_s: float = 600.0):
        self.registry, self.settings, self.limits = registry, settings, limits
        self._started_by: dict[tuple[str, int], str] = {}  # version -> client that uploaded it
        self.dashboard_address = dashboard_address
        self.unreachable_grace_s = unreachable_grace_s
        self._client = None
        self._unreachable_since: float | None = None  # first failed ask of the current outage

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

    async def start(self, family: Family, name: str, filename: str, data: bytes,
                    params: TrainingParams, client: str) -> VersionRecord:
        """Check an upload, store it, queue a version and submit its training job.

        Nothing is stored for an upload that could never train (400), and a failure after
        storing rolls back: the file is deleted, or the version marked failed with the reason.
        """
        if not data:
            raise ApiError(400, "the uploaded file is empty")
        try:
            params = await asyncio.to_thread(family.check_upload, data, params,
                                             max_unpacked_bytes=self.limits.max_unpacked_bytes)
            parent = parse_model_ref(params.run.init_from) if params.run.init_from else None
        except ValueError as error:
            raise ApiError(400, str(error)) from None
        if parent:  # 404 when the model to continue is unknown
            await asyncio.to_thread(self.registry.get_version, *parent)
        await self._check_resources(params, client)
        relpath = self.registry.artifacts.upload_path(name, filename)
        await asyncio.to_thread(self.registry.artifacts.put_bytes, relpath, data)
        try:
            record = await asyncio.to_thread(self.registry.create_version, name, family.kind,
                                             params.as_dict())
        except Exception:
            await asyncio.to_thread(self.registry.artifacts.delete, relpath)
            raise
        try:
            job_id = await asyncio.to_thread(self._submit, family, record, relpath, params)
        except Exception as error:  # noqa: BLE001 - the version must not stay queued forever
            await asyncio.to_thread(self.registry.end_version, record.name, record.version,
                                    "failed", f"job submission failed: {error}")
            raise ApiError(503, "could not submit the training job", str(error)) from None
        self._started_by[(name, record.version)] = client
        return await asyncio.to_thread(self.registry.update_version, name, record.version,
                                       job_id=job_id)

    async def _check_resources(self, params: TrainingParams, client: str) -> None:
        """What one upload may make the cluster spend, checked before anything is stored."""
        run, limits = params.run, self.limits
        for value, most, what, setting in (
                (run.num_workers, limits.max_num_workers, "num_workers", "max_num_workers"),
                (run.cpus_per_worker, limits.max_cpus_per_worker, "cpus_per_worker",
                 "max_cpus_per_worker"),
                (0 if run.init_from else params.model.param_count(), limits.max_model_params,
                 "model parameters", "max_model_params")):
            if value > most:
                raise ApiError(400, f"{what} {value:,} is over this server's limit of {most:,} "
                                    f"(limits.{setting})")
        if run.log_every_n < limits.min_log_every_n:
            raise ApiError(400, f"log_every_n must be >= {limits.min_log_every_n} "
                                "(limits.min_log_every_n)")
        if (run.use_gpu and not limits.gpus_on_demand
                and not await asyncio.to_thread(_cluster_has, "GPU")):
            raise ApiError(400, "use_gpu: this cluster has no GPU and cannot add one "
                                "(limits.gpus_on_demand)")
        active = [(r.name, r.version)
                  for r in await asyncio.to_thread(self.registry.versions_with_status, ACTIVE)]
        mine = [v for v in active if self._started_by.get(v) == client]
        for count, most, whose, setting in (
                (len(mine), limits.max_training_jobs_per_client, "of yours",
                 "max_training_jobs_per_client"),
                (len(active), limits.max_training_jobs, "in all", "max_training_jobs")):
            if count >= most:
                raise ApiError(429, f"{count} training jobs {whose} are queued or running; the "
                                    f"limit is {most} (limits.{setting}): retry when one ends",
                               headers={"Retry-After": "60"})

    def entrypoint(self, family: Family, record: VersionRecord, input_file: str,
                   params: TrainingParams) -> str:
        # This replica's interpreter: the job runs in the same environment as the server.
        return shlex.join([sys.executable, "-m", family.module, "--name", record.name,
                           "--version", str(record.version), "--input_file", input_file,
                           *family.flags(params)])

    def _submit(self, family: Family, record: VersionRecord, input_file: str,
                params: TrainingParams) -> str:
        job_id = f"rnnserve-{record.name}-v{record.version}-{uuid.uuid4().hex[:8]}"
        self.client.submit_job(
            entrypoint=self.entrypoint(family, record, input_file, params),
            submission_id=job_id,
            runtime_env={"env_vars": self.settings.to_env()},
            metadata={"rnnserve_model": record.name, "rnnserve_version": str(record.version)},
            entrypoint_resources={DRIVER_RESOURCE: 1} if _cluster_has(DRIVER_RESOURCE) else None,
        )
        return job_id

    def stop(self, job_id: str) -> None:
        self.client.stop_job(job_id)

    def sync_statuses(self) -> list[tuple[str, int, str]]:
        """Mark versions whose job ended without the trainer recording it; returns the changes."""
        changes = []
        for record in self.registry.versions_with_status(ACTIVE):
            if not record.job_id:
                overdue, ended = None, self._never_submitted(record)
            else:
                overdue = self._overdue(record)
                ended = overdue or self._job_end(record.job_id)
            if ended is None:
                continue
            # Re-read: the trainer may have finished between the two reads.
            if self.registry.get_version(record.name, record.version).status not in ACTIVE:
                continue
            new_status, message = ended
            try:
                self.registry.end_version(record.name, record.version, new_status,
                                          f"job {record.job_id}: {message}")
            except Conflict:  # the trainer recorded its own end since the re-read
                continue
            changes.append((record.name, record.version, new_status))
            if overdue:  # stopped after its version failed: the trainer, stopped, finds it
                self._stop_overdue(record.job_id)  # ended and leaves it so (not "cancelled")
        return changes

    def _never_submitted(self, record: VersionRecord) -> tuple[str, str] | None:
        """A version still `queued` with no job long after its upload: the server stopped
        between recording it and submitting its job (a run started by hand is `training`)."""
        if record.status != "queued" or _age_s(record) <= NEVER_SUBMITTED_AFTER_S:
            return None
        return "failed", "its training job was never submitted (the server restarted?)"

    def _overdue(self, record: VersionRecord) -> tuple[str, str] | None:
        """`timeout_s` counts from submission, so a job that never runs a step (its workers
        cannot be scheduled) still ends: it is stopped and its version failed."""
        timeout_s = float(record.params.get("timeout_s") or 0)
        if not timeout_s or _age_s(record) <= timeout_s:
            return None
        return "failed", (f"stopped: past its wall-clock limit, still running {timeout_s:g} s "
                          "after submission (timeout_s)")

    def _stop_overdue(self, job_id: str) -> None:
        try:
            self.client.stop_job(job_id)
        except Exception as error:  # noqa: BLE001 - already gone, or the server is away
            logger.warning("stopping overdue job %s: %s", job_id, error)

    def _job_end(self, job_id: str) -> tuple[str, str] | None:
        """(version status, reason) once the job has ended; None while it runs or while the
        job server cannot be asked (within the grace period)."""
        try:
            info = self.client.get_job_info(job_id)
        except RuntimeError as error:
            if "404" in str(error) or "does not exist" in str(error):
                self._unreachable_since = None
                return "failed", "the job is gone: the cluster has no such job (restarted?)"
            return self._unreachable(job_id, error)
        except Exception as error:  # noqa: BLE001 - connection refused, timeouts
            return self._unreachable(job_id, error)
        self._unreachable_since = None
        status = str(info.status).split(".")[-1]
        if status not in ENDED:
            return None
        # Ray's message carries up to 20,000 characters of the driver's output: it goes to
        # the server log; the version's public log gets its first line.
        logger.info("job %s ended %s: %s", job_id, status, info.message)
        summary = (info.message or "no message").strip().splitlines()[0][:300]
        return ENDED[status], f"ended {status}: {summary}"

    def _unreachable(self, job_id: str, error: Exception) -> tuple[str, str] | None:
        self._client = None  # a restarted job server may need a new connection
        now = time.monotonic()
        if self._unreachable_since is None:
            self._unreachable_since = now
        down = now - self._unreachable_since
        logger.warning("job server unreachable for %.0f s (%s: %s)", down,
                       type(error).__name__, error)
        if down < self.unreachable_grace_s:
            return None
        return "failed", f"the job server was unreachable for {down:.0f} s"


def _age_s(record: VersionRecord) -> float:
    created = record.created_at
    if created.tzinfo is None:  # SQLite gives naive datetimes; they were stored as UTC
        created = created.replace(tzinfo=UTC)
    return (datetime.now(UTC) - created).total_seconds()


def _cluster_has(resource: str) -> bool:
    """Whether a node of the cluster (alive now) declares `resource`."""
    import ray

    return ray.is_initialized() and ray.cluster_resources().get(resource, 0) > 0


"""Launching a family's worker function on Ray Train: scaling, storage, failure handling, and
the best checkpoint copied out as the version's files."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from functools import partial

from models.artifacts import HISTORY_FILE, write_json
from registry import ArtifactStore
from trainers.loop import HISTORY, OPTIMIZER_FILE, STATE_FILE, WorkerPayload
from trainers.training_job import Score, TrainingJob, TrainingParams, UserError

TRAINING_ONLY = (OPTIMIZER_FILE, STATE_FILE)  # checkpoint files a version does not need
START_TIMEOUT_ENV = "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"
LOST_CONTROLLER_ATTEMPTS, LOST_CONTROLLER_WAIT_S = 3, 10.0
# Ray's job supervisor hands a job's driver its job config (metadata included) as JSON here;
# outside a job there is none.
JOB_CONFIG_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"


def run_name(job: TrainingJob) -> str:
    """Ray Train run directory of one version's training, under the model's runs folder. The
    creation time keeps it unique: Ray Train resumes a run whose directory exists, and a
    deleted-and-recreated model's new v1 must not resume the old v1's checkpoints."""
    return f"v{job.record.version}-{job.record.created_at.strftime('%Y%m%dT%H%M%S%f')}"


def ensure_ray() -> None:
    """Join the running Ray cluster (a job, `ray start`, a test session) or start a local one."""
    import ray

    if not ray.is_initialized():
        ray.init(log_to_driver=True, _temp_dir=_job_node_temp_dir())


def _job_node_temp_dir() -> str | None:
    """For a job's driver, the temp dir of the node Ray placed the job on: it names that node
    to `ray.init`. Where several nodes share a host (simulated clusters, several raylets on
    one machine) `ray.init` would attach the driver to the head's raylet instead, and Ray
    Train would put the run's controller on the head, where a head restart ends it. The
    driver descends from its node's raylet (raylet -> job supervisor -> shell -> driver);
    None outside a job or where /proc cannot be read."""
    if JOB_CONFIG_ENV not in os.environ:
        return None
    pid = os.getppid()
    for _ in range(6):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                args = f.read().decode(errors="replace").split("\0")
            with open(f"/proc/{pid}/stat") as f:
                parent = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return None
        if os.path.basename(args[0]) == "raylet":
            return next((a.split("=", 1)[1] for a in args if a.startswith("--temp_dir=")), None)
        pid = parent
    return None


def _run_worker(config: dict) -> None:
    config["worker"](config["payload"])


def fit(worker: Callable[[WorkerPayload], None], job: TrainingJob, params: TrainingParams,
        data: tuple, score: Score, init_weights: bytes | None = None) -> dict:
    """Run `worker` on the run config's Ray Train workers; copy the best checkpoint's model
    files (by `score`) into the job's output directory with the metrics of every checkpoint of
    the run (from the latest one), and return the metrics reported with the best.

    Checkpoints go to the model's runs folder on the shared storage, so a worker that dies on
    one node resumes on another from the latest one (`FailureConfig.max_failures`).
    """
    from ray.train import CheckpointConfig, ControllerError, FailureConfig, RunConfig, ScalingConfig
    from ray.train.tensorflow import TensorflowTrainer

    ensure_ray()
    run = params.run
    payload = WorkerPayload(
        model=params.model, run=run, data=data, log=job.log, init_weights=init_weights,
        deadline=time.time() + run.timeout_s if run.timeout_s else None)
    store = ArtifactStore(job.settings.storage, job.settings.s3_endpoint)
    filesystem, base = store.filesystem()
    # Ray sets each worker's OMP/TF thread count from its CPU reservation.
    resources = {"CPU": run.cpus_per_worker, **({"GPU": 1} if run.use_gpu else {})}
    # Ray Train waits this long for a worker group's resources (its controller reads the
    # driver's environment), then counts a controller failure; by default it would retry
    # those forever, so a run asking for what the cluster cannot give would never end.
    os.environ[START_TIMEOUT_ENV] = str(run.start_timeout_s)
    make_trainer = partial(
        TensorflowTrainer, _run_worker,
        train_loop_config={"worker": worker, "payload": payload},
        scaling_config=ScalingConfig(num_workers=run.num_workers, use_gpu=run.use_gpu,
                                     resources_per_worker=resources),
        run_config=RunConfig(
            name=run_name(job),
            storage_path=f"{base}/{store.runs_path(job.record.name)}",
            storage_filesystem=filesystem,
            failure_config=FailureConfig(max_failures=run.max_failures,
                                         controller_failure_limit=0),
            checkpoint_config=CheckpointConfig(
                num_to_keep=2, checkpoint_score_attribute=score.name,
                checkpoint_score_order=score.mode),
        ),
    )
    try:
        result = _fit_resuming(make_trainer, job.log)
    except ControllerError as error:
        # By name: Ray exports this error class only from a private module.
        if type(error.controller_failure).__name__ != "WorkerGroupStartupTimeoutError":
            raise
        raise UserError(_not_scheduled(run, resources)) from error
    best = result.get_best_checkpoint(metric=score.name, mode=score.mode)
    if best is None:
        raise RuntimeError("training finished without reporting a checkpoint")
    metrics = next(m for c, m in result.best_checkpoints if c.path == best.path)
    with result.checkpoint.as_directory() as latest:  # Ray Train always keeps the latest
        with open(os.path.join(latest, STATE_FILE)) as f:
            write_json(job.output_dir, HISTORY_FILE, {HISTORY: json.load(f)[HISTORY]})
    with best.as_directory() as directory:
        for entry in os.listdir(directory):
            if entry in TRAINING_ONLY:
                continue
            source = os.path.join(directory, entry)
            target = os.path.join(job.output_dir, entry)
            if os.path.isdir(source):
                shutil.copytree(source, target)
            else:
                shutil.copy2(source, target)
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float))}


def _fit_resuming(make_trainer: Callable, log: Callable[[str], None]):
    """`make_trainer().fit()`, again when the driver lost its run's controller: a head restart
    makes the actors of a driver on a worker node unreachable for a while. The new trainer has
    the same run name and storage, so Ray Train resumes from the run's latest checkpoint."""
    from ray.exceptions import ActorDiedError, ActorUnavailableError

    for attempt in range(1, LOST_CONTROLLER_ATTEMPTS + 1):
        try:
            return make_trainer().fit()
        except (ActorDiedError, ActorUnavailableError) as error:
            if attempt == LOST_CONTROLLER_ATTEMPTS:
                raise
            log(f"lost the run's controller ({type(error).__name__}): resuming from the latest "
                f"checkpoint in {LOST_CONTROLLER_WAIT_S:g} s (attempt {attempt + 1} of "
                f"{LOST_CONTROLLER_ATTEMPTS})")
            time.sleep(LOST_CONTROLLER_WAIT_S)
    raise AssertionError("unreachable")


def _not_scheduled(run, resources: dict) -> str:
    """Why a run whose workers never started failed, with what the cluster has free."""
    import ray

    free = {k: v for k, v in ray.available_resources().items() if k in resources}
    return (f"the cluster did not start {run.num_workers} worker(s) with {resources} each "
            f"within {run.start_timeout_s:g} s (start_timeout_s); free now: {free}")

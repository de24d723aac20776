"""Launching a training loop on Ray Train: scaling, storage, failure handling, best checkpoint."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable

from registry import Settings
from trainers.loop import OPTIMIZER_FILE, STATE_FILE

TRAINING_ONLY = (OPTIMIZER_FILE, STATE_FILE)  # checkpoint files a version does not need


def run_name(record) -> str:
    """Ray Train run directory of one version's training. The creation time keeps it unique:
    Ray Train resumes a run whose directory exists, and a deleted-and-recreated model's new
    v1 must not resume the old v1's checkpoints."""
    return f"{record.name}-v{record.version}-{record.created_at.strftime('%Y%m%dT%H%M%S%f')}"


def ensure_ray() -> None:
    """Join the running Ray cluster (a job, `ray start`, a test session) or start a local one."""
    import ray

    if not ray.is_initialized():
        ray.init(log_to_driver=True)


def fit(worker_fn: Callable[[dict], None], worker_config: dict, *, settings: Settings,
        run_name: str, num_workers: int, use_gpu: bool, max_failures: int, score_name: str,
        cpus_per_worker: int = 1,
        higher_is_better: bool, output_dir: str) -> dict:
    """Run `worker_fn` on `num_workers` Ray Train workers; copy the best checkpoint's model
    files into `output_dir` and return the metrics reported with it.

    Checkpoints go to `<storage>/runs/<run_name>` on the shared storage, so a worker that dies
    on one node resumes on another from the latest one (`FailureConfig.max_failures`).
    """
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.tensorflow import TensorflowTrainer

    from registry import ArtifactStore

    ensure_ray()
    filesystem, base = ArtifactStore(settings.storage, settings.s3_endpoint).filesystem()
    # Ray sets each worker's OMP/TF thread count from its CPU reservation.
    resources = {"CPU": cpus_per_worker, **({"GPU": 1} if use_gpu else {})}
    trainer = TensorflowTrainer(
        worker_fn,
        train_loop_config=worker_config,
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu,
                                     resources_per_worker=resources),
        run_config=RunConfig(
            name=run_name,
            storage_path=f"{base.rstrip('/')}/runs",
            storage_filesystem=filesystem,
            failure_config=FailureConfig(max_failures=max_failures),
            checkpoint_config=CheckpointConfig(
                num_to_keep=2, checkpoint_score_attribute=score_name,
                checkpoint_score_order="max" if higher_is_better else "min"),
        ),
    )
    result = trainer.fit()
    best = result.get_best_checkpoint(metric=score_name, mode="max" if higher_is_better else "min")
    if best is None:
        raise RuntimeError("training finished without reporting a checkpoint")
    metrics = next(m for c, m in result.best_checkpoints if c.path == best.path)
    with best.as_directory() as directory:
        for entry in os.listdir(directory):
            if entry in TRAINING_ONLY:
                continue
            source = os.path.join(directory, entry)
            target = os.path.join(output_dir, entry)
            if os.path.isdir(source):
                shutil.copytree(source, target)
            else:
                shutil.copy2(source, target)
    return dict(metrics)

"""The distributed training loop shared by every model family (runs inside a Ray Train worker).

Keras `model.fit` fails under MultiWorkerMirroredStrategy with Keras 3 (a PerReplica
conversion error), so this is a custom loop: `strategy.run` + `GradientTape`. A family
supplies a `LoopTask` (model, per-worker batches, loss, evaluation) built from the
`WorkerPayload` every worker receives; this module owns the strategy, checkpoint
save/restore, reporting to Ray Train and the training log.

Checkpoints hold `model.weights.h5`, the optimizer's variables (`optimizer.npz`) and
`state.json` (step, the metrics of every checkpoint so far), so a restarted worker group
continues at the saved step with the optimizer's moments intact instead of starting again at
step 0, and the run's whole metrics history survives with it.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.artifacts import WEIGHTS_FILE
from models.config import RunConfig

OPTIMIZER_FILE = "optimizer.npz"
STATE_FILE = "state.json"
HISTORY = "history"  # state.json's list of every checkpoint's metrics, oldest first


@dataclass(frozen=True)
class WorkerPayload:
    """What each Ray Train worker receives, the same shape for every family."""

    model: Any  # the family's model config
    run: RunConfig  # learning rate, steps, checkpoint/log cadence, time budget
    data: tuple  # the family's prepared arrays: training, then validation
    log: Callable[[str], None]  # writes a training log line (rank 0 writes)
    deadline: float | None = None  # time.time() after which the run stops with an error
    init_weights: bytes | None = None  # weights file to start from (continued training)


@dataclass
class LoopTask:
    """What differs between model families; everything else is in `run_training_loop`."""

    payload: WorkerPayload
    build_model: Callable[[], object]  # -> keras.Model, called inside strategy.scope()
    # (worker_index, start_step) -> iterator of (x, y) numpy batches for this worker
    batches: Callable[[int, int], Iterator[tuple[np.ndarray, np.ndarray]]]
    per_example_loss: Callable  # (y, model_output) -> loss per example, shape [batch]
    evaluate: Callable[[object], dict]  # model -> validation metrics (floats)
    global_batch_size: int  # examples per step summed over workers
    items_per_example: int  # characters (or sequences) one example stands for, for throughput
    examples_per_epoch: int  # training examples in one pass over the data (for `epoch`)


class TrainingTimeout(RuntimeError):
    pass


def cosine_factor(progress: float, final: float) -> float:
    """Learning-rate multiplier `progress` (0..1) into a run: 1 at the start, `final` at the end."""
    progress = min(max(progress, 0.0), 1.0)
    return final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _save_checkpoint(directory: str, model, optimizer, state: dict) -> None:
    model.save_weights(os.path.join(directory, WEIGHTS_FILE))
    np.savez(os.path.join(directory, OPTIMIZER_FILE),
             *[np.asarray(v.numpy()) for v in optimizer.variables])
    with open(os.path.join(directory, STATE_FILE), "w") as f:
        json.dump(state, f)


def _restore_checkpoint(directory: str, model, optimizer) -> dict:
    model.load_weights(os.path.join(directory, WEIGHTS_FILE))
    with np.load(os.path.join(directory, OPTIMIZER_FILE)) as saved:
        values = [saved[f"arr_{i}"] for i in range(len(saved.files))]
    if len(values) != len(optimizer.variables):
        raise RuntimeError("checkpoint optimizer state does not match the model")
    for variable, value in zip(optimizer.variables, values, strict=True):
        variable.assign(value)
    with open(os.path.join(directory, STATE_FILE)) as f:
        return json.load(f)


class Schedule:
    """The learning rate and the time budget, agreed by all workers.

    Workers must stop at the same step (or the others hang in the all-reduce) and use the same
    learning rate (or their weights drift apart), so they agree on the time budget through a
    collective: all stop as soon as any one is over it, and the cosine schedule follows the
    mean share of it spent, or the share of max_steps, whichever is further.
    """

    def __init__(self, run: RunConfig, optimizer, mean_over_workers, step: int):
        self.run, self.optimizer, self.mean_over_workers = run, optimizer, mean_over_workers
        self.decays = run.lr_decay < 1.0
        self.budget_s = run.max_minutes * 60
        self.started = time.perf_counter()
        # Kept in Python for the log: under MWMS the optimizer's variable is a MirroredVariable,
        # which cannot be read back as a float.
        self.learning_rate = run.learning_rate
        self._follow(step / run.max_steps)  # a resumed run continues its schedule

    def _follow(self, progress: float) -> None:
        if self.decays:
            self.learning_rate = self.run.learning_rate * cosine_factor(progress, self.run.lr_decay)
            self.optimizer.learning_rate = self.learning_rate

    def update(self, step: int) -> bool:
        """At a log step: set the learning rate; True when the time budget is spent."""
        import tensorflow as tf

        over, spent = 0.0, 0.0
        if self.budget_s:
            mine = (time.perf_counter() - self.started) / self.budget_s
            over, spent = self.mean_over_workers(tf.constant([float(mine > 1.0), mine])).numpy()
        self._follow(max(step / self.run.max_steps, float(spent)))
        return over > 0


class MetricsWindow:
    """Training loss and throughput since the last checkpoint.

    Losses stay tensors until a log or checkpoint step: reading one every step would stall
    the pipeline."""

    def __init__(self, task: LoopTask):
        self.task = task
        self.started = time.perf_counter()
        self._reset()

    def _reset(self) -> None:
        self.window_start, self.steps, self.loss_sum, self.pending = time.perf_counter(), 0, 0.0, []

    def add(self, loss) -> None:
        self.pending.append(loss)
        self.steps += 1

    def settle(self, step: int) -> None:
        losses = [float(loss) for loss in self.pending]
        self.pending.clear()
        if not np.all(np.isfinite(losses)):
            raise FloatingPointError(f"training loss became non-finite before step {step}")
        self.loss_sum += sum(losses)

    def items_per_s(self) -> float:
        items = self.steps * self.task.global_batch_size * self.task.items_per_example
        return items / max(time.perf_counter() - self.window_start, 1e-9)

    def log_line(self, step: int, learning_rate: float | None) -> str:
        return (f"step {step}/{self.task.payload.run.max_steps} "
                f"loss {self.loss_sum / self.steps:.4f} {self.items_per_s():,.0f} items/s"
                + (f" lr {learning_rate:.2e}" if learning_rate is not None else ""))

    def close(self, step: int, model) -> dict:
        """The checkpoint's metrics (validation included); starts a new window."""
        metrics = {
            "step": step,
            "epoch": step * self.task.global_batch_size / max(self.task.examples_per_epoch, 1),
            "elapsed_s": time.perf_counter() - self.started,
            "train_loss": self.loss_sum / max(self.steps, 1),
            "items_per_s": self.items_per_s(),
            **self.task.evaluate(model),
        }
        self._reset()
        return metrics


def _report_checkpoint(model, optimizer, history: list[dict], rank: int) -> None:
    import ray.train

    metrics = history[-1]
    with tempfile.TemporaryDirectory() as directory:
        # Every worker writes (saving may need all of them), only rank 0's is kept.
        _save_checkpoint(directory, model, optimizer, {"step": metrics["step"], HISTORY: history})
        ray.train.report(metrics, checkpoint=(ray.train.Checkpoint.from_directory(directory)
                                              if rank == 0 else None))


def build_optimizer(run: RunConfig, model):
    """Adam with the run's clipping; under mixed precision wrapped in a LossScaleOptimizer.
    Keras' compile() adds the loss scaling by itself, a custom loop must: small float16
    gradients flush to zero without it (measured on a 2x128 char-RNN at initialisation: 57% of
    the gradient entries)."""
    import keras

    optimizer = keras.optimizers.Adam(run.learning_rate, global_clipnorm=run.grad_clip)
    if run.mixed_precision:
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    optimizer.build(model.trainable_variables)
    return optimizer


def gradient_step(model, optimizer, task: LoopTask, x, y):
    """One replica's update; returns its share of the batch's loss (float32, unscaled). The
    loss is scaled up before the gradients are taken (a no-op unless the optimizer is a
    LossScaleOptimizer), which unscales them, skips a step whose gradients overflowed and
    clips the rest."""
    import tensorflow as tf

    with tf.GradientTape() as tape:
        output = model(x, training=True)
        loss = tf.nn.compute_average_loss(
            task.per_example_loss(y, output), global_batch_size=task.global_batch_size)
        scaled = optimizer.scale_loss(loss)
    grads = tape.gradient(scaled, model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
    return loss


def run_training_loop(task: LoopTask) -> None:
    """Train until `max_steps` (or the time budget), reporting metrics and checkpoints to Ray
    Train."""
    import keras
    import ray.train
    import tensorflow as tf

    run, log = task.payload.run, task.payload.log
    if run.mixed_precision:
        # float16 math with float32 weights; the logits layers stay float32 for a stable loss.
        keras.mixed_precision.set_global_policy("mixed_float16")
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    # One worker needs no collectives: the default strategy skips MWMS's per-step overhead.
    strategy = (tf.distribute.MultiWorkerMirroredStrategy() if world > 1
                else tf.distribute.get_strategy())
    with strategy.scope():
        model = task.build_model()
        optimizer = build_optimizer(run, model)

    step, history = 0, []
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as directory:
            state = _restore_checkpoint(directory, model, optimizer)
        step, history = state["step"], state[HISTORY]
        if rank == 0:
            log(f"resumed from checkpoint at step {step}")

    @tf.function
    def train_step(x, y):
        per_replica = strategy.run(
            lambda x, y: gradient_step(model, optimizer, task, x, y), args=(x, y))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    @tf.function
    def mean_over_workers(values):
        per_replica = strategy.run(lambda v: v, args=(values,))
        return strategy.reduce(tf.distribute.ReduceOp.MEAN, per_replica, axis=None)

    schedule = Schedule(run, optimizer, mean_over_workers, step)
    window = MetricsWindow(task)
    batches = task.batches(rank, step)
    last_step = run.max_steps
    while step < last_step:
        if task.payload.deadline is not None and time.time() > task.payload.deadline:
            raise TrainingTimeout(f"training exceeded its wall-clock limit at step {step}")
        x, y = next(batches)
        window.add(train_step(tf.constant(x), tf.constant(y)))
        step += 1
        log_step, save_step = step % run.log_every_n == 0, step % run.save_every_n == 0
        if log_step or save_step or step == last_step:
            window.settle(step)
        if log_step:
            if schedule.update(step):
                last_step = step
            if rank == 0:
                log(window.log_line(step, schedule.learning_rate if schedule.decays else None))
        if save_step or step == last_step:
            history.append(window.close(step, model))
            _report_checkpoint(model, optimizer, history, rank)
            if rank == 0:
                log(_format_metrics(history[-1]))


def _format_metrics(metrics: dict) -> str:
    parts = [f"{key} {value:.4f}" if isinstance(value, float) else f"{key} {value}"
             for key, value in metrics.items()]
    return "checkpoint: " + " ".join(parts)

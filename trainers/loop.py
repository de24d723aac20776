"""The distributed training loop shared by every model family (runs inside a Ray Train worker).

Keras `model.fit` fails under MultiWorkerMirroredStrategy with Keras 3 (a PerReplica
conversion error), so this is a custom loop: `strategy.run` + `GradientTape`. A family
supplies a `LoopTask` (model, per-worker batches, loss, evaluation); this module owns the
strategy, checkpoint save/restore, reporting to Ray Train and the training log.

Checkpoints hold `model.weights.h5`, the optimizer's variables (`optimizer.npz`) and
`state.json` (step, metrics), so a restarted worker group continues at the saved step with
the optimizer's moments intact instead of starting again at step 0.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from models.config import RunConfig

WEIGHTS_FILE = "model.weights.h5"
OPTIMIZER_FILE = "optimizer.npz"
STATE_FILE = "state.json"


@dataclass
class LoopTask:
    """What differs between model families; everything else is in `run_training_loop`."""

    build_model: Callable[[], object]  # -> keras.Model, called inside strategy.scope()
    # (worker_index, num_workers, start_step) -> iterator of (x, y) numpy batches for this worker
    batches: Callable[[int, int, int], Iterator[tuple[np.ndarray, np.ndarray]]]
    per_example_loss: Callable  # (y, model_output) -> loss per example, shape [batch]
    evaluate: Callable[[object], dict]  # model -> validation metrics (floats)
    global_batch_size: int  # examples per step summed over workers
    items_per_example: int  # characters (or sequences) one example stands for, for throughput
    examples_per_epoch: int  # training examples in one pass over the data (for `epoch`)
    run: RunConfig  # learning rate, steps, checkpoint/log cadence, time budget
    log: Callable[[str], None]  # writes a training log line (the family decides where)
    score_name: str  # metric by which checkpoints are ranked, e.g. "val_loss"
    deadline: float | None = None  # time.time() after which the run stops with an error


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


def run_training_loop(task: LoopTask) -> None:
    """Train until `task.run.max_steps`, reporting metrics and checkpoints to Ray Train."""
    import keras
    import ray.train
    import tensorflow as tf

    if task.run.mixed_precision:
        # float16 math with float32 weights; the logits layers stay float32 for a stable loss.
        keras.mixed_precision.set_global_policy("mixed_float16")
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    # One worker needs no collectives: the default strategy skips MWMS's per-step overhead.
    strategy = (tf.distribute.MultiWorkerMirroredStrategy() if world > 1
                else tf.distribute.get_strategy())
    with strategy.scope():
        model = task.build_model()
        optimizer = keras.optimizers.Adam(task.run.learning_rate, global_clipnorm=task.run.grad_clip)
        optimizer.build(model.trainable_variables)

    step, best = 0, None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as directory:
            state = _restore_checkpoint(directory, model, optimizer)
        step, best = state["step"], state.get("best")
        if rank == 0:
            task.log(f"resumed from checkpoint at step {step}")

    @tf.function
    def train_step(x, y):
        def replica_step(x, y):
            with tf.GradientTape() as tape:
                output = model(x, training=True)
                loss = tf.nn.compute_average_loss(
                    task.per_example_loss(y, output), global_batch_size=task.global_batch_size)
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
            return loss

        per_replica = strategy.run(replica_step, args=(x, y))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    @tf.function
    def mean_over_workers(values):
        per_replica = strategy.run(lambda v: v, args=(values,))
        return strategy.reduce(tf.distribute.ReduceOp.MEAN, per_replica, axis=None)

    decays = task.run.lr_decay < 1.0
    # Kept in Python for the log: under MWMS the optimizer's variable is a MirroredVariable,
    # which cannot be read back as a float.
    learning_rate = task.run.learning_rate

    def follow_schedule(progress: float) -> None:
        nonlocal learning_rate
        if decays:
            learning_rate = task.run.learning_rate * cosine_factor(progress, task.run.lr_decay)
            optimizer.learning_rate = learning_rate

    follow_schedule(step / task.run.max_steps)  # a resumed run continues its schedule

    batches = task.batches(rank, world, step)
    budget_s = task.run.max_minutes * 60
    started = time.perf_counter()
    window_start, window_steps, window_loss = started, 0, 0.0
    last_step, pending = task.run.max_steps, []
    while step < last_step:
        if task.deadline is not None and time.time() > task.deadline:
            raise TrainingTimeout(f"training exceeded its wall-clock limit at step {step}")
        x, y = next(batches)
        # Keep the loss as a tensor: reading it every step would stall the pipeline.
        pending.append(train_step(tf.constant(x), tf.constant(y)))
        step += 1
        window_steps += 1
        boundary = step % task.run.log_every_n == 0 or step % task.run.save_every_n == 0
        if boundary or step == last_step:
            losses = [float(loss) for loss in pending]
            pending.clear()
            if not np.all(np.isfinite(losses)):
                raise FloatingPointError(f"training loss became non-finite before step {step}")
            window_loss += sum(losses)
        if step % task.run.log_every_n == 0:
            spent = 0.0  # share of the time budget used, agreed by all workers
            if budget_s:
                # Workers must stop at the same step (or the others hang in the all-reduce)
                # and use the same learning rate (or their weights drift apart), so they agree
                # on the time budget through a collective: all stop as soon as any one is over
                # it, and the schedule follows the mean share of it spent.
                mine = (time.perf_counter() - started) / budget_s
                over, spent = mean_over_workers(tf.constant([float(mine > 1.0), mine])).numpy()
                if over > 0:
                    last_step = step
            follow_schedule(max(step / task.run.max_steps, float(spent)))
        if step % task.run.log_every_n == 0 and rank == 0:
            elapsed = time.perf_counter() - window_start
            rate = window_steps * task.global_batch_size * task.items_per_example / elapsed
            task.log(f"step {step}/{task.run.max_steps} loss {window_loss / window_steps:.4f} "
                     f"{rate:,.0f} items/s" + (f" lr {learning_rate:.2e}"
                                               if decays else ""))
        if step % task.run.save_every_n == 0 or step == last_step:
            elapsed = time.perf_counter() - window_start
            metrics = {
                "step": step,
                "epoch": step * task.global_batch_size / max(task.examples_per_epoch, 1),
                "elapsed_s": time.perf_counter() - started,
                "train_loss": window_loss / max(window_steps, 1),
                "items_per_s": window_steps * task.global_batch_size * task.items_per_example
                / max(elapsed, 1e-9),
                **task.evaluate(model),
            }
            score = metrics[task.score_name]
            best = score if best is None else best
            best = min(best, score) if task.score_name.endswith("loss") else max(best, score)
            state = {"step": step, "best": best, "metrics": metrics}
            with tempfile.TemporaryDirectory() as directory:
                # Every worker writes (saving may need all of them), only rank 0's is kept.
                _save_checkpoint(directory, model, optimizer, state)
                ray.train.report(metrics, checkpoint=(ray.train.Checkpoint.from_directory(directory)
                                                      if rank == 0 else None))
            if rank == 0:
                task.log(_format_metrics(metrics))
            window_start, window_steps, window_loss = time.perf_counter(), 0, 0.0


def _format_metrics(metrics: dict) -> str:
    parts = [f"{key} {value:.4f}" if isinstance(value, float) else f"{key} {value}"
             for key, value in metrics.items()]
    return "checkpoint: " + " ".join(parts)

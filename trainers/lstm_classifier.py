"""The LSTM classifier family: train a sequence classifier on Ray Train.

    python -m trainers.lstm_classifier --name digits \
        --input_file ../shared/data/mnist/t10k-images-idx3-ubyte.gz \
        --labels_file ../shared/data/mnist/t10k-labels-idx1-ubyte.gz --max_steps 1500

Data: an `.npz` with `x` ([N, T, F] or [N, H, W]) and `y` ([N] int labels), or MNIST IDX
images with `--labels_file`. `--timesteps`/`--features` default to the data's shape. Each
version holds the Keras weights and `saved_model/`, whose `serving_default` signature maps
`x_input` to `y_output` (probabilities) for TF Serving.
"""

from __future__ import annotations

import dataclasses
import os
import sys

import numpy as np

from models.artifacts import HELDOUT_EXAMPLES, SAVED_MODEL_DIR, WEIGHTS_FILE
from models.config import ClassifierTrainConfig
from trainers.classifier_data import prepare, read_idx, read_npz, split
from trainers.loop import WorkerPayload
from trainers.training_job import (
    NotComparable,
    Trained,
    TrainingJob,
    TrainingParams,
    UserError,
)

KIND = "lstm-classifier"


def classifier_worker(payload: WorkerPayload) -> None:
    """Ray Train worker: the shared loop with the classifier's model, batches and metrics."""
    import keras
    import tensorflow as tf

    from models.classifier import build_classifier
    from trainers.classifier_data import evaluate, train_batches
    from trainers.loop import LoopTask, run_training_loop

    run: ClassifierTrainConfig = payload.run
    (x_train, y_train), (x_val, y_val) = payload.data
    keras.utils.set_random_seed(run.seed)

    def per_example_loss(y, logits):
        losses = keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
        return tf.reshape(losses, [-1])

    run_training_loop(LoopTask(
        payload=payload,
        build_model=lambda: build_classifier(payload.model),
        batches=lambda worker, start: train_batches(
            x_train, y_train, run.batch_size, run.seed, worker, start),
        per_example_loss=per_example_loss,
        evaluate=(lambda model: evaluate(model, x_val, y_val)) if len(x_val) else
        (lambda model: {}),
        global_batch_size=run.batch_size * run.num_workers,
        items_per_example=1,
        examples_per_epoch=len(x_train),
    ))


def fit_to_data(x: np.ndarray, y: np.ndarray, params: TrainingParams):
    """(float32 examples, int32 labels, params) from the data as read, checked, with what the
    params leave to the data (0) filled in: [timesteps, features] from the shape, and the
    input scale from the type: 1/255 for uint8 (pixels), 1 for anything else. UserError when
    given ones disagree with the data."""
    model = params.model
    scale = model.input_scale or (1 / 255 if x.dtype == np.uint8 else 1.0)
    x, y = prepare(x, y, model.classes)
    steps, features = x.shape[1:]
    if (model.timesteps or steps, model.features or features) != (steps, features):
        raise UserError(f"examples are [{steps}, {features}], but timesteps/features are "
                        f"[{model.timesteps}, {model.features}]")
    return x, y, dataclasses.replace(params, model=dataclasses.replace(
        model, timesteps=int(steps), features=int(features), input_scale=scale))


def check_upload(data: bytes, params: TrainingParams, *,
                 max_unpacked_bytes: int | None = None) -> TrainingParams:
    return fit_to_data(*read_npz(data, max_unpacked_bytes), params)[2]


def load_examples(job: TrainingJob) -> tuple[np.ndarray, np.ndarray]:
    """The job's examples as read: an .npz, or IDX images with an IDX labels file."""
    data = job.read_input()
    if job.inputs.get("labels_file"):
        return read_idx(data), read_idx(job.read_input("labels_file"))
    return read_npz(data)


def train(job: TrainingJob) -> Trained:
    """The family's training function: examples -> Ray Train -> weights and SavedModel."""
    from models.classifier import build_classifier, export_saved_model
    from trainers.ray_run import fit

    x, y, params = fit_to_data(*load_examples(job), job.params)
    run: ClassifierTrainConfig = params.run
    (x_train, y_train), (x_val, y_val) = split(x, y, run.val_frac, run.seed)
    job.log(f"{len(x):,} examples: {len(x_train):,} for training, {len(x_val):,} for validation")
    metrics = fit(classifier_worker, job, params, ((x_train, y_train), (x_val, y_val)),
                  job.score.ranking(has_validation=len(x_val) > 0))
    model = build_classifier(params.model)
    model.load_weights(os.path.join(job.output_dir, WEIGHTS_FILE))
    export_saved_model(model, params.model, os.path.join(job.output_dir, SAVED_MODEL_DIR))
    if len(x_val):
        np.savez(os.path.join(job.output_dir, HELDOUT_EXAMPLES), x=x_val, y=y_val)
    return Trained(params, {**metrics, "params": model.count_params()})


def heldout_scores(candidate_dir: str, incumbent_dir: str) -> tuple[float, float]:
    """Accuracy of two versions on the incumbent's held-out examples."""
    from models.artifacts import load_classifier
    from trainers.classifier_data import evaluate

    candidate, candidate_config = load_classifier(candidate_dir)
    incumbent, incumbent_config = load_classifier(incumbent_dir)
    shape = ("timesteps", "features", "classes")
    if [getattr(candidate_config, k) for k in shape] != [getattr(incumbent_config, k) for k in shape]:
        raise NotComparable("its inputs or classes differ from production's")
    path = os.path.join(incumbent_dir, HELDOUT_EXAMPLES)
    if not os.path.exists(path):
        raise NotComparable("production kept no held-out examples to compare on")
    with np.load(path) as heldout:
        x, y = heldout["x"], heldout["y"]
    return evaluate(candidate, x, y)["val_accuracy"], evaluate(incumbent, x, y)["val_accuracy"]


if __name__ == "__main__":
    from trainers.cli import main

    sys.exit(main(KIND))

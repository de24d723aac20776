"""Train an LSTM sequence classifier on Ray Train and register it as a model version.

    python -m trainers.lstm_classifier --name digits \
        --input_file ../shared/data/mnist/t10k-images-idx3-ubyte.gz \
        --labels_file ../shared/data/mnist/t10k-labels-idx1-ubyte.gz --max_steps 1500

Data: an `.npz` with `x` ([N, T, F] or [N, H, W]) and `y` ([N] int labels), or MNIST IDX
images with `--labels_file`. Each version holds the Keras weights and `saved_model/`, whose
`serving_default` signature maps `x_input` to `y_output` (probabilities) for TF Serving.
The promotion gate moves `production` only to a version with higher validation accuracy.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

from models.artifacts import CONFIG_FILE, METRICS_FILE, WEIGHTS_FILE, write_json
from models.config import ClassifierConfig, ClassifierTrainConfig
from registry import Registry, Settings, VersionRecord
from trainers.classifier_data import prepare, read_idx, read_npz, split
from trainers.entrypoint import family_main
from trainers.job import RegistryLog, UserError, read_input

KIND = "lstm-classifier"
SCORE = "val_accuracy"  # higher is better
SAVED_MODEL_DIR = "saved_model"


def classifier_worker(config: dict) -> None:
    """Ray Train worker: the shared loop with the classifier's model, batches and metrics."""
    import keras
    import tensorflow as tf

    from models.classifier import build_classifier
    from trainers.classifier_data import evaluate, train_batches
    from trainers.loop import LoopTask, run_training_loop

    model_config: ClassifierConfig = config["model"]
    run: ClassifierTrainConfig = config["run"]
    x_train, y_train, x_val, y_val = config["data"]
    keras.utils.set_random_seed(run.seed)

    def per_example_loss(y, logits):
        return keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)

    def measure(model):
        if len(x_val):
            return evaluate(model, x_val, y_val)
        return {}

    run_training_loop(LoopTask(
        build_model=lambda: build_classifier(model_config),
        batches=lambda worker, workers, start: train_batches(
            x_train, y_train, run.batch_size, run.seed, worker, start),
        per_example_loss=lambda y, logits: tf.reshape(per_example_loss(y, logits), [-1]),
        evaluate=measure,
        global_batch_size=run.batch_size * run.num_workers,
        items_per_example=1,
        examples_per_epoch=len(x_train),
        run=run,
        log=config["log"],
        score_name=SCORE if len(x_val) else "train_loss",
        deadline=config.get("deadline"),
    ))


def load_examples(registry: Registry, input_file: str, labels_file: str | None, classes: int):
    data = read_input(registry, input_file)
    if labels_file:
        x, y = read_idx(data), read_idx(read_input(registry, labels_file))
    else:
        x, y = read_npz(data)
    return prepare(x, y, classes)


def train_classifier(args: argparse.Namespace, model_config: ClassifierConfig,
                     run: ClassifierTrainConfig, settings: Settings):
    from models.classifier import build_classifier, export_saved_model
    from trainers.ray_run import fit, run_name

    def train_fn(record: VersionRecord, output_dir: str, log: RegistryLog) -> dict:
        registry = Registry(settings)
        x, y = load_examples(registry, args.input_file, args.labels_file, model_config.classes)
        if x.shape[1:] != (model_config.timesteps, model_config.features):
            raise UserError(f"examples are {list(x.shape[1:])}, the model expects "
                            f"[{model_config.timesteps}, {model_config.features}] (set "
                            "--timesteps/--features)")
        (x_train, y_train), (x_val, y_val) = split(x, y, run.val_frac, run.seed)
        log(f"{len(x):,} examples: {len(x_train):,} for training, {len(x_val):,} for validation")
        worker_config = {
            "model": model_config, "run": run, "data": (x_train, y_train, x_val, y_val),
            "log": log, "deadline": time.time() + run.timeout_s if run.timeout_s else None,
        }
        metrics = fit(classifier_worker, worker_config, settings=settings,
                      run_name=run_name(record), num_workers=run.num_workers,
                      use_gpu=run.use_gpu, max_failures=run.max_failures,
                      score_name=SCORE if len(x_val) else "train_loss", higher_is_better=True,
                      cpus_per_worker=run.cpus_per_worker, output_dir=output_dir)
        model = build_classifier(model_config)
        model.load_weights(os.path.join(output_dir, WEIGHTS_FILE))
        export_saved_model(model, model_config, os.path.join(output_dir, SAVED_MODEL_DIR))
        write_json(output_dir, CONFIG_FILE, {"kind": KIND, "model": dataclasses.asdict(model_config),
                                             "train": dataclasses.asdict(run)})
        metrics = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
        metrics["params"] = model.count_params()
        write_json(output_dir, METRICS_FILE, metrics)
        return metrics

    return train_fn


def main(argv: list[str] | None = None) -> int:
    def extra_flags(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--labels_file", default=None,
                            help="IDX labels when --input_file holds IDX images")

    return family_main(argv, kind=KIND, doc=__doc__, model_cls=ClassifierConfig,
                       run_cls=ClassifierTrainConfig, make_train=train_classifier, score=SCORE,
                       higher_is_better=True, extra_flags=extra_flags)


if __name__ == "__main__":
    sys.exit(main())

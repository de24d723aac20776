"""Train a character-level language model on Ray Train and register it as a model version.

    python -m trainers.charrnn --input_file ../shared/data/tinyshakespeare.txt --name shakespeare \
        --num_steps 50 --num_seqs 32 --learning_rate 0.01 --max_steps 2000

The same command is the `ray job submit -- python -m trainers.charrnn ...` entrypoint and what
the HTTP upload endpoint submits. `--input_file` is a local path or a path inside the storage
(`uploads/...`, where the server keeps uploads). `--init_from NAME[:VERSION]` continues
training an existing model on new text; its vocabulary and architecture are kept.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile

import numpy as np

from models.artifacts import (
    CONFIG_FILE,
    METRICS_FILE,
    VOCAB_FILE,
    WEIGHTS_FILE,
    load_charrnn,
    write_json,
)
from models.config import CharRNNConfig, TrainConfig
from models.vocab import Vocab
from registry import NotFound, Registry, Settings, VersionRecord, parse_model_ref
from trainers.charrnn_data import split_corpus
from trainers.entrypoint import family_main
from trainers.job import RegistryLog, UserError, read_input

KIND = "charrnn"
SCORE = "val_loss"  # lower is better


def charrnn_worker(config: dict) -> None:
    """Ray Train worker: build the task for the shared loop and run it."""
    import keras
    import tensorflow as tf

    from models.charrnn import build_charrnn
    from trainers.charrnn_data import train_batches, validation_loss
    from trainers.loop import LoopTask, run_training_loop

    model_config: CharRNNConfig = config["model"]
    train: TrainConfig = config["train"]
    train_ids, val_ids = config["train_ids"], config["val_ids"]
    keras.utils.set_random_seed(train.seed)

    def build_model():
        model = build_charrnn(model_config)
        if config.get("init_weights"):
            with tempfile.TemporaryDirectory() as directory:
                path = os.path.join(directory, WEIGHTS_FILE)
                with open(path, "wb") as f:
                    f.write(config["init_weights"])
                model.load_weights(path)
        return model

    def per_example_loss(y, logits):
        losses = keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
        return tf.reduce_mean(losses, axis=-1)

    def batches(worker, workers, start_step):
        return train_batches(train_ids, train.num_seqs, train.num_steps, train.seed, worker,
                             start_step)

    run_training_loop(LoopTask(
        build_model=build_model,
        batches=batches,
        per_example_loss=per_example_loss,
        evaluate=(lambda model: validation_loss(model, val_ids)) if len(val_ids) else
        (lambda model: {}),
        global_batch_size=train.num_seqs * config["num_workers"],
        items_per_example=train.num_steps,
        examples_per_epoch=len(train_ids) // train.num_steps,
        run=train,
        log=config["log"],
        score_name=SCORE if len(val_ids) else "train_loss",
        deadline=config.get("deadline"),
    ))


def read_text(registry: Registry, input_file: str) -> str:
    """The corpus from a local path or a path inside the storage; UTF-8 only."""
    data = read_input(registry, input_file)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise UserError(f"input file is not UTF-8 text (byte {error.start})") from None


def load_parent(registry: Registry, init_from: str, text: str):
    """(model config, vocab, weights bytes) of the version to continue from."""
    try:
        name, version = parse_model_ref(init_from)
        record, directory = registry.fetch_version(name, version)
    except (NotFound, ValueError) as error:
        raise UserError(f"--init_from {init_from}: {error}") from None
    if record.kind != KIND:
        raise UserError(f"--init_from {init_from} is a {record.kind} model, not {KIND}")
    model, model_config, vocab = load_charrnn(directory)
    new_chars = vocab.unknown_chars(text)
    if new_chars:
        shown = "".join(new_chars[:40])
        raise UserError(f"--init_from {init_from}: the text has {len(new_chars)} character(s) "
                        f"outside the model's vocabulary: {shown!r}")
    with open(os.path.join(directory, WEIGHTS_FILE), "rb") as f:
        return model_config, vocab, f.read()


def train_charrnn(args: argparse.Namespace, model_config: CharRNNConfig, train: TrainConfig,
                  settings: Settings):
    """The family's TrainFunction for `run_job`."""
    import time

    from models.charrnn import count_params
    from trainers.ray_run import fit, run_name

    def train_fn(record: VersionRecord, output_dir: str, log: RegistryLog) -> dict:
        registry = Registry(settings)
        text = read_text(registry, args.input_file)
        init_weights = None
        if train.init_from:
            config, vocab, init_weights = load_parent(registry, train.init_from, text)
            log(f"continuing from {train.init_from}; keeping its architecture and vocabulary")
        else:
            vocab = Vocab.from_text(text, train.max_vocab)
            config = dataclasses.replace(model_config, vocab_size=vocab.size)
        ids = vocab.encode(text)
        try:
            train_ids, val_ids = split_corpus(ids, train.val_frac, train.num_seqs, train.num_steps)
        except ValueError as error:
            raise UserError(str(error)) from None
        log(f"{len(text):,} characters, vocabulary {vocab.size}, "
            f"{len(train_ids):,} for training, {len(val_ids):,} for validation")
        worker_config = {
            "model": config, "train": train, "train_ids": train_ids.astype(np.int32),
            "val_ids": val_ids.astype(np.int32), "init_weights": init_weights, "log": log,
            "num_workers": train.num_workers,
            "deadline": time.time() + train.timeout_s if train.timeout_s else None,
        }
        score = SCORE if len(val_ids) else "train_loss"
        metrics = fit(charrnn_worker, worker_config, settings=settings,
                      run_name=run_name(record), num_workers=train.num_workers,
                      use_gpu=train.use_gpu, max_failures=train.max_failures, score_name=score,
                      cpus_per_worker=train.cpus_per_worker,
                      higher_is_better=False, output_dir=output_dir)
        write_json(output_dir, CONFIG_FILE, {
            "kind": KIND, "model": dataclasses.asdict(config), "train": dataclasses.asdict(train),
            "init_from": train.init_from})
        with open(os.path.join(output_dir, VOCAB_FILE), "w", encoding="utf-8") as f:
            f.write(vocab.to_json())
        metrics = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
        metrics["params"] = count_params(config)
        write_json(output_dir, METRICS_FILE, metrics)
        return metrics

    return train_fn


def main(argv: list[str] | None = None) -> int:
    return family_main(argv, kind=KIND, doc=__doc__, model_cls=CharRNNConfig, run_cls=TrainConfig,
                       make_train=train_charrnn, score=SCORE, higher_is_better=False,
                       skip=("vocab_size",))


if __name__ == "__main__":
    sys.exit(main())

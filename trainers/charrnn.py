"""The char-RNN family: train a character-level language model on Ray Train.

    python -m trainers.charrnn --input_file ../shared/data/tinyshakespeare.txt --name shakespeare \
        --num_steps 50 --num_seqs 32 --learning_rate 0.01 --max_steps 2000

The same command is the `ray job submit -- python -m trainers.charrnn ...` entrypoint and what
the HTTP upload endpoint submits. `--input_file` is a local path or a path inside the storage
(`uploads/...`, where the server keeps uploads). `--init_from NAME[:VERSION]` continues
training an existing model on new text; its vocabulary and architecture are kept.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import tempfile

import numpy as np

from models.artifacts import HELDOUT_TEXT, VOCAB_FILE, WEIGHTS_FILE, load_charrnn
from models.config import TrainConfig
from models.vocab import Vocab
from registry import NotFound, Registry, parse_model_ref
from trainers.charrnn_data import CorpusTooShort, check_corpus_length, split_corpus
from trainers.loop import WorkerPayload
from trainers.training_job import (
    NotComparable,
    Trained,
    TrainingJob,
    TrainingParams,
    UserError,
)

KIND = "charrnn"


def per_example_loss(y, logits):
    """Mean cross-entropy over each example's characters, [batch]. float32 under mixed
    precision too: the logits layer computes in float32 (models/charrnn.py)."""
    import keras
    import tensorflow as tf

    losses = keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
    return tf.reduce_mean(losses, axis=-1)


def charrnn_worker(payload: WorkerPayload) -> None:
    """Ray Train worker: build the task for the shared loop and run it."""
    import keras

    from models.charrnn import build_charrnn
    from trainers.charrnn_data import train_batches, validation_loss
    from trainers.loop import LoopTask, run_training_loop

    run: TrainConfig = payload.run
    train_ids, val_ids = payload.data
    keras.utils.set_random_seed(run.seed)

    def build_model():
        model = build_charrnn(payload.model)
        if payload.init_weights:
            with tempfile.TemporaryDirectory() as directory:
                path = os.path.join(directory, WEIGHTS_FILE)
                with open(path, "wb") as f:
                    f.write(payload.init_weights)
                model.load_weights(path)
        return model

    run_training_loop(LoopTask(
        payload=payload,
        build_model=build_model,
        batches=lambda worker, start_step: train_batches(
            train_ids, run.num_seqs, run.num_steps, run.seed, worker, start_step),
        per_example_loss=per_example_loss,
        evaluate=(lambda model: validation_loss(model, val_ids)) if len(val_ids) else
        (lambda model: {}),
        global_batch_size=run.num_seqs * run.num_workers,
        items_per_example=run.num_steps,
        examples_per_epoch=len(train_ids) // run.num_steps,
    ))


def decode_corpus(data: bytes, run: TrainConfig) -> str:
    """The training text: UTF-8, long enough to fill a batch after the validation split."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise UserError(f"the text is not UTF-8 (invalid byte at {error.start})") from None
    try:
        check_corpus_length(len(text), run.val_frac, run.num_seqs, run.num_steps)
    except CorpusTooShort as error:
        raise UserError(f"text too short: {error}") from None
    return text


def check_upload(data: bytes, params: TrainingParams, *,
                 max_unpacked_bytes: int | None = None) -> TrainingParams:
    """The params with the vocabulary size the text will give (to size the model before any
    job starts). Plain text: nothing is unpacked, the upload cap already bounds it."""
    text = decode_corpus(data, params.run)
    vocab_size = min(len(set(text)), params.run.max_vocab - 1) + 1  # + the unknown symbol
    return dataclasses.replace(params, model=dataclasses.replace(params.model,
                                                                 vocab_size=vocab_size))


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


def heldout_scores(candidate_dir: str, incumbent_dir: str) -> tuple[float, float]:
    """Validation loss of two versions on the incumbent's held-out text."""
    from trainers.charrnn_data import validation_loss

    candidate, _, candidate_vocab = load_charrnn(candidate_dir)
    incumbent, _, incumbent_vocab = load_charrnn(incumbent_dir)
    if candidate_vocab.chars != incumbent_vocab.chars:
        raise NotComparable("it has another vocabulary than production")
    path = os.path.join(incumbent_dir, HELDOUT_TEXT)
    if not os.path.exists(path):
        raise NotComparable("production kept no held-out text to compare on")
    with open(path, encoding="utf-8") as f:
        ids = incumbent_vocab.encode(f.read())
    return (validation_loss(candidate, ids)["val_loss"],
            validation_loss(incumbent, ids)["val_loss"])


def train(job: TrainingJob) -> Trained:
    """The family's training function: corpus -> vocabulary -> Ray Train -> version files."""
    from trainers.ray_run import fit

    run: TrainConfig = job.params.run
    text = decode_corpus(job.read_input(), run)
    init_weights = None
    if run.init_from:
        model, vocab, init_weights = load_parent(Registry(job.settings), run.init_from, text)
        job.log(f"continuing from {run.init_from}; keeping its architecture and vocabulary")
    else:
        vocab = Vocab.from_text(text, run.max_vocab)
        model = dataclasses.replace(job.params.model, vocab_size=vocab.size)
    params = dataclasses.replace(job.params, model=model)
    train_ids, val_ids = split_corpus(vocab.encode(text), run.val_frac, run.num_seqs,
                                      run.num_steps)
    job.log(f"{len(text):,} characters, vocabulary {vocab.size}, "
            f"{len(train_ids):,} for training, {len(val_ids):,} for validation")
    metrics = fit(charrnn_worker, job, params,
                  (train_ids.astype(np.int32), val_ids.astype(np.int32)),
                  job.score.ranking(has_validation=len(val_ids) > 0), init_weights)
    with open(os.path.join(job.output_dir, VOCAB_FILE), "w", encoding="utf-8") as f:
        f.write(vocab.to_json())
    if len(val_ids):  # the held-out tail, as text (one id per character)
        with open(os.path.join(job.output_dir, HELDOUT_TEXT), "w", encoding="utf-8") as f:
            f.write(text[len(text) - len(val_ids):])
    return Trained(params, {**metrics, "params": model.param_count()})


if __name__ == "__main__":
    from trainers.cli import main

    sys.exit(main(KIND))

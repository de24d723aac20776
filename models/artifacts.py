"""Reading and writing a version's artifact directory.

`config.json` (kind, architecture, training params), `model.weights.h5`, `metrics.json` (the
kept checkpoint's), `history.json` (every checkpoint's metrics, in order); char-RNNs also
`vocab.json` and `heldout.txt` (their validation text), classifiers `saved_model/` (servable
by TF Serving as is) and `heldout.npz` (their validation examples). The held-out data is what
a later version of the model is compared on before it may take `production`.
Only weights are stored as HDF5; everything a loader must trust is JSON, so
loading a model never executes code from the artifact.
"""

from __future__ import annotations

import dataclasses
import json
import os

from models.config import CharRNNConfig, ClassifierConfig, from_dict
from models.vocab import Vocab

CONFIG_FILE = "config.json"
VOCAB_FILE = "vocab.json"
WEIGHTS_FILE = "model.weights.h5"
METRICS_FILE = "metrics.json"
HISTORY_FILE = "history.json"
SAVED_MODEL_DIR = "saved_model"
HELDOUT_TEXT = "heldout.txt"
HELDOUT_EXAMPLES = "heldout.npz"


def write_json(directory: str, filename: str, data: dict) -> None:
    with open(os.path.join(directory, filename), "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, sort_keys=True, ensure_ascii=False)


def write_version_files(directory: str, kind: str, model_config, run_config,
                        metrics: dict) -> None:
    """The files every version has beside its weights: what it is, and how well it did."""
    write_json(directory, CONFIG_FILE, {"kind": kind, "model": dataclasses.asdict(model_config),
                                        "train": dataclasses.asdict(run_config)})
    write_json(directory, METRICS_FILE, metrics)


def read_json(directory: str, filename: str) -> dict:
    with open(os.path.join(directory, filename), encoding="utf-8") as f:
        return json.load(f)


def read_vocab(directory: str) -> Vocab:
    with open(os.path.join(directory, VOCAB_FILE), encoding="utf-8") as f:
        return Vocab.from_json(f.read())


def load_charrnn(directory: str):
    """(keras model with weights, CharRNNConfig, Vocab) from a version directory."""
    from models.charrnn import build_charrnn

    config = from_dict(CharRNNConfig, read_json(directory, CONFIG_FILE)["model"])
    model = build_charrnn(config)
    model.load_weights(os.path.join(directory, WEIGHTS_FILE))
    return model, config, read_vocab(directory)


def load_classifier(directory: str):
    """(keras model with weights, ClassifierConfig) from a classifier version directory."""
    from models.classifier import build_classifier

    config = from_dict(ClassifierConfig, read_json(directory, CONFIG_FILE)["model"])
    model = build_classifier(config)
    model.load_weights(os.path.join(directory, WEIGHTS_FILE))
    return model, config

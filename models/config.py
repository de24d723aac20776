"""One config dataclass per concern: the char-RNN network, its training run, and sampling.

Each field carries its help text and allowed range in `metadata`, so the trainer's CLI flags,
the HTTP upload form and the job entrypoint all read the same definition: a parameter is
defined once, here, and validated once, by `parse_config`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, TypeVar

CELL_TYPES = ("lstm", "gru", "rnn")
MAX_STOP_STRINGS, MAX_STOP_CHARS = 4, 64  # per generation request


def param(default: Any, help: str, lo: float | None = None, hi: float | None = None,
          choices: tuple | None = None) -> Any:
    """A dataclass field with a help string and the range a user may ask for."""
    return field(default=default,
                 metadata={"help": help, "lo": lo, "hi": hi, "choices": choices})


@dataclass(frozen=True)
class CharRNNConfig:
    """Architecture of a character-level language model (enough to rebuild it for serving)."""

    vocab_size: int = param(0, "number of symbols, filled in from the vocabulary", 2, 100_000)
    cell: str = param("lstm", "recurrent cell type", choices=CELL_TYPES)
    num_layers: int = param(2, "number of stacked recurrent layers", 1, 8)
    lstm_size: int = param(128, "units per recurrent layer", 4, 4096)
    use_embedding: bool = param(False, "learn an embedding instead of one-hot input")
    embedding_size: int = param(128, "embedding width when use_embedding is set", 2, 4096)
    train_keep_prob: float = param(0.5, "dropout keep probability while training", 0.05, 1.0)

    def param_count(self) -> int:
        """Trainable parameters, counted without building the network (the server bounds
        model size before a job starts; tests hold this against Keras' own count)."""
        inputs = self.embedding_size if self.use_embedding else self.vocab_size
        total = self.vocab_size * self.embedding_size if self.use_embedding else 0
        for _ in range(self.num_layers):
            total += recurrent_params(self.cell, inputs, self.lstm_size)
            inputs = self.lstm_size
        return total + inputs * self.vocab_size + self.vocab_size  # logits


@dataclass(frozen=True)
class RunConfig:
    """How any training run executes: steps, checkpoints, workers, limits (every family)."""

    learning_rate: float = param(0.01, "Adam learning rate", 1e-6, 1.0)
    lr_decay: float = param(1.0, "final learning rate as a fraction of learning_rate, reached "
                            "by cosine decay at the end of the run (max_steps or the "
                            "max_minutes budget, whichever ends first); 1: constant", 0.0, 1.0)
    max_steps: int = param(2000, "training steps to run", 1, 10_000_000)
    grad_clip: float = param(5.0, "clip gradients to this global norm", 0.01, 1000.0)
    val_frac: float = param(0.1, "fraction of the data (its end) held out for validation",
                            0.0, 0.5)
    save_every_n: int = param(500, "checkpoint and validate every N steps", 1, 10_000_000)
    log_every_n: int = param(50, "write a training log line every N steps", 1, 10_000_000)
    seed: int = param(0, "random seed for batching and initialisation", 0, 2**31 - 1)
    num_workers: int = param(1, "Ray Train workers (data-parallel)", 1, 256)
    use_gpu: bool = param(False, "put one GPU on each worker")
    mixed_precision: bool = param(False, "compute in float16, keep float32 weights (for GPUs)")
    cpus_per_worker: int = param(1, "CPU cores each worker reserves (and TensorFlow's thread "
                                 "count)", 1, 256)
    max_failures: int = param(3, "worker failures to survive by resuming from a checkpoint",
                              0, 100)
    timeout_s: float = param(0.0, "wall-clock limit for the run in seconds; past it the run "
                             "fails (0: none)", 0, 7 * 86400)
    start_timeout_s: float = param(600.0, "seconds the run waits for the cluster to start its "
                                   "workers (at the start, and again after a lost worker) "
                                   "before it fails", 1, 86400)
    max_minutes: float = param(0.0, "training time budget: stop early and register the best "
                               "checkpoint after this many minutes (0: none)", 0, 7 * 1440)
    init_from: str = param("", "NAME or NAME:VERSION of a model to continue training from")


@dataclass(frozen=True)
class TrainConfig(RunConfig):
    """A char-RNN training run (the reference char-RNN's flags)."""

    num_seqs: int = param(32, "sequences per batch on each worker", 1, 4096)
    num_steps: int = param(50, "characters per sequence (truncated BPTT length)", 2, 2000)
    max_vocab: int = param(3500, "keep at most this many distinct characters", 2, 100_000)


@dataclass(frozen=True)
class ClassifierConfig:
    """Architecture of an LSTM sequence classifier (e.g. MNIST read row by row)."""

    timesteps: int = param(0, "sequence length (image rows); 0: the data's", 0, 10_000)
    features: int = param(0, "values per step (image columns); 0: the data's", 0, 10_000)
    num_hidden: int = param(128, "LSTM units per layer", 4, 4096)
    num_layers: int = param(1, "stacked LSTM layers", 1, 8)
    classes: int = param(10, "number of labels", 2, 100_000)
    dropout: float = param(0.0, "dropout rate after each LSTM layer while training", 0.0, 0.9)
    input_scale: float = param(0.0, "the model multiplies its inputs by this (part of the model, "
                               "so every route scales alike); 0: 1/255 when the training data "
                               "is uint8 (pixels), else 1", 0.0, 1e6)

    def param_count(self) -> int:
        inputs, total = self.features, 0
        for _ in range(self.num_layers):
            total += recurrent_params("lstm", inputs, self.num_hidden)
            inputs = self.num_hidden
        return total + inputs * self.classes + self.classes


@dataclass(frozen=True)
class ClassifierTrainConfig(RunConfig):
    """An LSTM classifier training run."""

    learning_rate: float = param(0.001, "Adam learning rate", 1e-6, 1.0)
    batch_size: int = param(128, "examples per batch on each worker", 1, 65_536)
    save_every_n: int = param(200, "checkpoint and validate every N steps", 1, 10_000_000)


@dataclass(frozen=True)
class SampleConfig:
    """Per-request sampling parameters, shared by the HTTP API and the offline sampler."""

    prime: str = param("", "text the generated sequence starts from")
    max_length: int = param(200, "characters to generate after the prime", 1, 10_000)
    temperature: float = param(1.0, "softmax temperature; lower is more conservative", 0.01, 10.0)
    top_k: int = param(0, "sample only among the k most likely characters (0: all)", 0, 100_000)
    seed: int | None = param(None, "random seed; the same seed gives the same text", 0, 2**63 - 1)
    top_p: float = param(1.0, "sample only among the most likely characters whose probabilities "
                         "add up to top_p (nucleus sampling; 1: all)", 0.0, 1.0)
    stop: tuple[str, ...] = param((), "end the text before the first of these strings (it is "
                                  "left out)", hi=MAX_STOP_STRINGS)
    logprobs: int | None = param(None, "also answer each generated character's log-probability "
                                 "and the N most likely characters at its position", 0, 20)

    def __post_init__(self):
        # Bounded here, where the engine's per-character check is defined: a stop string is
        # held back while it may still match, so its length bounds how late text is delivered.
        if len(self.stop) > MAX_STOP_STRINGS:
            raise ValueError(f"stop: at most {MAX_STOP_STRINGS} strings")
        if any(not 0 < len(s) <= MAX_STOP_CHARS for s in self.stop):
            raise ValueError(f"stop: each string must have 1 to {MAX_STOP_CHARS} characters")


def recurrent_params(cell: str, inputs: int, units: int) -> int:
    """Weights of one Keras recurrent layer: kernel, recurrent kernel and biases per gate
    (a GRU, with Keras' default reset_after, has two bias vectors)."""
    gates, biases = {"lstm": (4, 1), "gru": (3, 2), "rnn": (1, 1)}[cell]
    return gates * (units * (inputs + units) + biases * units)


C = TypeVar("C")


def _coerce(name: str, value: Any, kind: type) -> Any:
    """Turn a CLI/form string (or a JSON value) into the field's type, or raise ValueError."""
    if kind is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{name}: expected a boolean, got {value!r}")
    if kind is int:
        if isinstance(value, bool):
            raise ValueError(f"{name}: expected an integer, got {value!r}")
        if isinstance(value, float):
            if not value.is_integer():
                raise ValueError(f"{name}: expected an integer, got {value!r}")
            return int(value)
        try:
            return int(str(value).strip())
        except ValueError:
            raise ValueError(f"{name}: expected an integer, got {value!r}") from None
    if kind is float:
        if isinstance(value, bool):
            raise ValueError(f"{name}: expected a number, got {value!r}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{name}: expected a number, got {value!r}") from None
        if number != number or number in (float("inf"), float("-inf")):
            raise ValueError(f"{name}: expected a finite number, got {value!r}")
        return number
    if kind is tuple:  # of strings: one string (a CLI flag, a form field) or a JSON list
        items = (value,) if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)) or not all(isinstance(i, str) for i in items):
            raise ValueError(f"{name}: expected a string or a list of strings, got {value!r}")
        return tuple(items)
    if not isinstance(value, str):
        raise ValueError(f"{name}: expected a string, got {value!r}")
    return value


def _field_type(f: dataclasses.Field) -> type:
    annotation = str(f.type)
    for kind in (bool, int, float, tuple):
        if annotation.startswith(kind.__name__):
            return kind
    return str


def field_types(cls: type) -> dict[str, type]:
    """Field name -> Python type (bool/int/float/str, tuple of str) for a config dataclass."""
    return {f.name: _field_type(f) for f in dataclasses.fields(cls)}


def parse_config(cls: type[C], values: dict[str, Any], *, strict: bool = True) -> C:
    """Build a config from untrusted values, checking types, ranges and choices.

    With `strict`, unknown keys are an error (an HTTP body or form with a typo must not be
    silently ignored). Raises ValueError with a message naming the bad field.
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if strict and unknown:
        raise ValueError(f"unknown parameter(s): {', '.join(unknown)}")
    kwargs = {}
    for name, value in values.items():
        if name not in fields or value is None:
            continue
        f = fields[name]
        value = _coerce(name, value, _field_type(f))
        meta = f.metadata
        if meta.get("choices") and value not in meta["choices"]:
            raise ValueError(f"{name}: must be one of {', '.join(meta['choices'])}, got {value!r}")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if meta.get("lo") is not None and value < meta["lo"]:
                raise ValueError(f"{name}: must be >= {meta['lo']}, got {value}")
            if meta.get("hi") is not None and value > meta["hi"]:
                raise ValueError(f"{name}: must be <= {meta['hi']}, got {value}")
        kwargs[name] = value
    return cls(**kwargs)


def to_json(config: Any) -> str:
    return json.dumps(dataclasses.asdict(config), sort_keys=True)


def from_dict(cls: type[C], values: dict[str, Any]) -> C:
    """Rebuild a stored config, ignoring keys a newer version may have added."""
    return parse_config(cls, values, strict=False)

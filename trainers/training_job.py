"""What a model family's training function is given and gives back.

`run_job` (the registry bookkeeping every job shares) hands a family a `TrainingJob`: the
version being trained, its inputs and its parsed parameters, a directory for the artifacts and
a log. The family reads and checks its data, trains on Ray Train, writes its own files (weights,
vocabulary, SavedModel) and returns `Trained`: the parameters as resolved from the data and
the metrics of the checkpoint it kept.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any

from models.config import RunConfig
from registry import Registry, Settings, VersionRecord


class UserError(ValueError):
    """Bad input from the user (text too short, new characters...): fail with a clear message.

    The same checks run on an upload in the server (a 400) and in the trainer (a failed run)."""


class NotComparable(Exception):
    """Two versions cannot be compared on the same data (other vocabulary, nothing held out)."""


@dataclass(frozen=True)
class Score:
    """The metric that ranks a run's checkpoints and gates promotion."""

    name: str
    higher_is_better: bool
    fallback: Score | None = None  # ranks a run that holds out no validation data

    @property
    def mode(self) -> str:  # Ray Train's spelling of the direction
        return "max" if self.higher_is_better else "min"

    def beats(self, candidate: float, incumbent: float) -> bool:
        return candidate > incumbent if self.higher_is_better else candidate < incumbent

    def ranking(self, has_validation: bool) -> Score:
        return self if has_validation or self.fallback is None else self.fallback


TRAIN_LOSS = Score("train_loss", higher_is_better=False)


@dataclass(frozen=True)
class TrainingParams:
    """A family's parsed hyperparameters: its model (architecture) and run configs."""

    model: Any
    run: RunConfig

    def as_dict(self) -> dict:
        return {**dataclasses.asdict(self.model), **dataclasses.asdict(self.run)}


@dataclass
class RegistryLog:
    """A picklable log sink: prints the line (for `ray job logs`) and appends it to the registry.

    Ray Train workers receive it in their payload, so each opens its own registry connection.
    """

    settings: Settings
    name: str
    version: int

    def __call__(self, line: str) -> None:
        print(line, flush=True)
        registry = self.__dict__.get("_registry")
        if registry is None:
            registry = Registry(self.settings)
            self.__dict__["_registry"] = registry
        registry.append_logs(self.name, self.version, [line])

    def __getstate__(self):
        return {"settings": self.settings, "name": self.name, "version": self.version}


@dataclass(frozen=True)
class TrainingJob:
    settings: Settings
    record: VersionRecord
    inputs: dict[str, str]  # `input_file` and the family's other inputs (e.g. `labels_file`)
    params: TrainingParams
    score: Score  # the family's
    output_dir: str  # where the version's artifact files go
    log: RegistryLog

    def read_input(self, key: str = "input_file") -> bytes:
        """An input from a local path or from a path inside the storage (server uploads)."""
        path = self.inputs[key]
        if os.path.isfile(path):
            with open(path, "rb") as f:
                return f.read()
        try:
            return Registry(self.settings).artifacts.get_bytes(path)
        except (FileNotFoundError, OSError, ValueError) as error:
            raise UserError(f"input file not found: {path}") from error


@dataclass(frozen=True)
class Trained:
    params: TrainingParams  # as resolved from the data (vocabulary size, sequence shape)
    metrics: dict  # of the kept checkpoint, with the model's parameter count as `params`

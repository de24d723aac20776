"""The model families the product trains, each described once.

A `Family` says what the server and the trainers need to know of it: its config classes (whose
fields are the trainer's flags and the upload form's fields), its score, its training function
and job entrypoint, the check an upload must pass (the trainer runs the same one on what it
reads), and the fields the trainer fills in itself. A new family is added here, and the HTTP
API, the command line and the jobs all know it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from models.config import (
    CharRNNConfig,
    ClassifierConfig,
    ClassifierTrainConfig,
    TrainConfig,
    parse_config,
)
from trainers import charrnn, lstm_classifier
from trainers.training_job import TRAIN_LOSS, Score, Trained, TrainingJob, TrainingParams


@dataclass(frozen=True)
class Family:
    kind: str
    model_config: type  # architecture
    run_config: type  # how a run executes
    score: Score
    train: Callable[[TrainingJob], Trained]
    # check_upload(data, params, *, max_unpacked_bytes=None): raises UserError when the data
    # could never train (or would unpack to more than max_unpacked_bytes); returns the params
    # resolved from it.
    check_upload: Callable[..., TrainingParams]
    # heldout_scores(candidate_dir, incumbent_dir): both versions' score on the incumbent's
    # held-out data; NotComparable when they cannot be compared. The promotion gate's measure.
    heldout_scores: Callable[[str, str], tuple[float, float]]
    server_managed: tuple[str, ...] = ()  # fields the trainer fills in, not the user
    extra_inputs: tuple[tuple[str, str], ...] = ()  # (flag, help) of inputs beside input_file

    @property
    def module(self) -> str:
        """`python -m <module>` trains it: the job's entrypoint."""
        return self.train.__module__

    def _fields(self, cls: type) -> list[str]:
        return [f.name for f in dataclasses.fields(cls) if f.name not in self.server_managed]

    def flag_names(self) -> list[str]:
        return self._fields(self.model_config) + self._fields(self.run_config)

    def parse_params(self, values: dict) -> TrainingParams:
        """User hyperparameters (form fields or flags; unset ones take defaults) as configs.

        Raises ValueError naming the first bad or unknown field.
        """
        unknown = sorted(set(values) - set(self.flag_names()))
        if unknown:
            raise ValueError(f"unknown parameter(s) for {self.kind}: {', '.join(unknown)}")

        def parse(cls: type):
            return parse_config(cls, {k: v for k, v in values.items() if k in self._fields(cls)})

        return TrainingParams(parse(self.model_config), parse(self.run_config))

    def flags(self, params: TrainingParams) -> list[str]:
        """The params as the trainer's command-line flags."""
        argv = []
        for name, value in params.as_dict().items():
            if name not in self.server_managed:
                argv += [f"--{name}", str(value).lower() if isinstance(value, bool) else str(value)]
        return argv


FAMILIES = {family.kind: family for family in (
    Family(charrnn.KIND, CharRNNConfig, TrainConfig,
           score=Score("val_loss", higher_is_better=False, fallback=TRAIN_LOSS),
           train=charrnn.train, check_upload=charrnn.check_upload,
           heldout_scores=charrnn.heldout_scores,
           server_managed=("vocab_size",)),
    Family(lstm_classifier.KIND, ClassifierConfig, ClassifierTrainConfig,
           score=Score("val_accuracy", higher_is_better=True, fallback=TRAIN_LOSS),
           train=lstm_classifier.train, check_upload=lstm_classifier.check_upload,
           heldout_scores=lstm_classifier.heldout_scores,
           extra_inputs=(("labels_file", "IDX labels when --input_file holds IDX images"),)),
)}

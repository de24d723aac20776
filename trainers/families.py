"""The model families the product trains: their job entrypoint and hyperparameter configs.

The server reads this to validate upload forms and to build the `ray job submit` entrypoint,
so a new family is added here once and both the HTTP API and the jobs know it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from models.config import (
    CharRNNConfig,
    ClassifierConfig,
    ClassifierTrainConfig,
    TrainConfig,
    parse_config,
)


@dataclass(frozen=True)
class Family:
    kind: str
    module: str  # `python -m <module>` trains it
    configs: tuple[type, ...]  # dataclasses whose fields are the trainer's flags
    server_managed: tuple[str, ...] = ()  # fields the server/trainer fills in, not the user

    def flag_names(self) -> list[str]:
        return [f.name for cls in self.configs for f in dataclasses.fields(cls)
                if f.name not in self.server_managed]

    def parse_params(self, values: dict) -> dict:
        """Validate user hyperparameters against the family's configs; returns only given ones.

        Raises ValueError naming the first bad or unknown field.
        """
        allowed = set(self.flag_names())
        unknown = sorted(set(values) - allowed)
        if unknown:
            raise ValueError(f"unknown parameter(s) for {self.kind}: {', '.join(unknown)}")
        parsed = {}
        for cls in self.configs:
            names = {f.name for f in dataclasses.fields(cls)}
            mine = {k: v for k, v in values.items() if k in names}
            config = parse_config(cls, mine)
            parsed.update({k: getattr(config, k) for k in mine})
        return parsed


FAMILIES = {family.kind: family for family in (
    Family("charrnn", "trainers.charrnn", (CharRNNConfig, TrainConfig),
           server_managed=("vocab_size",)),
    Family("lstm-classifier", "trainers.lstm_classifier",
           (ClassifierConfig, ClassifierTrainConfig)),
)}

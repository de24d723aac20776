"""Input limits of the HTTP API, configurable from serve_config.yaml (`limits:` app arg)."""

from __future__ import annotations

from dataclasses import dataclass, fields

from deployments.errors import ApiError
from models.config import SampleConfig, TrainConfig, parse_config
from trainers.charrnn_data import CorpusTooShort, check_corpus_length
from trainers.families import Family


@dataclass(frozen=True)
class Limits:
    max_upload_bytes: int = 10 * 1024 * 1024
    max_prime_chars: int = 2000
    max_length: int = 5000  # generated characters per request

    @classmethod
    def from_dict(cls, values: dict) -> Limits:
        names = {f.name for f in fields(cls)}
        unknown = set(values) - names
        if unknown:
            raise ValueError(f"unknown limits: {', '.join(sorted(unknown))}")
        return cls(**{k: int(v) for k, v in values.items()})

    def check_sample(self, sample: SampleConfig) -> None:
        if len(sample.prime) > self.max_prime_chars:
            raise ApiError(400, f"prime is longer than {self.max_prime_chars} characters")
        if sample.max_length > self.max_length:
            raise ApiError(400, f"max_length must be <= {self.max_length}")

    def check_upload(self, family: Family, data: bytes, params: dict) -> None:
        """Reject an upload that could never train, before anything is stored."""
        if not data:
            raise ApiError(400, "the uploaded file is empty")
        if family.kind != "charrnn":
            return
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as error:
            raise ApiError(400, f"the upload is not UTF-8 text (invalid byte at {error.start})") \
                from None
        train_names = {f.name for f in fields(TrainConfig)}
        train = parse_config(TrainConfig, {k: v for k, v in params.items() if k in train_names})
        try:
            check_corpus_length(len(text), train.val_frac, train.num_seqs, train.num_steps)
        except CorpusTooShort as error:
            raise ApiError(400, f"text too short: {error}") from None

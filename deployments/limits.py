"""Input limits of the HTTP API, configurable from serve_config.yaml (`limits:` app arg)."""

from __future__ import annotations

from dataclasses import dataclass, fields

from deployments.errors import ApiError
from models.config import ClassifierConfig, SampleConfig, TrainConfig, parse_config
from trainers.charrnn_data import CorpusTooShort, check_corpus_length
from trainers.classifier_data import prepare, read_npz
from trainers.families import Family


@dataclass(frozen=True)
class Limits:
    max_upload_bytes: int = 10 * 1024 * 1024
    max_prime_chars: int = 2000
    max_length: int = 5000  # generated characters per request
    max_predict_rows: int = 256  # examples per predict request
    generation_timeout_s: float = 120.0  # a generation still running then is cut short
    inference_per_s: float = 50.0  # generate/predict requests per client per second...
    inference_burst: float = 200.0  # ...with bursts up to this many
    uploads_per_minute: float = 10.0  # uploads per client per minute...
    upload_burst: float = 5.0  # ...with bursts up to this many

    def rate_limiters(self) -> dict:
        """Token buckets for the two route classes (a rate of 0 switches one off)."""
        from deployments.guards import RateLimiter

        limiters = {}
        if self.inference_per_s > 0:
            limiters["inference"] = RateLimiter(self.inference_per_s, self.inference_burst)
        if self.uploads_per_minute > 0:
            limiters["upload"] = RateLimiter(self.uploads_per_minute / 60, self.upload_burst)
        return limiters

    @classmethod
    def from_dict(cls, values: dict) -> Limits:
        names = {f.name for f in fields(cls)}
        unknown = set(values) - names
        if unknown:
            raise ValueError(f"unknown limits: {', '.join(sorted(unknown))}")
        types = {f.name: f.type for f in fields(cls)}
        return cls(**{k: (float(v) if types[k] in ("float", float) else int(v))
                      for k, v in values.items()})

    def check_sample(self, sample: SampleConfig) -> None:
        if len(sample.prime) > self.max_prime_chars:
            raise ApiError(400, f"prime is longer than {self.max_prime_chars} characters")
        if sample.max_length > self.max_length:
            raise ApiError(400, f"max_length must be <= {self.max_length}")

    def check_upload(self, family: Family, data: bytes, params: dict) -> None:
        """Reject an upload that could never train, before anything is stored."""
        if not data:
            raise ApiError(400, "the uploaded file is empty")
        if family.kind == "charrnn":
            _check_text(data, params)
        else:
            _check_examples(data, params)


def _check_text(data: bytes, params: dict) -> None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ApiError(400, f"the upload is not UTF-8 text (invalid byte at {error.start})") from None
    train = parse_config(TrainConfig, {k: v for k, v in params.items() if k in _names(TrainConfig)})
    try:
        check_corpus_length(len(text), train.val_frac, train.num_seqs, train.num_steps)
    except CorpusTooShort as error:
        raise ApiError(400, f"text too short: {error}") from None


def _check_examples(data: bytes, params: dict) -> None:
    model = parse_config(ClassifierConfig,
                         {k: v for k, v in params.items() if k in _names(ClassifierConfig)})
    try:
        x, _ = prepare(*read_npz(data), model.classes)
    except ValueError as error:
        raise ApiError(400, f"bad training data: {error}") from None
    if x.shape[1:] != (model.timesteps, model.features):
        raise ApiError(400, f"examples are {list(x.shape[1:])}, but timesteps/features are "
                            f"[{model.timesteps}, {model.features}]")


def _names(cls: type) -> set[str]:
    return {f.name for f in fields(cls)}

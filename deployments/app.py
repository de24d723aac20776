"""The Serve application: `build_app(args)` is what serve_config.yaml imports.

    serve run serve_config.yaml                      # from the repo root
    serve run deployments.app:build_app storage=/mnt/shared

Deployment options (replicas, autoscaling, resources) live in serve_config.yaml; `args`
carries what the code needs: storage/db settings, limits and engine sizes. Serve validates
them against `AppArgs` before calling the builder, so a typo fails the deploy.
"""

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from deployments.classifier import Classifier
from deployments.generator import Generator
from deployments.ingress import Ingress
from deployments.limits import Limits
from models.config import parse_config
from models.runner_choice import RunnerSetting
from sampling.engine import DEFAULT_PREFILL_CHARS


class AppArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    storage: str | None = Field(None, description="storage root (default: RNNSERVE_STORAGE)")
    db_url: str | None = Field(None, description="registry database (default: RNNSERVE_DB_URL)")
    s3_endpoint: str | None = None
    dashboard_address: str | None = Field(None, description="job submission address "
                                          "(default: this replica's own cluster)")
    max_models_per_replica: int = Field(4, ge=1, description="models each Generator/Classifier "
                                        "replica keeps loaded (LRU)")
    max_batch: int = Field(64, ge=1, description="sequences sampled together per step")
    max_waiting: int = Field(512, ge=0, description="queued requests per model before 503")
    runner: RunnerSetting = Field("auto", description="Generator step runner: tensorflow where "
                                  "the replica sees a GPU, numpy otherwise (auto), or as set")
    # 50 ms: 20 updates a second still read as a smooth stream, and on a 2-core machine it
    # carried ~40% more requests/s than 20 ms at 32 users (bench-e2e): each chunk costs a hop
    # to the ingress and one to the proxy whatever its size.
    stream_interval_s: float = Field(0.05, ge=0, le=1, description="a stream's chunks after "
                                     "the first go out at most this often")
    # Per replica: past stream_chunks_per_s * stream_interval_s open streams, each stream's
    # interval grows (deployments/stream_pacing.py), so chunks cost the path a bounded CPU.
    stream_chunks_per_s: float = Field(100, ge=0, description="chunks a second a Generator "
                                       "replica's streams send together at most (0: no bound)")
    prefill_chars: int = Field(DEFAULT_PREFILL_CHARS, ge=0, le=4096, description="prime "
                               "characters fed per engine step beside the generating sequences "
                               "(0: one per shared step)")
    classifier_max_batch: int = Field(64, ge=1, description="examples per classifier batch")
    classifier_batch_wait_s: float = Field(0.005, ge=0, description="wait to fill a batch")
    job_server_grace_s: float = Field(600, ge=0, description="how long the job server may be "
                                      "unreachable before running versions are marked failed")
    limits: dict[str, Any] = Field(default_factory=dict, description="see deployments/limits.py")


def build_app(args: AppArgs):
    settings = args.model_dump(include={"storage", "db_url", "s3_endpoint"}, exclude_none=True)
    limits = parse_config(Limits, args.limits)  # parsed once, here: a bad limit fails the deploy
    generator = Generator.bind(
        settings=settings, max_models_per_replica=args.max_models_per_replica,
        max_batch=args.max_batch, max_waiting=args.max_waiting,
        generation_timeout_s=limits.generation_timeout_s, runner=args.runner,
        stream_interval_s=args.stream_interval_s, stream_chunks_per_s=args.stream_chunks_per_s,
        prefill_chars=args.prefill_chars)
    classifier = Classifier.bind(
        settings=settings, max_models_per_replica=args.max_models_per_replica,
        max_batch_size=args.classifier_max_batch,
        batch_wait_timeout_s=args.classifier_batch_wait_s)
    return Ingress.bind(generator, classifier, settings=settings, limits=limits,
                        dashboard_address=args.dashboard_address,
                        job_server_grace_s=args.job_server_grace_s)


app = build_app

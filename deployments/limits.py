"""Input limits of the HTTP API, configurable from serve_config.yaml (`limits:` app arg)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from deployments.errors import ApiError
from deployments.rate_limit import RateLimiter
from models.config import SampleConfig, param


@dataclass(frozen=True)
class Limits:
    max_upload_bytes: int = param(10 * 1024 * 1024, "bytes of one uploaded training file", 1)
    max_body_bytes: int = param(2 * 1024 * 1024, "bytes of any other request body (JSON "
                                "routes; a full predict batch of 256 MNIST images fits)",
                                1024, 2**31 - 1)
    min_body_bytes_per_s: float = param(10_000.0, "a request body arriving slower than this "
                                        "(after body_grace_s) is cut with 408 (0: off)", 0)
    body_grace_s: float = param(10.0, "seconds a body may take before its rate is checked", 0)
    max_unpacked_bytes: int = param(128 * 1024 * 1024, "bytes a classifier .npz upload's "
                                    "arrays may unpack to (checked from their headers)", 1)
    max_prime_chars: int = param(2000, "characters of a generation prime", 0)
    max_length: int = param(5000, "characters generated per request", 1)
    max_predict_rows: int = param(256, "examples per predict request", 1)
    generation_timeout_s: float = param(120.0, "a generation still running then is cut short",
                                        0.001)
    inference_per_s: float = param(50.0, "generate/predict requests per client per second "
                                   "(0: no limit)...", 0)
    inference_burst: float = param(200.0, "...with bursts up to this many", 1)
    max_in_flight_per_client: int = param(32, "generate/predict requests one client may have "
                                          "in flight at once, streams until they end "
                                          "(0: no limit)", 0)
    inference_needs_key: bool = param(False, "generate/predict and the protocols' inference "
                                      "routes need the API key too (when RNNSERVE_API_KEY is "
                                      "set; reads stay open)")
    uploads_per_minute: float = param(10.0, "uploads per client per minute (0: no limit)...", 0)
    upload_burst: float = param(5.0, "...with bursts up to this many", 1)

    # Training jobs: each accepted upload starts a driver (~1 GB with TensorFlow) and workers.
    max_training_jobs: int = param(4, "training jobs queued or running at once, in all", 1)
    max_training_jobs_per_client: int = param(2, "...of which one client's", 1)
    max_num_workers: int = param(4, "Ray Train workers one run may ask for", 1)
    max_cpus_per_worker: int = param(4, "CPUs each of those workers may reserve", 1)
    max_model_params: int = param(50_000_000, "trainable parameters of a model to train", 1)
    min_log_every_n: int = param(10, "smallest log_every_n (a log line is a database row)", 1)
    gpus_on_demand: bool = param(False, "the autoscaler can add GPU nodes (cluster.yaml's "
                                 "gpu_trainer): accept use_gpu while no GPU is up")

    allowed_hosts: str = param("localhost,127.0.0.1,::1", "host names (comma-separated) the "
                               "app answers to, against DNS rebinding; * for any (behind a "
                               "proxy that checks Host)")

    def rate_limiters(self) -> dict[str, RateLimiter]:
        """Token buckets for the two route classes (a rate of 0 switches one off)."""
        limiters = {}
        if self.inference_per_s > 0:
            limiters["inference"] = RateLimiter(self.inference_per_s, self.inference_burst)
        if self.uploads_per_minute > 0:
            limiters["upload"] = RateLimiter(self.uploads_per_minute / 60, self.upload_burst)
        return limiters

    def check_sample(self, sample: SampleConfig, names: Mapping[str, str] | None = None) -> None:
        """400 for a sample over the prime or length limit. `names` maps SampleConfig's fields
        to what the client's request calls them (a protocol's own fields), so the error names
        the field the client sent; it is in the error's detail as `field`."""
        if len(sample.prime) > self.max_prime_chars:
            raise _over_limit(names, "prime", f"is longer than {self.max_prime_chars} characters")
        if sample.max_length > self.max_length:
            raise _over_limit(names, "max_length", f"must be <= {self.max_length}")


def _over_limit(names: Mapping[str, str] | None, field: str, problem: str) -> ApiError:
    name = (names or {}).get(field, field)
    return ApiError(400, f"{name} {problem}", {"field": name})

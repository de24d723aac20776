"""The rnnserve_* Prometheus metrics (ray.serve.metrics; exported on Ray's metrics port as
`ray_rnnserve_...`). Defined once here; deployments create the ones they record."""

from __future__ import annotations

from ray.serve import metrics

from registry import STATUSES

LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
OCCUPANCY_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256]


class GeneratorMetrics:
    def __init__(self):
        model = ("model",)
        self.chars = metrics.Counter("rnnserve_chars_generated",
                                     description="characters generated", tag_keys=model)
        # "cancelled" counts clients that went away mid-stream: their slot was freed early.
        self.requests_finished = metrics.Counter(
            "rnnserve_requests_finished", description="generate requests that left the batch, "
            "by reason (length, cancelled, deadline)", tag_keys=("model", "reason"))
        self.time_to_first_char = metrics.Histogram(
            "rnnserve_time_to_first_char_seconds", description="request to first character",
            boundaries=LATENCY_BUCKETS, tag_keys=model)
        self.char_latency = metrics.Histogram(
            "rnnserve_char_latency_seconds", description="mean seconds per generated character "
            "of a request after its first", boundaries=[b / 10 for b in LATENCY_BUCKETS],
            tag_keys=model)
        self.batch_occupancy = metrics.Histogram(
            "rnnserve_batch_occupancy",
            description="sequences in each batched sampling call (a step, or several fused steps)",
            boundaries=OCCUPANCY_BUCKETS, tag_keys=model)
        self.queue_depth = metrics.Gauge("rnnserve_queue_depth",
                                         description="requests waiting for a batch slot",
                                         tag_keys=model)
        self.model_load_seconds = metrics.Histogram(
            "rnnserve_model_load_seconds", description="time to load a model into a replica, "
            "by the step runner it got (compiled, numpy, or tensorflow on a GPU replica)",
            boundaries=[0.1, 0.25, 0.5, 1, 2, 5, 10, 30], tag_keys=("model", "runner"))
        self.cache_hits = metrics.Counter("rnnserve_model_cache_hits",
                                          description="requests for an already loaded model",
                                          tag_keys=model)
        self.cache_misses = metrics.Counter("rnnserve_model_cache_misses",
                                            description="requests that had to load the model",
                                            tag_keys=model)


class JobMetrics:
    def __init__(self):
        self.versions = metrics.Gauge("rnnserve_training_jobs",
                                      description="model versions (training jobs) by status",
                                      tag_keys=("kind", "status"))

    def record(self, counts: dict[tuple[str, str], int]) -> None:
        """Set the gauge from the registry's {(kind, status): count}; a status no version has
        any more is set to 0, not left at its last count."""
        for kind in {kind for kind, _ in counts}:
            for status in STATUSES:
                self.versions.set(counts.get((kind, status), 0),
                                  tags={"kind": kind, "status": status})

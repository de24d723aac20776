"""The rnnserve_* Prometheus metrics (ray.serve.metrics; exported on Ray's metrics port as
`ray_rnnserve_...`). Defined once here; deployments create the ones they record.

The Generator records its metrics per request and per sampling call, on the event loop that
streams the text. A Ray metric's record is a C++ call made without the GIL: the thread that
makes it gives the GIL up and must win it back from the sampling worker and Serve's threads.
In a profile at 40 requests/s, these records were the largest item of rnnserve's own on that
loop. So the Generator's records are queued (an append) and made on a thread of their own
(`QueuedMetrics`). What that saves in CPU could not be told apart on the development host:
two runs of the same code differed as much (BENCHMARKS.md, end to end, stop 23).
"""

from __future__ import annotations

import collections
import logging
import threading
import time

from ray.serve import metrics

from registry import STATUSES

logger = logging.getLogger("ray.serve")

# How often queued records are made: Ray exports a replica's metrics every few seconds anyway.
FLUSH_INTERVAL_S = 1.0

LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
OCCUPANCY_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256]


class QueuedMetrics:
    """Records of several metrics, queued by any thread and made every `interval_s` on a
    thread of this object's own. Counters' increments are summed and gauges' settings reduced
    to the last one per series (metric and tags) before they are made; each histogram
    observation is made as it came."""

    def __init__(self, interval_s: float = FLUSH_INTERVAL_S):
        self._queue: collections.deque = collections.deque()  # appends and pops: thread-safe
        self._interval_s = interval_s
        threading.Thread(target=self._run, name="metrics-writer", daemon=True).start()

    def queued(self, metric) -> _QueuedMetric:
        """`metric` (a Counter, Gauge or Histogram) with its records going through the queue."""
        return _QueuedMetric(metric, self._queue)

    def flush(self) -> None:
        """Make every record queued so far."""
        merged: dict[tuple, list] = {}  # (metric, "inc" or "set", tags' items) -> its record
        observed = []
        while True:
            try:
                metric, kind, value, tags = self._queue.popleft()
            except IndexError:
                break
            if kind == "observe":
                observed.append((metric, kind, value, tags))
                continue
            key = (metric, kind, frozenset(tags.items()) if tags else None)
            if kind == "inc" and key in merged:
                merged[key][2] += value
            else:
                merged[key] = [metric, kind, value, tags]
        for metric, kind, value, tags in [*merged.values(), *observed]:
            getattr(metric, kind)(value, tags=tags)

    def _run(self) -> None:
        while True:
            time.sleep(self._interval_s)
            try:
                self.flush()
            except Exception:  # noqa: BLE001 - a bad record must not end the metrics for good
                logger.exception("recording metrics failed")


class _QueuedMetric:
    """The recording side of a metric, its records queued (the metric's own signatures)."""

    def __init__(self, metric, queue: collections.deque):
        self._metric, self._queue = metric, queue

    def inc(self, value: float = 1.0, tags: dict[str, str] | None = None) -> None:
        self._queue.append((self._metric, "inc", value, tags))

    def set(self, value: float, tags: dict[str, str] | None = None) -> None:
        self._queue.append((self._metric, "set", value, tags))

    def observe(self, value: float, tags: dict[str, str] | None = None) -> None:
        self._queue.append((self._metric, "observe", value, tags))


class GeneratorMetrics:
    """The Generator's metrics; their records are queued (see the module's docstring)."""

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
        # The exact mean occupancy: Ray's export estimates a histogram's _sum from its buckets'
        # midpoints (one sequence a call shows as 0.5), so the mean comes from these counters.
        self.sampling_calls = metrics.Counter(
            "rnnserve_sampling_calls", description="batched sampling calls (a step, or several "
            "fused steps)", tag_keys=model)
        self.batch_sequences = metrics.Counter(
            "rnnserve_batch_sequences", description="sequences in the batched sampling calls, "
            "summed over the calls", tag_keys=model)
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
        writer = QueuedMetrics()
        for name, metric in list(vars(self).items()):
            setattr(self, name, writer.queued(metric))


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

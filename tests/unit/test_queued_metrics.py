"""The Generator's queued metric records (deployments/metrics.py): made on the writer's own
thread, counters summed and gauges reduced to their last setting per series, every histogram
observation kept. The metrics here only note the records they get: what a real Ray metric
does with a record is checked where Ray runs (tests/integration/test_serving.py scrapes the
exported series)."""

import threading
import time

from deployments.metrics import QueuedMetrics


class NotedMetric:
    """Notes each record it gets, with the thread that made it."""

    def __init__(self):
        self.records = []

    def _note(self, kind, value, tags):
        self.records.append((kind, value, tags, threading.current_thread().name))

    def inc(self, value=1.0, tags=None):
        self._note("inc", value, tags)

    def set(self, value, tags=None):
        self._note("set", value, tags)

    def observe(self, value, tags=None):
        self._note("observe", value, tags)


def wait_for_records(metric: NotedMetric) -> list:
    deadline = time.monotonic() + 5
    while not metric.records and time.monotonic() < deadline:
        time.sleep(0.01)
    return metric.records


def test_counters_are_summed_and_gauges_set_once_per_series_and_observations_kept():
    counter, gauge, histogram = NotedMetric(), NotedMetric(), NotedMetric()
    writer = QueuedMetrics(interval_s=3600)  # flushed here, not by its thread
    queued_counter, queued_gauge, queued_histogram = (
        writer.queued(metric) for metric in (counter, gauge, histogram))
    for value in (1, 2, 3):
        queued_counter.inc(value, tags={"model": "a:1"})
        queued_gauge.set(value * 10, tags={"model": "a:1"})
        queued_histogram.observe(value / 10, tags={"model": "a:1"})
    queued_counter.inc(tags={"model": "b:1"})
    assert not counter.records  # queued, not made
    writer.flush()
    assert [record[:3] for record in counter.records] == [("inc", 6, {"model": "a:1"}),
                                                          ("inc", 1.0, {"model": "b:1"})]
    assert [record[:3] for record in gauge.records] == [("set", 30, {"model": "a:1"})]
    assert [value for _, value, _, _ in histogram.records] == [0.1, 0.2, 0.3]
    writer.flush()
    assert len(counter.records) == 2  # each record is made once


def test_records_are_made_on_the_writer_thread():
    counter = NotedMetric()
    QueuedMetrics(interval_s=0.05).queued(counter).inc(tags={"model": "a:1"})
    assert [(kind, thread) for kind, _, _, thread in wait_for_records(counter)] == [
        ("inc", "metrics-writer")]


def test_a_failing_record_does_not_stop_later_ones():
    class Broken(NotedMetric):
        def inc(self, value=1.0, tags=None):
            raise ValueError("unknown tag")

    broken, fine = Broken(), NotedMetric()
    writer = QueuedMetrics(interval_s=0.05)
    writer.queued(broken).inc(tags={"bad": "tag"})
    time.sleep(0.2)  # the failed flush, logged
    writer.queued(fine).inc(tags={"model": "a:1"})
    assert [kind for kind, *_ in wait_for_records(fine)] == ["inc"]

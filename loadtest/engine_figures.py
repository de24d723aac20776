"""What the Generators' sampling engines did during a load step, from their rnnserve_* series
on Ray's metrics export: requests, sampling calls per request and sequences per call (exact,
from counters), and the time to a request's first character and from there to its last
(estimates: Ray's export makes a histogram's `_sum` from its buckets' midpoints, so a mean
is only as fine as the buckets).

Every replica's series are read before and after the step and differenced per replica: a
replica that left keeps its last values in the export, and one that came has none before.
Ray exports a replica's records every few seconds, so `after` waits until the requests the
step is known to have made are counted (or a bound passes).
"""

from __future__ import annotations

import re
import time

import requests

SERIES = re.compile(r'^ray_(rnnserve_\w+)\{(.*)\} (\S+)$')
REPLICA = re.compile(r'replica="([^"]*)"')
SETTLE_S = 30.0  # at most this long for the export to catch up after a step


def scrape(metrics_url: str) -> dict[tuple[str, str], float] | None:
    """{(series, replica): value} of every rnnserve_* series, summed over its other tags;
    None when the export cannot be read."""
    try:
        text = requests.get(metrics_url, timeout=10).text
    except requests.RequestException:
        return None
    values: dict[tuple[str, str], float] = {}
    for line in text.splitlines():
        if match := SERIES.match(line):
            replica = REPLICA.search(match.group(2))
            key = (match.group(1), replica.group(1) if replica else "")
            values[key] = values.get(key, 0.0) + float(match.group(3))
    return values


class EngineMeter:
    """The engines' figures over one load step (`start()` before, `stop()` after)."""

    def __init__(self, metrics_url: str):
        self.metrics_url = metrics_url
        self._before: dict | None = None

    def start(self) -> None:
        self._before = scrape(self.metrics_url)

    def stop(self, requests_made: int, length: int) -> dict:
        """The step's figures, once the export counts `requests_made` more finished requests;
        {} without an export. `length`: the characters each request asked for."""
        if self._before is None:
            return {}
        deadline = time.monotonic() + SETTLE_S
        while True:
            spent = self._spent()
            if spent.get("rnnserve_requests_finished_total", 0) >= requests_made:
                break
            if time.monotonic() > deadline:
                break
            time.sleep(1)
        finished = spent.get("rnnserve_requests_finished_total", 0)
        timed = spent.get("rnnserve_char_latency_seconds_count", 0)
        calls = spent.get("rnnserve_sampling_calls_total", 0)
        first = spent.get("rnnserve_time_to_first_char_seconds_count", 0)
        return {
            "requests": int(finished),
            # A request's mean seconds a character after its first, times its other characters.
            "sampling_ms": (1000 * (length - 1) * spent.get("rnnserve_char_latency_seconds_sum", 0)
                            / timed if timed else None),
            "first_char_ms": (1000 * spent.get("rnnserve_time_to_first_char_seconds_sum", 0)
                              / first if first else None),
            "calls_per_request": calls / finished if finished else None,
            "sequences_per_call": (spent.get("rnnserve_batch_sequences_total", 0) / calls
                                   if calls else None)}

    def _spent(self) -> dict[str, float]:
        """Each series' growth since `start()`, summed over the replicas."""
        after = scrape(self.metrics_url) or {}
        spent: dict[str, float] = {}
        for (name, replica), value in after.items():
            grown = value - self._before.get((name, replica), 0.0)
            if grown > 0:
                spent[name] = spent.get(name, 0.0) + grown
        return spent

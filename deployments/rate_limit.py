"""Token buckets per client: the Ingress's rate limits (deployments/guards.py) and the
proxy's tarpit for refused large bodies (deployments/proxy_guard.py). Standard library only,
because the proxy process that imports it loads none of the app."""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass


@dataclass
class TokenBucket:
    rate: float  # tokens per second
    burst: float  # bucket size
    tokens: float
    updated: float

    def _refill(self, now: float) -> None:
        """Add what accrued since the last call, up to the bucket's size."""
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now

    def take(self, now: float) -> float:
        """Take one token; returns 0 when allowed, else seconds until one is available."""
        self._refill(now)
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate

    def charge(self, tokens: float, now: float) -> None:
        """Take `tokens` more, into debt if need be (at most one full bucket's worth)."""
        self._refill(now)
        self.tokens = max(-self.burst, self.tokens - tokens)

    def wait(self, now: float) -> float:
        """Seconds until a token is there (0: now), taking none."""
        self._refill(now)
        return max(0.0, (1 - self.tokens) / self.rate)


class RateLimiter:
    """One bucket per (client, route class); the least recently seen clients are forgotten."""

    def __init__(self, rate: float, burst: float, max_clients: int = 100_000):
        self.rate, self.burst, self.max_clients = rate, burst, max_clients
        self.buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def _bucket(self, key: str, now: float) -> TokenBucket:
        bucket = self.buckets.pop(key, None) or TokenBucket(self.rate, self.burst, self.burst, now)
        self.buckets[key] = bucket
        if len(self.buckets) > self.max_clients:
            self.buckets.popitem(last=False)
        return bucket

    def check(self, key: str, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        return self._bucket(key, now).take(now)

    def charge(self, key: str, tokens: float, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self._bucket(key, now).charge(tokens, now)

    def wait(self, key: str, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        return self._bucket(key, now).wait(now)

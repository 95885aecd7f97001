"""Per-worker admission control: a token bucket per client and a bound on batches in flight.

Both answer at once (429 / 503 with Retry-After) instead of queueing: a client that is
told to wait can back off, a queue without bound only turns overload into timeouts.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from settlement.errors import Busy, RateLimited

_MAX_CLIENTS = 10_000  # buckets kept; full (idle) buckets are dropped first


class RateLimiter:
    """Token buckets keyed by client: `rate` batches per second, up to `burst` at once."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)
        self._lock = threading.Lock()  # the sync registration route calls from worker threads

    def take(self, key: str, now: float | None = None) -> None:
        """Spend one token of `key`, or raise RateLimited with the seconds until one is back."""
        if self.rate <= 0:
            return
        at = time.monotonic() if now is None else now
        with self._lock:
            self._take(key, at)

    def _take(self, key: str, at: float) -> None:
        tokens, last = self._buckets.get(key, (self.burst, at))
        tokens = min(self.burst, tokens + (at - last) * self.rate)
        if tokens < 1.0:
            self._buckets[key] = (tokens, at)
            wait = math.ceil((1.0 - tokens) / self.rate)
            raise RateLimited(
                f"rate limit of {self.rate:g} batches/s per client exceeded; retry after {wait} s",
                retry_after=wait,
            )
        self._buckets[key] = (tokens - 1.0, at)
        if len(self._buckets) > _MAX_CLIENTS:
            self._prune(at)

    def _prune(self, at: float) -> None:
        full = [
            k for k, (t, last) in self._buckets.items() if t + (at - last) * self.rate >= self.burst
        ]
        for k in full:
            del self._buckets[k]
        while len(self._buckets) > _MAX_CLIENTS:  # all busy: forget the oldest
            del self._buckets[next(iter(self._buckets))]


class InflightLimit:
    """At most `limit` batches in progress in this worker; the next one gets 503 at once."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.current = 0

    @contextmanager
    def slot(self) -> Iterator[None]:
        # Only the event loop thread enters and leaves, so a plain int is enough.
        if self.current >= self.limit:
            raise Busy(
                f"server busy: {self.limit} batches in progress in this worker; retry after 1 s",
                retry_after=1,
            )
        self.current += 1
        try:
            yield
        finally:
            self.current -= 1

"""Per-worker admission control: a bound on batches in flight (rate limits, shared by all
workers, are services/access.py's).

It answers at once (503 with Retry-After) instead of queueing: a client that is told to
wait can back off, a queue without bound only turns overload into timeouts.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from settlement.errors import Busy


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

"""Prometheus metrics of the API, shared by every uvicorn worker through multi-process mode.

`settlement serve` points PROMETHEUS_MULTIPROC_DIR at a fresh directory before it starts
its workers (prometheus-client reads it at import), so /metrics on any worker reports
the sum over all of them. Without that variable each process counts for itself.
"""

from __future__ import annotations

import time
from collections import Counter as _Tally
from collections.abc import Iterable
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from settlement.domain.receipts import Reason
from settlement.services.ingest import VERDICTS

# Every label value comes from a closed set (never from a client's input), so the series
# stay bounded: anything else is counted as "other".
_VERDICT_LABELS = frozenset(VERDICTS)
_REASON_LABELS = frozenset(r.value for r in Reason) | {""}

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

RECEIPTS = Counter(
    "w2e_receipts_total",
    "Receipts ingested, by verdict and reason code (reason empty unless rejected)",
    ["verdict", "reason"],
)
BATCHES = Counter("w2e_batches_total", "POST /v1/receipts answers by HTTP status", ["status"])
BATCH_SECONDS = Histogram(
    "w2e_batch_seconds",
    "Wall time of one POST /v1/receipts from body read to answer (status 200)",
    buckets=_LATENCY_BUCKETS,
)
INGEST_SECONDS = Histogram(
    "w2e_ingest_seconds",
    "Wall time of the ingest use case for one batch: verify, decide, commit",
    buckets=_LATENCY_BUCKETS,
)
STORE_SECONDS = Histogram(
    "w2e_store_seconds",
    "Wall time of the store's part of one batch: the transaction that decides and commits",
    buckets=_LATENCY_BUCKETS,
)
RATE_LIMITED = Counter(
    "w2e_rate_limited_total",
    "Requests refused with 429 by the shared rate limits, by route and client kind",
    ["route", "client"],
)
INFLIGHT = Gauge("w2e_inflight_batches", "Batches being ingested now", multiprocess_mode="livesum")


def count_verdicts(items: Iterable[object]) -> None:
    """Add one batch's verdicts to RECEIPTS: one increment per label, not per receipt."""
    tally = _Tally((item.verdict, item.reason or "") for item in items)  # type: ignore[attr-defined]
    for (verdict, reason), n in tally.items():
        RECEIPTS.labels(*bounded_labels(verdict, reason)).inc(n)


def bounded_labels(verdict: str, reason: str) -> tuple[str, str]:
    """(verdict, reason) as metric labels: known values, else "other"."""
    return (
        verdict if verdict in _VERDICT_LABELS else "other",
        reason if reason in _REASON_LABELS else "other",
    )


def exposition(metrics_dir: str | None) -> tuple[bytes, str]:
    """The text format of every metric: summed over workers when metrics_dir is set."""
    if metrics_dir:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=metrics_dir)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


class TimedStore:
    """The store as the Ingestor sees it, with its ingest transaction timed into STORE_SECONDS."""

    def __init__(self, store: Any) -> None:
        self._store = store

    def ingest_batch(self, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return self._store.ingest_batch(*args, **kwargs)
        finally:
            STORE_SECONDS.observe(time.perf_counter() - started)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

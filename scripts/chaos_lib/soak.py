"""`scripts/chaos soak`: honest receipts at half the peak ingest rate (measured first in the
same run by a short burst, or --rate) for --minutes; per minute the API's resident memory
(supervisor and every worker) and the p99 latency of POST /v1/receipts.

Pass: memory flat (the last minute's RSS at most RSS_BOUND above the second minute's: the
first minute holds the warm-up) and p99 stable (the last minute's at most P99_FACTOR times
the second minute's, plus P99_SLACK_MS for a noisy shared machine).
"""

from __future__ import annotations

import statistics
import threading
import time
from dataclasses import dataclass, field

from settlement.client import SettlementClient

from .stack import Stack, rss_mb
from .traffic import Acked, Players, World

RSS_BOUND = 0.10  # +10 %
P99_FACTOR = 2.0
P99_SLACK_MS = 20.0
BATCH_SESSIONS = 50  # 100 receipts per batch


@dataclass
class SoakReport:
    minutes: float
    rate: float = 0.0  # receipts per second sent during the soak
    peak: float | None = None  # receipts per second of the burst (None with --rate)
    rss_mb_by_minute: list[float] = field(default_factory=list)
    p99_ms_by_minute: list[float] = field(default_factory=list)
    sent_by_minute: list[int] = field(default_factory=list)
    errors: int = 0
    rss_ok: bool = False
    p99_ok: bool = False

    @property
    def passed(self) -> bool:
        return self.rss_ok and self.p99_ok and self.errors == 0


def p99(values: list[float]) -> float:
    if not values:
        return 0.0
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[98]


class Sender:
    """One thread posting batches of honest receipts, paced to `rate` receipts/s (None: as
    fast as it can); latencies recorded per bucket."""

    def __init__(self, world: World, url: str, seed: int) -> None:
        self.players = Players(world, url, Acked(), sessions=BATCH_SESSIONS, seed=seed)
        self.url = url
        self.lat: list[tuple[float, float, int]] = []  # (end time, ms, receipts)
        self.stop = threading.Event()
        self.errors = 0

    def run(self, rate: float | None) -> None:
        with SettlementClient(self.url, max_attempts=3, timeout=30) as client:
            nxt = time.monotonic()
            while not self.stop.is_set():
                batch = self.players.batch()
                t0 = time.perf_counter()
                try:
                    client.submit(batch)
                except Exception:
                    self.errors += 1
                    continue
                self.lat.append((time.monotonic(), (time.perf_counter() - t0) * 1000, len(batch)))
                if rate:
                    nxt += len(batch) / rate
                    self.stop.wait(max(0.0, nxt - time.monotonic()))


def _run(senders: list[Sender], rate: float | None, seconds: float) -> None:
    per = None if rate is None else rate / len(senders)
    threads = [threading.Thread(target=s.run, args=(per,), daemon=True) for s in senders]
    for t in threads:
        t.start()
    time.sleep(seconds)
    for s in senders:
        s.stop.set()
    for t in threads:
        t.join(60)


def soak(
    stack: Stack, minutes: float, rate: float | None, bucket_seconds: float, burst_seconds: float
) -> SoakReport:
    report = SoakReport(minutes)
    stack.start_db()
    world = World.make(stack.chain_id, stack.distributor, viewers=200)
    from settlement.adapters.db.store import open_store
    from settlement.services.registry import load_registries

    with open_store(stack.db_url) as store:
        load_registries(store, world.registries)
    stack.define()
    stack.start_api()
    stack.procs["scheduler"].start()
    try:
        if rate is None:
            burst = [Sender(world, stack.api_url, seed=100 + i) for i in range(2)]
            t0 = time.monotonic()
            _run(burst, None, burst_seconds)
            sent = sum(n for s in burst for _, _, n in s.lat)
            report.peak = sent / (time.monotonic() - t0)
            rate = report.peak / 2
        report.rate = rate
        senders = [Sender(world, stack.api_url, seed=i) for i in range(2)]
        start = time.monotonic()
        threads = [threading.Thread(target=s.run, args=(rate / 2,), daemon=True) for s in senders]
        for t in threads:
            t.start()
        total = minutes * 60
        buckets = max(1, round(total / bucket_seconds))
        for b in range(buckets):
            end = start + (b + 1) * total / buckets
            time.sleep(max(0.0, end - time.monotonic()))
            report.rss_mb_by_minute.append(round(rss_mb(stack.procs["api"].pids()), 1))
            lo = start + b * total / buckets
            lat = [ms for s in senders for t, ms, _ in list(s.lat) if lo <= t < end]
            report.sent_by_minute.append(
                sum(n for s in senders for t, _, n in list(s.lat) if lo <= t < end)
            )
            report.p99_ms_by_minute.append(round(p99(lat), 1))
        for s in senders:
            s.stop.set()
        for t in threads:
            t.join(60)
        report.errors = sum(s.errors for s in senders)
    finally:
        stack.close()
    rss, lat = report.rss_mb_by_minute, report.p99_ms_by_minute
    ref = 1 if len(rss) > 1 else 0  # the second minute (the first holds the warm-up)
    report.rss_ok = rss[-1] <= rss[ref] * (1 + RSS_BOUND)
    report.p99_ok = lat[-1] <= lat[ref] * P99_FACTOR + P99_SLACK_MS
    return report

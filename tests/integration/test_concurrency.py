"""Two OS processes ingest overlapping batches of the same keys into one PostgreSQL store
at once; the stored best receipts equal those of a serial run on a fresh schema."""

from __future__ import annotations

import multiprocessing
import random
from typing import Any

from storekit import GENESIS, NOW, World, key, pg_schema, require_pg, settings, wire

from settlement.adapters.db.store import open_store
from settlement.services import ingest as service

SESSIONS = 40
STEPS = 8
BATCH = 25
B1_OFFSET = GENESIS + 100  # issuedAt base in bucket 1; +3900 is bucket 2


def _receipts() -> list[dict[str, Any]]:
    """Cumulative, equivocation-free receipts: few sessions with long chains (2 nodes and
    a view each, 2 buckets), ties (equal counters, other issuedAt) and exact repeats, so
    both processes keep improving the same best rows at the same time."""
    w = World()
    rng = random.Random(11)
    out = []
    for s in range(SESSIONS):
        sid = key(f"conc{s}")
        for node in (w.node, w.node2):
            b = seg = 0
            for step in range(STEPS):
                b += rng.choice([0, 1000, 2000])
                seg += rng.choice([0, 1])
                issued = B1_OFFSET + rng.choice([0, 5, 3900, 3905]) + step
                out.append(w.delivery(sid, b, seg, issued, node=node))
        for step in range(STEPS // 2):
            out.append(w.view(sid, 2 * step, B1_OFFSET + rng.choice([20, 3950]) + step))
    return wire(*out)


def _ingest(url: str, items: list[dict[str, Any]], batch: int, barrier: Any) -> dict[str, int]:
    store = open_store(url)  # both processes migrate the fresh schema at once, too
    try:
        ingestor = service.Ingestor(store, settings())
        barrier.wait(timeout=60)
        counts: dict[str, int] = {}
        for i in range(0, len(items), batch):
            for k, v in ingestor.ingest(items[i : i + batch], NOW).summary.items():
                counts[k] = counts.get(k, 0) + v
        return counts
    finally:
        store.close()


def _state(url: str) -> tuple[list, list, dict]:
    store = open_store(url)
    try:
        best = sorted(
            (type(x.receipt).__name__, x.bucket, repr(x.receipt)) for x in store.best_receipts()
        )
        sessions = {
            key(f"conc{s}"): store.session(World().viewer, key(f"conc{s}")) for s in range(SESSIONS)
        }
        return best, store.quarantined(), sessions
    finally:
        store.close()


def _register(url: str) -> None:
    store = open_store(url)
    try:
        World().register(store)
    finally:
        store.close()


def test_two_processes_end_like_one(tmp_path):
    require_pg()
    items = _receipts()
    ctx = multiprocessing.get_context("spawn")
    with pg_schema() as serial_url, ctx.Manager() as manager, ctx.Pool(2) as pool:
        _register(serial_url)
        serial = _ingest(serial_url, items, len(items), _NoBarrier())
        assert serial["accepted"] > 0 and serial["rejected"] == 0
        best_s, quarantine_s, sessions_s = _state(serial_url)
        assert len(best_s) > 2 * SESSIONS
        # A few rounds, each with other splits and orders: a race shows up in some.
        for round_ in range(3):
            rng = random.Random(round_)
            # Each process gets 60 % of the receipts (every key is in both), a fifth of
            # them in both: a lost update is not healed by the other process sending the
            # same receipt later.
            shuffled = rng.sample(items, len(items))
            cut_a, cut_b = len(items) * 6 // 10, len(items) * 4 // 10
            order_a = rng.sample(shuffled[:cut_a], cut_a)
            order_b = rng.sample(shuffled[cut_b:], len(items) - cut_b)
            with pg_schema() as concurrent_url:
                barrier = manager.Barrier(2)
                pool.apply(_register, (concurrent_url,))
                a = pool.apply_async(_ingest, (concurrent_url, order_a, BATCH, barrier))
                b = pool.apply_async(_ingest, (concurrent_url, order_b, BATCH, barrier))
                counts = [a.get(timeout=120), b.get(timeout=120)]
                for c, order in zip(counts, (order_a, order_b), strict=True):
                    assert c["rejected"] == 0
                    assert sum(c[v] for v in service.VERDICTS) == len(order)
                best_c, quarantine_c, sessions_c = _state(concurrent_url)
            assert best_c == best_s, f"round {round_}"
            assert quarantine_c == quarantine_s == []
            assert sessions_c == sessions_s


class _NoBarrier:
    def wait(self, timeout: float | None = None) -> None:
        return None

"""The close scheduler: due epochs close in order, and two instances on one PostgreSQL close
each epoch exactly once."""

from __future__ import annotations

import threading
import time

import pytest
from storekit import EPOCH, GENESIS, GRACE, World, key, pg_schema, require_pg, settings, wire

from settlement.adapters.db.epochs import EpochStore
from settlement.adapters.db.store import open_store
from settlement.jobs import CloseScheduler, close_due
from settlement.services import ingest as service

DUE = 5  # epochs due at the fake clock's time
NOW = GENESIS + DUE * EPOCH + GRACE + 1


def cfg(tmp_path, **overrides):
    values = {"emission": 10**6, "data_dir": str(tmp_path / "data"), "scheduler_interval": 0.02}
    values.update(overrides)
    return settings(**values)


def seed_receipts(store, s) -> None:
    """A session per epoch, so that every close moves watermarks and balances."""
    w = World()
    w.register(store)
    for e in range(1, DUE + 1):
        t = GENESIS + (e - 1) * EPOCH + GRACE + 100
        sid = key(f"sched-{e}")
        items = wire(
            w.delivery(sid, 1000 * e, e, t, started=t - 60), w.view(sid, 4 * e, t, started=t - 60)
        )
        result = service.Ingestor(store, s).ingest(items, t + 1)
        assert [i.verdict for i in result.items] == ["accepted", "accepted"]


def run_until_closed(schedulers, store, timeout=30.0) -> None:
    for sch in schedulers:
        sch.start()
    try:
        deadline = time.monotonic() + timeout
        epochs = EpochStore(store)
        while epochs.last_closed() < DUE:
            assert time.monotonic() < deadline, "the schedulers did not close every due epoch"
            time.sleep(0.02)
        time.sleep(0.1)  # let any tick in flight finish against the closed epochs
    finally:
        for sch in schedulers:
            sch.shutdown()


def test_two_schedulers_on_postgresql_close_each_epoch_exactly_once(tmp_path):
    require_pg()
    with pg_schema() as url:
        stores = [open_store(url), open_store(url)]  # two instances: engines of their own
        try:
            s = cfg(tmp_path)
            seed_receipts(stores[0], s)
            performed: list[tuple[int, int]] = []
            lock = threading.Lock()

            def recorder(i):
                def on_close(c):
                    with lock:
                        performed.append((i, c.epoch))

                return on_close

            schedulers = [
                CloseScheduler(st, s, clock=lambda: NOW, on_close=recorder(i))
                for i, st in enumerate(stores)
            ]
            # Both closing at once, over and over, from their own threads as well.
            run_until_closed(schedulers, stores[0])
            assert sorted(e for _, e in performed) == list(range(1, DUE + 1))
            assert [sch.errors for sch in schedulers] == [[], []]
            assert all(sch.ticks > 0 for sch in schedulers)
            rows = EpochStore(stores[0]).list()
            assert sorted(r.epoch for r in rows) == list(range(1, DUE + 1))
            # Manifests chain: each names the hash of the one before.
            from settlement.domain.receipts import keccak

            by_epoch = {r.epoch: r for r in rows}
            import orjson

            for e in range(2, DUE + 1):
                prev = by_epoch[e - 1].manifest
                assert orjson.loads(by_epoch[e].manifest)["prevManifestHash"] == (
                    "0x" + keccak(prev).hex()
                )
        finally:
            for st in stores:
                st.close()


def test_concurrent_close_due_calls_never_close_an_epoch_twice(tmp_path):
    """The lock itself, without the scheduler's timing: many threads, two engines."""
    require_pg()
    with pg_schema() as url:
        stores = [open_store(url), open_store(url)]
        try:
            s = cfg(tmp_path)
            seed_receipts(stores[0], s)
            results: list[list[int]] = []
            errors: list[BaseException] = []
            barrier = threading.Barrier(6)

            def worker(i):
                try:
                    barrier.wait()
                    got = []
                    for _ in range(20):
                        got += [c.epoch for c in close_due(stores[i % 2], s, NOW)]
                    results.append(got)
                except BaseException as error:
                    errors.append(error)

            threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert errors == []
            assert sorted(e for r in results for e in r) == list(range(1, DUE + 1))
        finally:
            for st in stores:
                st.close()


def test_a_scheduler_on_sqlite_closes_due_epochs_in_order(tmp_path):
    store = open_store(f"sqlite:///{tmp_path}/s.db")
    try:
        s = cfg(tmp_path)
        seed_receipts(store, s)
        closed: list[int] = []
        sch = CloseScheduler(store, s, clock=lambda: NOW, on_close=lambda c: closed.append(c.epoch))
        run_until_closed([sch], store)
        assert closed == list(range(1, DUE + 1))
        assert sch.errors == []
    finally:
        store.close()


@pytest.mark.parametrize("now", [GENESIS, GENESIS + EPOCH + GRACE - 1])
def test_nothing_is_due_before_the_first_cutoff(tmp_path, now):
    store = open_store(f"sqlite:///{tmp_path}/n.db")
    try:
        assert close_due(store, cfg(tmp_path), now) == []
    finally:
        store.close()


def test_a_missing_manifest_is_put_back_from_the_database(tmp_path):
    """A crash between the commit and manifest.json's rename: the next run restores it."""
    store = open_store(f"sqlite:///{tmp_path}/m.db")
    try:
        s = cfg(tmp_path)
        seed_receipts(store, s)
        (first,) = close_due(store, s, GENESIS + EPOCH + GRACE)
        path = first.directory / "manifest.json"
        path.unlink()
        assert close_due(store, s, GENESIS + EPOCH + GRACE) == []
        assert path.read_bytes() == first.manifest
    finally:
        store.close()


def test_the_scheduler_prunes_sessions_once_no_receipt_can_reach_them(tmp_path):
    store = open_store(f"sqlite:///{tmp_path}/s.db")
    try:
        s = cfg(tmp_path)
        seed_receipts(store, s)
        sessions = [key(f"sched-{e}") for e in range(1, DUE + 1)]
        viewer = World().viewer
        # At NOW every session is still within max_session_age + max_age: closes only.
        sch = CloseScheduler(store, s, clock=lambda: NOW)
        assert [c.epoch for c in sch.tick()] == list(range(1, DUE + 1))
        assert all(store.session(viewer, sid) is not None for sid in sessions)
        assert watermark_rows(store, viewer, sessions) > 0
        # Later, with every touched bucket closed, the expired sessions go; the epoch
        # results they produced stay.
        later = NOW + s.max_session_age + s.max_age
        sch_later = CloseScheduler(store, s, clock=lambda: later)
        sch_later.tick()
        assert sch_later.errors == []
        assert all(store.session(viewer, sid) is None for sid in sessions)
        assert store.best_receipts() == []
        # Their watermarks go with them: no close can read them again.
        assert watermark_rows(store, viewer, sessions) == 0
        assert EpochStore(store).last_closed() >= DUE
    finally:
        store.close()


def watermark_rows(store, viewer: bytes, sessions: list[bytes]) -> int:
    def fn(cur):
        n = 0
        for table in ("delivery_watermark", "view_watermark"):
            for sid in sessions:
                cur.execute(
                    f"SELECT COUNT(*) FROM {table} WHERE viewer = ? AND session_id = ?",
                    (viewer, sid),
                )
                n += cur.fetchone()[0]
        return n

    return store._run(fn)


def test_the_scheduler_compacts_the_balance_history_once_per_closed_epoch(tmp_path):
    """Every epoch pays the same accounts (one node, viewer and creator): the tick leaves one
    balance row per account, the latest, however many epochs it closed."""
    store = open_store(f"sqlite:///{tmp_path}/b.db")
    try:
        s = cfg(tmp_path)
        seed_receipts(store, s)
        sch = CloseScheduler(store, s, clock=lambda: NOW)
        assert [c.epoch for c in sch.tick()] == list(range(1, DUE + 1))
        assert sch.errors == []
        rows = store._run(
            lambda cur: cur.execute(
                "SELECT account, COUNT(*), MAX(epoch) FROM balance GROUP BY account"
            ).fetchall()
        )
        assert len(rows) == 3
        assert all(n == 1 and last == DUE for _, n, last in rows)
        assert sch._compacted_through == DUE
    finally:
        store.close()

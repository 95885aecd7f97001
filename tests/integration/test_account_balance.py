"""`account_balance`, each account's latest balance row, on SQLite and PostgreSQL: closes keep
it equal to the latest row per account of the `balance` history, the close's read of it gives
what the history gives, and migration 0007 backfills it from the history."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from storekit import BACKENDS, EPOCH, GENESIS, GRACE, World, backend_url, key, reset, wire

from settlement.adapters.db import close_io
from settlement.adapters.db.epochs import CloseReader, EpochStore
from settlement.adapters.db.store import open_store
from settlement.adapters.db.tables import EPOCH_TABLES
from settlement.services import ingest as ingest_service
from settlement.services.close import close_epoch

Rows = dict[bytes, tuple[int, int, int, int]]


def cutoff(e: int) -> int:
    return GENESIS + e * EPOCH + GRACE


def bucket_time(e: int) -> int:
    return cutoff(e - 1) + 100 if e > 1 else GENESIS + 100


@pytest.fixture(params=BACKENDS)
def epochs(request, stores):
    store = stores(request.param)
    reset(store)

    def wipe(cur: Any) -> None:
        for table in EPOCH_TABLES:
            cur.execute(f"DELETE FROM {table}")

    store._run(wipe)
    yield EpochStore(store)
    store._run(wipe)


def _rows(epochs: EpochStore, sql: str) -> Rows:
    def fn(cur: Any) -> Rows:
        cur.execute(sql)
        return {bytes(a): (int(e), int(x), int(y), int(z)) for a, e, x, y, z in cur.fetchall()}

    return epochs.run(fn)


def latest(epochs: EpochStore) -> Rows:
    return _rows(epochs, "SELECT account, epoch, node, viewer, creator FROM account_balance")


def history(epochs: EpochStore) -> list[tuple[bytes, int, int, int, int]]:
    def fn(cur: Any) -> list[tuple[bytes, int, int, int, int]]:
        cur.execute("SELECT account, epoch, node, viewer, creator FROM balance")
        return [(bytes(a), int(e), int(x), int(y), int(z)) for a, e, x, y, z in cur.fetchall()]

    return epochs.run(fn)


def latest_of_history(epochs: EpochStore, before: int = 2**62) -> Rows:
    """Each account's row of its highest epoch before `before`, from the history."""
    out: Rows = {}
    for a, e, x, y, z in history(epochs):
        if e < before and (a not in out or out[a][0] < e):
            out[a] = (e, x, y, z)
    return out


def check_reads(epochs: EpochStore, last: int) -> None:
    """The close's read, from every epoch up to the one after `last`, is the history's."""
    for before in range(1, last + 2):
        got = epochs.run(lambda cur, before=before: CloseReader(epochs, cur).balances(before))
        want = {a: r[1:] for a, r in sorted(latest_of_history(epochs, before).items())}
        assert got == want and list(got) == list(want), before


def test_closes_keep_each_accounts_latest_balance(epochs, tmp_path):
    """Accounts paid in some epochs and not others: after each close `account_balance` holds
    exactly the latest history row of every account ever paid."""
    from storekit import settings

    store = epochs.store
    w = World()
    w.register(store)
    s = settings(emission=1000, bps_node=6000, bps_viewer=3000, data_dir=str(tmp_path / "d"))
    per_epoch = {
        1: lambda t, sid: [
            w.delivery(sid, 300, 3, t, started=t - 60),
            w.delivery(sid, 100, 1, t, node=w.node2, started=t - 60),
            w.view(sid, 20, t, started=t - 60),
        ],
        2: lambda t, sid: [
            w.delivery(sid, 200, 2, t, started=t - 60),
            w.view(sid, 8, t, started=t - 60),
        ],
        3: lambda t, sid: [w.delivery(sid, 100, 1, t, node=w.node2, started=t - 60)],
        4: lambda t, sid: [],
        5: lambda t, sid: [
            w.delivery(sid, 100, 1, t, started=t - 60),
            w.view(sid, 4, t, started=t - 60),
        ],
    }
    paid_epochs = set()
    for e, receipts in per_epoch.items():
        t = bucket_time(e)
        batch = receipts(t, key(f"session-{e}"))
        if batch:
            result = ingest_service.Ingestor(store, s).ingest(wire(*batch), t + 1)
            assert all(i.reason is None for i in result.items), result
        close_epoch(store, s, now=cutoff(e))
        paid_epochs |= {r[1] for r in history(epochs)}
        assert latest(epochs) == latest_of_history(epochs)
        check_reads(epochs, e)
    assert len(latest(epochs)) >= 4 and paid_epochs >= {1, 2, 3, 5}


def test_rows_written_out_of_epoch_order_never_move_the_latest_back(epochs):
    a, b = bytes([0xA0]) * 20, bytes([0x0B]) * 20
    with epochs.connection() as conn, epochs.transaction(conn, write=True) as cur:
        for e, rows in ((3, [(a, 9, 9, 9)]), (2, [(a, 4, 4, 4), (b, 1, 0, 2**200)])):
            close_io.write_rows(epochs, cur, close_io.prepare_rows(epochs, e, [], rows))
    assert latest(epochs) == latest_of_history(epochs) == {a: (3, 9, 9, 9), b: (2, 1, 0, 2**200)}
    check_reads(epochs, 3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_0007_backfills_each_accounts_latest_balance(backend, tmp_path):
    from alembic import command

    from settlement.adapters.db.store import _engine
    from settlement.adapters.db.tables import alembic_config

    a, b, c = (bytes([k]) * 20 for k in (0xA0, 0x0B, 0x0C))
    rows = [
        (a, 1, "1", "2", "3"),
        (b, 1, "5", "0", "0"),
        (a, 2, "4", "2", "3"),
        (b, 3, "6", "1", str(2**200)),
        (c, 3, "0", "0", "7"),
        (a, 7, "8", "2", "3"),
    ]
    with backend_url(backend, tmp_path) as url:
        engine, _ = _engine(url, 1, "FULL")
        try:
            with engine.begin() as conn:
                command.upgrade(alembic_config(conn), "0006")
                conn.execute(
                    sa.text(
                        "INSERT INTO balance (account, epoch, node, viewer, creator) "
                        "VALUES (:a, :e, :n, :v, :c)"
                    ),
                    [dict(zip("aenvc", r, strict=True)) for r in rows],
                )
            with engine.begin() as conn:
                command.upgrade(alembic_config(conn), "0007")
        finally:
            engine.dispose()
        store = open_store(url)
        try:
            epochs = EpochStore(store)
            assert (
                latest(epochs)
                == latest_of_history(epochs)
                == {
                    a: (7, 8, 2, 3),
                    b: (3, 6, 1, 2**200),
                    c: (3, 0, 0, 7),
                }
            )
            check_reads(epochs, 7)
        finally:
            store.close()
        # Down and up again.
        engine, _ = _engine(url, 1, "FULL")
        try:
            with engine.begin() as conn:
                command.downgrade(alembic_config(conn), "0006")
                command.upgrade(alembic_config(conn), "head")
        finally:
            engine.dispose()

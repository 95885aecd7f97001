"""The close's reads and writes in the store (`adapters.db.close_io`, `CloseReader`), on
SQLite and PostgreSQL: what the close asks for is what comes back, however long the service
has run."""

from __future__ import annotations

import pytest
from storekit import BACKENDS, reset

from settlement.adapters.db import close_io
from settlement.adapters.db.epochs import CloseReader, EpochStore
from settlement.adapters.db.tables import EPOCH_TABLES


@pytest.fixture(params=BACKENDS)
def epochs(request, stores):
    store = stores(request.param)
    reset(store)
    epochs = EpochStore(store)
    yield epochs
    with epochs.connection() as conn, epochs.transaction(conn, write=True) as cur:
        for table in EPOCH_TABLES:
            cur.execute(f"DELETE FROM {table}")


def test_the_close_reads_each_accounts_latest_balance_only(epochs):
    """A row per account per paying epoch is kept; the close's read returns, for each account,
    its row of the highest epoch before the one closing, in account order."""
    a, b, c = (bytes([k]) * 20 for k in (0xA0, 0x0B, 0x0C))
    paid = {
        1: [(a, 1, 2, 3), (b, 5, 0, 0)],
        2: [(a, 4, 2, 3)],
        3: [(b, 6, 1, 2**200), (c, 0, 0, 7)],
    }
    with epochs.connection() as conn, epochs.transaction(conn, write=True) as cur:
        for e, rows in paid.items():
            close_io.write_rows(epochs, cur, close_io.prepare_rows(epochs, e, [], sorted(rows)))
    expected = {
        1: {},
        2: {a: (1, 2, 3), b: (5, 0, 0)},
        3: {a: (4, 2, 3), b: (5, 0, 0)},
        4: {a: (4, 2, 3), b: (6, 1, 2**200), c: (0, 0, 7)},
    }
    for before, want in expected.items():
        got = epochs.run(lambda cur, before=before: CloseReader(epochs, cur).balances(before))
        assert got == want and list(got) == sorted(got), before


def test_compacting_balances_keeps_each_accounts_latest_row_and_every_later_read(epochs):
    """Retention compacts the balance history to each account's latest row of a closed epoch:
    the close's read after it, a correction's and the account page's come back the same,
    and the table stops growing with the epochs."""
    a, b, c = (bytes([k]) * 20 for k in (0xA0, 0x0B, 0x0C))
    paid = {
        1: [(a, 1, 2, 3), (b, 5, 0, 0)],
        2: [(a, 4, 2, 3)],
        3: [(b, 6, 1, 2**200), (c, 0, 0, 7)],
        4: [(a, 9, 2, 3)],
    }
    with epochs.connection() as conn, epochs.transaction(conn, write=True) as cur:
        for e, rows in paid.items():
            close_io.write_rows(epochs, cur, close_io.prepare_rows(epochs, e, [], sorted(rows)))

    def read(before: int) -> dict:
        return epochs.run(lambda cur: CloseReader(epochs, cur).balances(before))

    def rows() -> list[tuple[bytes, int]]:
        return epochs.run(_balance_rows)

    before = {e: read(e) for e in (4, 5)}
    # Through epoch 3: a's epoch-1 row and b's epoch-1 row go; a's epoch-2 row stays, as
    # its epoch-4 row is later than the epoch compacted through.
    assert epochs.compact_balances(3) == 2
    assert sorted(rows()) == sorted([(a, 2), (a, 4), (b, 3), (c, 3)])
    assert epochs.compact_balances(4) == 1
    assert sorted(rows()) == sorted([(a, 4), (b, 3), (c, 3)])
    assert epochs.compact_balances(4) == 0
    assert read(5) == before[5] and list(read(5)) == sorted(read(5))
    assert epochs.balance(a) == (4, 9, 2, 3)
    assert epochs.balance(b) == (3, 6, 1, 2**200)
    assert before[4] == {a: (4, 2, 3), b: (6, 1, 2**200), c: (0, 0, 7)}


def _balance_rows(cur) -> list[tuple[bytes, int]]:
    cur.execute("SELECT account, epoch FROM balance")
    return [(bytes(x), int(e)) for x, e in cur.fetchall()]

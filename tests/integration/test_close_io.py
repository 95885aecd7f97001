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

"""The submitter's rows (adapters/db/submitter.py) on both stores."""

from __future__ import annotations

from pathlib import Path

import pytest
from storekit import BACKENDS, opened

from settlement.adapters import chain as c
from settlement.adapters.db import submitter as sdb
from settlement.config import Settings


@pytest.mark.parametrize("backend", BACKENDS)
def test_submitter_rows_round_trip_on_both_stores(backend: str, tmp_path: Path) -> None:
    """Proposal rows, transaction versions, uint256 totals and the Claimed index, exactly.

    On PostgreSQL, in a schema of its own (storekit); CI=true makes an unreachable server a
    failure, not a skip."""
    with opened(backend, tmp_path) as store:
        rows = sdb.SubmitterStore(store)
        chain = c.connect(Settings(rpc_url=None))
        key = chain.dev_key(0)
        first = chain.sign(
            key, c.Call(key.address, "0x", "t"), nonce=7, fees=c.Fees(3, 2), gas=21_000
        )
        big = 2**256 - 1
        row = rows.insert(
            kind=sdb.ROOT,
            epoch=2**40,
            first_epoch=1,
            root="0x" + "ab" * 32,
            cumulative_total=big,
            data_hash="0x" + "cd" * 32,
            data_uri="x",
            from_block=5,
            prepared=first,
        )
        assert row.status == sdb.PREPARED and row.txs == (first,) and row.cumulative_total == big
        second = chain.replacement(key, first, 50)
        row = rows.update(row.id, txs=[first, second], status=sdb.SENT, tx_hash=second.tx_hash)
        assert rows.open() == [row] and row.txs == (first, second)
        assert rows.get(row.id) == row and rows.by_root("0x" + "ab" * 32) == [row]
        rows.update(row.id, status=sdb.ACCEPTED, block=9)
        assert rows.open() == [] and rows.latest_accepted().id == row.id
        a = "0x" + "11" * 20
        rows.record_claims("claimed", {a: big}, 9, 10)
        rows.record_claims("claimed", {a: 1}, 10, 11)  # claimed never goes down
        assert rows.claimed(bytes.fromhex("11" * 20)) == big and rows.cursor("claimed") == 11

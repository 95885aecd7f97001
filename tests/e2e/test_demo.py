"""`settlement demo` at a small size: the whole flow through the real HTTP API, ending with
every on-chain balance equal to its allocation (exit 0) and the summary printed."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from settlement.adapters.db import submitter as sdb
from settlement.adapters.db.store import open_store
from settlement.cli.main import app

pytestmark = pytest.mark.slow  # the whole flow, simulated traffic to claims


def test_demo_small_network_ends_with_balances_equal_to_allocations(tmp_path: Path) -> None:
    args = ["demo", "--nodes", "12", "--viewers", "150", "--receipts", "2500", "--workers", "1"]
    result = CliRunner().invoke(app, [*args, "--dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    out = result.output
    for title in (
        "Receipts by verdict",
        "Top earners by class",
        "Claimed accounts: on-chain balance against allocation",
    ):
        assert title in out
    assert "relayed one claimMany for" in out
    assert "OK: every on-chain balance equals its allocation" in out
    assert "NO" not in out.split("Claimed accounts")[1].split("accounts ")[0]
    for reason in ("SIGNER_MISMATCH", "CONFLICT", "accepted"):
        assert reason in out

    # Three roots (epoch 1, epochs 2-3 folded, epoch 4), each accepted once.
    store = open_store(f"sqlite:///{tmp_path}/demo.db")
    try:
        rows = sdb.SubmitterStore(store).all()
    finally:
        store.close()
    assert [(r.first_epoch, r.epoch, r.status) for r in rows] == [
        (1, 1, sdb.ACCEPTED),
        (2, 3, sdb.ACCEPTED),
        (4, 4, sdb.ACCEPTED),
    ]

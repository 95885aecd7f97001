"""The independent auditor (issue 14) against real services on the embedded chain (py-evm):
an untampered history with a correction in the middle audits clean on SQLite and on
PostgreSQL; each tamper is caught with a precise message (epoch, file, line, account or
receipt, expected against found)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from storekit import backend_url
from test_submitter_anvil import HOUR, Net, make_net

from settlement.adapters import chain as c
from settlement.domain import dataset
from settlement.domain.merkle import MerkleTree
from settlement.services.audit import AuditReport, ChainView, Mismatch, audit, open_source
from settlement.services.correct import run_correction


def _accept(n: Net) -> None:
    sub = n.submitter()
    (row,) = sub.step()
    n.chain.increase_time(HOUR)
    (row,) = sub.step()
    assert row.status == "accepted", row


def _history(n: Net) -> None:
    """Epochs 1 and 2 accepted, claims against 2; epoch 3 closed; a correction at epoch 3
    (paused, proposed, accepted); then epochs 4 and 5 under its floor, accepted."""
    d = n.distributor
    n.close(1)
    _accept(n)
    n.close(2)
    _accept(n)
    sub = n.submitter()
    tree = _tree_of(n, 2)
    for account, _ in tree.values[:2]:
        c.send_claim(n.relayer, d, c.claim_info(d, tree, account))
    n.close(3)
    n.chain.transact(n.guardian, d.pause())
    n.chain.mine(1)
    state = run_correction(sub)
    assert state.stage == "pending", state
    n.chain.increase_time(HOUR)
    assert run_correction(sub).stage == "accepted"
    n.chain.transact(n.guardian, d.unpause())
    for epoch in (4, 5):
        n.close(epoch)
        _accept(n)


def _tree_of(n: Net, epoch: int) -> MerkleTree:
    doc = json.loads((_dir(n, epoch) / dataset.MANIFEST).read_bytes())
    (entry,) = [f for f in doc["files"] if f["name"] == dataset.TREE]
    return MerkleTree.load((_dir(n, epoch) / f"{entry['sha256']}.json").read_bytes())


def _dir(n: Net, epoch: int) -> Path:
    return Path(n.settings.data_dir) / f"epoch-{epoch:08d}"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def history(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Net]:
    tmp = tmp_path_factory.mktemp(f"audit-{request.param}")
    with backend_url(request.param, tmp) as url:
        n = make_net(tmp, "", funded_epochs=8, window=6 * 900, database_url=url)
        try:
            _history(n)
            yield n
        finally:
            n.store.close()


def _audit(n: Net, data: Path | None = None, **kw: object) -> AuditReport:
    source = open_source(str(data)) if data is not None else None
    return audit(source, ChainView(n.distributor, n.deployment.block), **kw)  # type: ignore[arg-type]


def test_untampered_history_with_a_correction_audits_clean(history: Net) -> None:
    report = _audit(history)
    assert report.ok, [str(m) for m in report.mismatches]
    kinds = [(s.epoch, s.kind, s.on_chain) for s in report.epochs]
    assert kinds == [
        (1, "epoch", "accepted"),
        (2, "epoch", "accepted"),
        (3, "epoch", "not proposed"),
        (3, "correction", "accepted"),
        (4, "epoch", "accepted"),
        (5, "epoch", "accepted"),
    ], kinds
    assert all(s.signatures_checked == s.receipts for s in report.epochs if s.kind == "epoch")
    assert sum(s.receipts for s in report.epochs) > 50
    json.loads(report.to_json())  # JSON for machines


def _found(report: AuditReport, **want: object) -> list[Mismatch]:
    hits = [
        m
        for m in report.mismatches
        if all(
            (str(v) in str(getattr(m, k))) if k == "what" else getattr(m, k) == v
            for k, v in want.items()
        )
    ]
    assert hits, (want, [str(m) for m in report.mismatches])
    return hits


@pytest.fixture
def copy(history: Net, tmp_path: Path) -> Path:
    out = tmp_path / "epochs"
    shutil.copytree(history.settings.data_dir, out)
    return out

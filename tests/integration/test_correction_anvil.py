"""A correction on anvil, from a bad accepted root to paid, correct claims (PROTOCOL 6-7):
claims against the bad root, pause, `settlement correct` (publish with `corrects`, propose,
accept once due), unpause, claims against the corrected root, and the submitter going on."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.anvil import Anvil
from test_submitter_anvil import ANVIL, EMISSION, HOUR, Net, make_net, one_proposal_per_root
from typer.testing import CliRunner

from settlement.adapters import chain as c
from settlement.adapters.db import submitter as sdb
from settlement.adapters.db.epochs import CloseReader, EpochStore
from settlement.cli.main import app
from settlement.domain import dataset
from settlement.domain.merkle import MerkleTree
from settlement.errors import ContractRevert
from settlement.services.submit import Candidate

pytestmark = pytest.mark.slow  # starts anvil nodes


@pytest.fixture
def net(tmp_path: Path) -> Iterator[Net]:
    with Anvil(ANVIL) as node:
        n = make_net(tmp_path, node.url, funded_epochs=5)
        try:
            yield n
        finally:
            n.store.close()


def _balances(n: Net, epoch: int) -> dict[str, int]:
    epochs = EpochStore(n.store)
    rows = epochs.run(lambda cur: CloseReader(epochs, cur).balances(epoch + 1))
    return {"0x" + a.hex(): x + y + z for a, (x, y, z) in rows.items()}


def _correct(monkeypatch: pytest.MonkeyPatch, n: Net, tmp: Path) -> str:
    monkeypatch.chdir(tmp)  # no stray .env
    for k, v in n.env.items():
        monkeypatch.setenv(k, v)
    result = CliRunner().invoke(app, ["correct"])
    assert result.exit_code == 0, result.output
    return result.output


def test_bad_root_to_paid_correct_claims(
    net: Net, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    n, d, chain = net, net.distributor, net.chain
    n.close(2)
    sub = n.submitter()
    sub.step()
    chain.increase_time(HOUR)
    assert sub.step()[0].status == sdb.ACCEPTED and d.current_epoch() == 2
    good = _balances(n, 2)

    # A bad root slips through its challenge period: attackers' leaves and inflated ones; an
    # attacker and an inflated account claim before anyone notices, the others do not.
    attacker = c.Key.generate("attacker").address.lower()
    late = c.Key.generate("late").address.lower()
    honest = sorted(good, key=lambda a: -good[a])
    inflated, bystander, unclaimed = honest[0], honest[1], honest[2]
    bad_values = dict(good)
    bad_values[attacker] = 500 * 10**18
    bad_values[late] = 300 * 10**18
    bad_values[inflated] += 10 * 10**18
    bad_values[unclaimed] += 20 * 10**18
    bad = MerkleTree.of(sorted(bad_values.items()))
    bad_hash = "0x" + "bd" * 32
    # As if a bug in a close had produced it: our own submitter proposes and accepts it.
    bad_row = sub.propose(
        Candidate(3, 3, bad.root, bad.cumulative_total, bad_hash, "bad", dump_path=None)
    )
    assert bad_row is not None and bad_row.status == sdb.MINED
    chain.increase_time(HOUR)
    assert sub.step()[0].status == sdb.ACCEPTED
    assert d.root() == bad.root
    for account in (attacker, inflated, bystander):
        c.send_claim(n.relayer, d, c.claim_info(d, bad, account))
    assert d.token.balance_of(attacker) == 500 * 10**18

    # Refused until the guardian pauses.
    monkeypatch.chdir(tmp_path)
    for k, v in n.env.items():
        monkeypatch.setenv(k, v)
    refused = CliRunner().invoke(app, ["correct"])
    assert refused.exit_code == 3 and "guardian calls pause()" in refused.output

    chain.transact(n.guardian, d.pause())
    chain.mine(1)  # a live chain moves on: claims are read at a block of the pause
    out = _correct(monkeypatch, n, tmp_path)
    assert "correction pending until validAt" in out and "stage: pending" in out
    (row,) = [r for r in sub.rows.all() if r.kind == sdb.CORRECTION]
    assert row.status == sdb.MINED and row.corrects == bad_hash

    # The correcting manifest: leaves at max(recomputed, claimed), `corrects` the bad hash,
    # claims read at a block of this pause, chained to epoch 2's manifest.
    manifest_path = Path(row.data_uri)
    manifest = manifest_path.read_bytes()
    assert "0x" + dataset.data_hash(manifest).hex() == row.data_hash == d.pending_root().data_hash
    doc = json.loads(manifest)
    assert doc["corrects"] == bad_hash and doc["epoch"] == "2"
    assert row.claimed_at_block is not None and doc["claimedAtBlock"] == str(row.claimed_at_block)
    assert d.paused_at_block() <= row.claimed_at_block < chain.block_number()
    epoch2 = EpochStore(n.store).get(2)
    assert epoch2 is not None
    assert doc["prevManifestHash"] == "0x" + dataset.data_hash(epoch2.manifest).hex()
    assert doc["floor"] == "0x" + "00" * 32
    assert any(
        e.name == "CorrectionProposed" and e.args["dataHash"] == row.data_hash
        for e in c.read_events(d, n.deployment.block)
    )
    fixed = MerkleTree.load(Path(row.dump_path).read_bytes())
    leaves = dict(fixed.values)
    assert leaves[attacker] == 500 * 10**18  # what it took, and not a unit more
    assert leaves[inflated] == good[inflated] + 10 * 10**18
    assert leaves[bystander] == good[bystander]
    assert late not in leaves and leaves[unclaimed] == good[unclaimed]
    assert fixed.root != bad.root
    assert {a: v for a, v in leaves.items() if a not in (attacker, inflated)} == {
        a: v for a, v in good.items() if a != inflated and v > 0
    }
    assert int(doc["cumulativeTotal"]) == fixed.cumulative_total <= d.total_funded()

    chain.increase_time(HOUR)
    out = _correct(monkeypatch, n, tmp_path)
    assert "Guardian: call unpause()" in out and "stage: accepted" in out
    assert d.root() == fixed.root and d.previous_root() == "0x" + "00" * 32
    assert d.paused() and d.current_epoch() == 2
    again = _correct(monkeypatch, n, tmp_path)  # a re-run proposes nothing twice
    assert "stage: unchanged" in again and "nothing to propose" in again
    with pytest.raises(ContractRevert) as stale:  # the bad root is no longer claimable
        chain.build(n.relayer, d.claim(attacker, bad_values[attacker] + 1, bad.proof_for(attacker)))
    assert stale.value.error in ("EnforcedPause", "InvalidProof")

    chain.transact(n.guardian, d.unpause())
    with pytest.raises(ContractRevert) as invalid:
        chain.build(n.relayer, d.claim(attacker, bad_values[attacker] + 1, bad.proof_for(attacker)))
    assert invalid.value.error == "InvalidProof"
    accounts = [a for a, _ in fixed.values]
    c.relay_claims(n.relayer, d, c.claim_infos(d, fixed, accounts), batch_size=100)
    for account, amount in fixed.values:
        assert d.token.balance_of(account) == amount == d.claimed(account)

    # The submitter goes on from the corrected epoch: epochs 3-4, built under the floor (the
    # correction's leaves) and chained to the correction; everyone whole again.
    n.close(4)
    epochs = EpochStore(n.store)
    assert "0x" + epochs.floor().data_hash.hex() == row.data_hash
    three = json.loads(epochs.get(3).manifest)
    assert three["floor"] == row.data_hash and three["prevManifestHash"] == row.data_hash
    (nxt,) = sub.step()
    assert (nxt.first_epoch, nxt.epoch, nxt.status) == (3, 4, sdb.MINED)
    chain.increase_time(HOUR)
    assert sub.step()[0].status == sdb.ACCEPTED
    final = _balances(n, 4)
    tree = MerkleTree.load(Path(nxt.dump_path).read_bytes())
    c.relay_claims(n.relayer, d, c.claim_infos(d, tree, [a for a, _ in tree.values]))
    for account, amount in final.items():
        want = max(amount, leaves.get(account, 0))
        assert d.token.balance_of(account) == want
    assert d.token.balance_of(attacker) == 500 * 10**18
    assert d.token.balance_of(late) == 0
    superseded = [r for r in sub.rows.all() if r.status == sdb.SUPERSEDED]
    assert [r.id for r in superseded] == [bad_row.id]
    assert sum(final.values()) == 4 * EMISSION
    one_proposal_per_root(n)

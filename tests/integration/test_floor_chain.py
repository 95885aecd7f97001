"""The floor after a correction, end to end on the embedded chain (py-evm) and on anvil
(PROTOCOL 6-7): the poster key posts a root that overpays an account, which claims it; the
service stops proposing; the guardian pauses; `run_correction` publishes and proposes a
correction (proposeCorrection with claimedAtBlock) and accepts it; the guardian unpauses;
then three ordinary epochs. Every root is accepted, the contract's total never falls, and
at the end every account has been paid exactly max(balance, what it had claimed at the
correction), with the contract solvent to the unit."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.anvil import Anvil
from test_submitter_anvil import ANVIL, EMISSION, EPOCH, HOUR, Net, make_net

from settlement.adapters import chain as c
from settlement.adapters.db import submitter as sdb
from settlement.adapters.db.epochs import CloseReader, EpochStore
from settlement.domain import dataset
from settlement.domain.merkle import MerkleTree
from settlement.services import epochs as epochs_service
from settlement.services import submit as submitter_mod
from settlement.services.correct import run_correction
from settlement.services.submit import Candidate

ZERO = "0x" + "00" * 32


# The anvil case starts a node: slow, as every anvil test (the embedded chain is not).
@pytest.fixture(params=["embedded", pytest.param("anvil", marks=pytest.mark.slow)])
def net(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Net]:
    if request.param == "embedded":
        n = make_net(tmp_path, "", funded_epochs=8, window=6 * EPOCH)
        try:
            yield n
        finally:
            n.store.close()
        return
    with Anvil(ANVIL) as node:
        n = make_net(tmp_path, node.url, funded_epochs=8, window=6 * EPOCH)
        try:
            yield n
        finally:
            n.store.close()


def _balances(n: Net, epoch: int) -> dict[str, int]:
    epochs = EpochStore(n.store)
    rows = epochs.run(lambda cur: CloseReader(epochs, cur).balances(epoch + 1))
    return {"0x" + a.hex(): x + y + z for a, (x, y, z) in rows.items()}


def _accepted(n: Net, sub: submitter_mod.Submitter) -> sdb.Proposal:
    (row,) = sub.step()
    assert row.status == sdb.MINED, row
    n.chain.increase_time(HOUR)
    (row,) = sub.step()
    assert row.status == sdb.ACCEPTED, row
    return row


def _solvent(d: c.Distributor, paid: int) -> None:
    assert d.total_funded() >= d.cumulative_total()
    assert d.token.balance_of(d.address) == d.total_funded() - paid


def test_overpaid_by_a_bad_root_then_corrected_then_three_epochs(net: Net) -> None:
    n, d, chain = net, net.distributor, net.chain
    sub = n.submitter()
    n.close(1)
    _accepted(n, sub)
    totals = [d.cumulative_total()]

    # The poster key (not the service) posts a root that overpays the top earner and an
    # outsider; both claim it before anyone notices.
    good = _balances(n, 1)
    top = max(good, key=lambda a: good[a])
    outsider = c.Key.generate("outsider").address.lower()
    bad_values = dict(good)
    bad_values[top] += 50 * 10**18
    bad_values[outsider] = 7 * 10**18
    bad = MerkleTree.of(sorted(bad_values.items()))
    chain.transact(
        n.poster, d.propose_root(2, bad.root, bad.cumulative_total, "0x" + "bd" * 32, "x")
    )
    chain.increase_time(HOUR)
    chain.transact(n.relayer, d.accept_root())
    totals.append(d.cumulative_total())
    paid = 0
    for account in (top, outsider):
        paid += c.send_claim(n.relayer, d, c.claim_info(d, bad, account)).total
    claimed_at_correction = {top: bad_values[top], outsider: bad_values[outsider]}

    # The service closes on, but proposes nothing over a root it did not make.
    n.close(2)
    assert sub.step() == []
    assert submitter_mod.FOREIGN_ROOT._value.get() == 1
    assert d.root() == bad.root

    # The guardian pauses; the correction is planned, published and proposed.
    chain.transact(n.guardian, d.pause())
    chain.mine(1)  # a live chain moves on: claims are read at a block of the pause
    state = run_correction(sub)
    assert state.stage == "pending" and state.row is not None
    row = state.row
    assert row.kind == sdb.CORRECTION and row.claimed_at_block is not None
    assert d.paused_at_block() <= row.claimed_at_block
    manifest = Path(row.data_uri).read_bytes()
    doc = json.loads(manifest)
    epochs = EpochStore(n.store)
    two = epochs.get(2)
    assert two is not None
    assert doc["corrects"] == "0x" + "bd" * 32 and doc["epoch"] == "2"
    assert doc["claimedAtBlock"] == str(row.claimed_at_block) and doc["floor"] == ZERO
    assert doc["prevManifestHash"] == "0x" + dataset.data_hash(two.manifest).hex()
    fixed = MerkleTree.load(Path(row.dump_path).read_bytes())
    leaves = dict(fixed.values)
    after2 = _balances(n, 2)
    assert leaves[top] == max(after2[top], bad_values[top])
    assert leaves[outsider] == bad_values[outsider]
    assert epochs.floor().data_hash == bytes(32)  # not in force until accepted

    # Epoch 3 closes before the correction is accepted: under the older floor, never proposed.
    n.close(3)
    three = epochs.get(3)
    assert three is not None and three.floor == bytes(32) and three.proposes
    assert json.loads(three.manifest)["prevManifestHash"] == row.data_hash

    chain.increase_time(HOUR)
    state = run_correction(sub)
    assert state.stage == "accepted"
    assert d.root() == fixed.root and d.previous_root() == ZERO and d.paused()
    floor = epochs.floor()
    assert "0x" + floor.data_hash.hex() == row.data_hash
    assert {"0x" + a.hex(): v for a, v in floor.leaves.items()} == leaves
    totals.append(d.cumulative_total())
    # A correction accepted without its leaves as the floor (a version 1 store) stops it too.
    epochs.run(lambda cur: cur.execute("UPDATE correction SET accepted_block = NULL"), write=True)
    assert "before protocol version 2" in (sub.foreign_root() or "")
    assert epochs.accept_correction(bytes.fromhex(row.data_hash[2:]), 1)
    assert sub.foreign_root() is None
    chain.transact(n.guardian, d.unpause())
    assert sub.step() == []  # epoch 3 was built under the older floor
    assert submitter_mod.STALE_FLOOR._value.get() == 3

    # Three ordinary epochs: each built under the floor, chained, accepted (4 folds 3).
    prev_hash = "0x" + three.data_hash.hex()
    for epoch in (4, 5, 6):
        n.close(epoch)
        stored = epochs.get(epoch)
        assert stored is not None and stored.proposes
        m = json.loads(stored.manifest)
        assert m["floor"] == row.data_hash and m["prevManifestHash"] == prev_hash
        prev_hash = "0x" + stored.data_hash.hex()
        accepted = _accepted(n, sub)
        assert accepted.epoch == epoch and d.current_epoch() == epoch
        assert accepted.first_epoch == (3 if epoch == 4 else epoch)
        assert submitter_mod.STALE_FLOOR._value.get() == 0
        totals.append(d.cumulative_total())
        assert submitter_mod.FOREIGN_ROOT._value.get() == 0
        _solvent(d, paid)
    assert totals == sorted(totals), totals  # the contract's total never fell

    # The outsider earned nothing, yet keeps a leaf at what it claimed (no proof fails it).
    view = epochs_service.account(n.store, n.settings, bytes.fromhex(outsider[2:]))
    assert view.total == 0 and view.leaf == bad_values[outsider] and view.proof is not None

    # Everybody claims: exactly max(balance, claimed at the correction), solvent to the unit.
    final = _balances(n, 6)
    tree = MerkleTree.load(Path(accepted.dump_path).read_bytes())
    infos = [i for i in c.claim_infos(d, tree, [a for a, _ in tree.values]) if i.claimable > 0]
    paid += sum(r.total for r in c.relay_claims(n.relayer, d, infos, batch_size=50))
    for account in set(final) | set(claimed_at_correction):
        want = max(final.get(account, 0), claimed_at_correction.get(account, 0))
        assert d.claimed(account) == want == d.token.balance_of(account), account
    assert paid == d.cumulative_total() == sum(dict(tree.values).values())
    _solvent(d, paid)
    assert d.token.balance_of(d.address) == d.total_funded() - d.cumulative_total()
    assert sum(final.values()) == 6 * EMISSION


def test_a_pause_that_races_a_proposal_stages_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The guardian's pause is mined after the submitter's checks and gas estimate, before
    its proposal: the proposal reverts (EnforcedPause) and nothing is staged, above all no
    correction (in version 1 the contract staged it as one)."""
    n = make_net(tmp_path, "")
    try:
        d = n.distributor
        n.close(1)
        sub = n.submitter()
        send = n.chain.send

        def pause_first(prepared: c.PreparedTx) -> str:
            if prepared.sender.lower() == n.poster.address.lower() and not d.paused():
                n.chain.transact(n.guardian, d.pause())
            return send(prepared)

        monkeypatch.setattr(n.chain, "send", pause_first)
        (row,) = sub.step()
        assert row.status == sdb.FAILED and "reverted" in (row.note or "")
        assert d.paused() and d.pending_root() is None and d.current_epoch() == 0
        assert not [e for e in c.read_events(d, n.deployment.block) if "Proposed" in e.name]
    finally:
        n.store.close()


def test_a_tree_below_the_chain_total_is_never_sent(tmp_path: Path) -> None:
    n = make_net(tmp_path, "")
    try:
        n.close(1)
        sub = n.submitter()
        _accepted(n, sub)
        total = n.distributor.cumulative_total()
        below = Candidate(2, 2, "0x" + "ab" * 32, total - 1, "0x" + "cd" * 32, "x")
        assert sub.propose(below) is None
        assert submitter_mod.BELOW_CHAIN._value.get() == 1
        assert n.distributor.pending_root() is None and n.distributor.current_epoch() == 1
        assert len(sub.rows.all()) == 1
    finally:
        n.store.close()

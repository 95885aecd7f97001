"""The chain adapter on the embedded eth-tester (py-evm) chain: deploy, fund, propose, claims,
claimMany, the Claimed indexer, ready calldata, refusals before sending, keys."""

from __future__ import annotations

import dataclasses
import json
import pickle
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from settlement.adapters import chain as c
from settlement.adapters.keys import Key, load_key, load_optional_key, save_keystore
from settlement.client.claims import claim_info_from_service
from settlement.config import Settings
from settlement.domain.merkle import MerkleTree
from settlement.errors import (
    ChainError,
    ConfigError,
    ContractRevert,
    DeploymentMissing,
    DistributorPaused,
    InputError,
    InsolventProposal,
    KeyUnavailable,
    NothingToClaim,
    StaleClaims,
)

VECTORS = json.loads((Path(__file__).resolve().parents[1] / "vectors" / "merkle.json").read_text())
DATA_HASH = "0x" + "ab" * 32
SUPPLY = 2**100  # above the vectors' cumulative total of 2**96


def vector_tree() -> MerkleTree:
    tree = MerkleTree.of([(leaf["account"], int(leaf["amount"])) for leaf in VECTORS["leaves"]])
    assert tree.root == VECTORS["root"]
    return tree


@pytest.fixture
def chain() -> c.Chain:
    return c.connect(Settings(rpc_url=None))


@pytest.fixture
def dev(chain: c.Chain) -> tuple[c.Chain, Key, c.Distributor]:
    admin = chain.dev_key(0)
    record = c.deploy(
        chain,
        admin,
        challenge_period=0,
        dev=True,
        mint=SUPPLY,
        fund=int(VECTORS["cumulativeTotal"]),
    )
    return chain, admin, c.Distributor(chain, record.distributor)


def test_deploy_hands_roles_to_separate_keys_and_records_them(
    chain: c.Chain, tmp_path: Path
) -> None:
    admin, poster, guardian, treasury = (
        Key.generate(n) for n in ("admin", "poster", "guardian", "treasury")
    )
    chain.set_balance(admin.address, 10**20)
    record = c.deploy(
        chain,
        admin,
        poster=poster.address,
        guardian=guardian.address,
        challenge_period=3600,
        mint=10**24,
        fund=10**23,
        minters=[treasury.address],
    )
    d = c.Distributor(chain, record.distributor)
    assert d.challenge_period() == 3600
    assert d.has_role(c.POSTER_ROLE, poster.address) and not d.has_role(
        c.POSTER_ROLE, admin.address
    )
    assert d.has_role(c.GUARDIAN_ROLE, guardian.address) and not d.has_role(
        c.GUARDIAN_ROLE, admin.address
    )
    assert d.has_role(c.DEFAULT_ADMIN_ROLE, admin.address)
    assert d.token.has_role(c.MINTER_ROLE, treasury.address)
    assert d.total_funded() == 10**23 == d.token.balance_of(d.address)
    assert d.token.balance_of(admin.address) == 10**24 - 10**23

    path = tmp_path / "deployment.json"
    c.save_deployment(record, path)
    doc = json.loads(path.read_text())
    assert doc["chainId"] == chain.chain_id and doc["distributor"] == d.address
    assert doc["roles"]["poster"] == poster.address and doc["roles"]["guardian"] == guardian.address
    assert c.load_deployment(path, chain) == record
    other = c.connect(Settings(rpc_url=None))  # a fresh embedded chain has no such contract
    with pytest.raises(DeploymentMissing, match="no contract"):
        c.load_deployment(path, other)
    with pytest.raises(DeploymentMissing, match="settlement deploy"):
        c.load_deployment(tmp_path / "missing.json")


def test_deploy_refusals_send_nothing(chain: c.Chain) -> None:
    admin = chain.dev_key(0)
    start = chain.block_number()
    with pytest.raises(ConfigError, match="challenge period of 0"):
        c.deploy(
            chain,
            admin,
            poster=Key.generate().address,
            guardian=Key.generate().address,
            challenge_period=0,
        )
    with pytest.raises(ConfigError, match="no poster and guardian key"):
        c.deploy(chain, admin, challenge_period=60)
    with pytest.raises(ConfigError, match="three different keys"):
        c.deploy(
            chain, admin, poster=admin.address, guardian=Key.generate().address, challenge_period=60
        )
    assert chain.block_number() == start


def test_insolvent_proposal_is_refused_with_the_shortfall_before_sending(dev) -> None:
    chain, admin, d = dev
    tree = vector_tree()
    funded = d.total_funded()
    start, nonce = chain.block_number(), chain.nonces.resync(admin.address)
    with pytest.raises(InsolventProposal) as refused:
        c.submit_proposal(admin, d, 1, tree.root, funded + 12345, DATA_HASH, "ipfs://x")
    assert refused.value.shortfall == 12345
    assert "fund(12345)" in str(refused.value)
    assert chain.block_number() == start
    assert chain.nonces.resync(admin.address) == nonce
    # The contract agrees (the estimate reverts with the decoded custom error).
    with pytest.raises(ContractRevert) as reverted:
        chain.build(admin, d.propose_root(1, tree.root, funded + 1, DATA_HASH, ""))
    assert reverted.value.error == "Insolvent"


def test_propose_claim_relay_index_and_calldata(dev) -> None:
    chain, admin, d = dev
    tree = vector_tree()
    values = tree.values
    block0 = chain.block_number() + 1

    mined = c.submit_proposal(
        admin, d, 1, tree.root, tree.cumulative_total, DATA_HASH, "ipfs://epoch1"
    )
    assert mined.status == 1
    assert d.root() == tree.root and d.current_epoch() == 1  # challenge period 0: accepted at once
    assert d.cumulative_total() == tree.cumulative_total
    names = [e.name for e in c.read_events(d, block0)]
    assert names == ["RootProposed", "RootAccepted"]

    # One claim from a relayer key: tokens go to the account, the receipt tells what was paid.
    relayer = Key.generate("relayer")
    chain.set_balance(relayer.address, 10**19)
    account, amount = values[1]
    info = c.claim_info(d, tree, account)
    assert (
        info.claimable == amount
        and info.distributor == d.address
        and info.chain_id == chain.chain_id
    )
    assert info.to_json()["claimable"] == str(amount)
    result = c.send_claim(relayer, d, info)
    assert result.paid == {account: amount}
    assert d.token.balance_of(account) == amount == d.claimed(account)
    with pytest.raises(NothingToClaim):
        c.send_claim(relayer, d, c.claim_info(d, tree, account))
    with pytest.raises(ContractRevert) as again:
        chain.build(relayer, d.claim(account, amount, info.proof))
    assert again.value.error == "NothingToClaim"

    # The ready calldata is enough for a wallet: send it as is.
    account2, amount2 = values[2]
    ready = c.claim_info(d, tree, account2)
    chain.transact(relayer, c.Call(ready.distributor, ready.calldata, "wallet claim"))
    assert d.token.balance_of(account2) == amount2

    # A wrong proof is refused with its error name.
    with pytest.raises(ContractRevert) as bad:
        chain.build(relayer, d.claim(values[3][0], values[3][1], info.proof))
    assert bad.value.error == "InvalidProof"

    # The rest through claimMany in batches of 3; already-claimed accounts are skipped.
    infos = c.claim_infos(d, tree, [a for a, _ in values])
    results = c.relay_claims(relayer, d, infos, batch_size=3)
    paid = {a: n for r in results for a, n in r.paid.items()}
    assert paid == {a: n for a, n in values if a not in (account, account2)}
    assert len(results) == -(-(len(values) - 2) // 3)
    for a, n in values:
        assert d.token.balance_of(a) == n == d.claimed(a)
    assert c.relay_claims(relayer, d, c.claim_infos(d, tree, [a for a, _ in values[:6]])) == []

    # The indexer sees every claim; its cursor continues where it stopped.
    scan = c.scan_claims(d, block0)
    assert scan.claimed == dict(values) and scan.paid == dict(values)
    assert len(scan.events) == len(values)
    assert scan.next_block == chain.block_number() + 1
    assert c.scan_claims(d, scan.next_block).events == []

    # Epoch 2 raises two balances; a claim pays the difference, and a proof from epoch 1
    # still verifies against previousRoot (nothing left there, so NothingToClaim).
    grown = dict(values)
    grown[values[0][0]] += 7
    grown[values[4][0]] += 11
    tree2 = MerkleTree.of(sorted(grown.items()))
    c.fund_distributor(admin, d, 18)
    c.submit_proposal(admin, d, 2, tree2.root, tree2.cumulative_total, DATA_HASH, "ipfs://epoch2")
    assert d.previous_root() == tree.root
    r = c.send_claim(relayer, d, c.claim_info(d, tree2, values[0][0]))
    assert r.paid == {values[0][0]: 7}
    old = c.claim_info(d, tree, values[4][0])  # the previous root is still claimable against
    assert old.claimable == 0
    rest = c.relay_claims(relayer, d, c.claim_infos(d, tree2, grown))
    assert [x.paid for x in rest] == [{values[4][0]: 11}]
    assert c.scan_claims(d, scan.next_block).paid == {values[0][0]: 7, values[4][0]: 11}
    assert d.token.balance_of(d.address) == d.total_funded() - tree2.cumulative_total


def _lowered(tree: MerkleTree) -> MerkleTree:
    """The tree with its largest leaf halved: a correction with a lower total."""
    top = max(tree.values, key=lambda v: v[1])
    return MerkleTree.of(sorted((a, n // 2 if (a, n) == top else n) for a, n in tree.values))


def test_paused_distributor_refuses_ordinary_proposals_before_and_on_chain(dev) -> None:
    chain, admin, d = dev
    tree = vector_tree()
    c.submit_proposal(admin, d, 1, tree.root, tree.cumulative_total, DATA_HASH, "")
    assert d.paused_at_block() == 0
    paused = chain.transact(admin, d.pause())
    assert d.paused() and d.paused_at_block() == paused.block_number
    fix = _lowered(tree)
    with pytest.raises(DistributorPaused, match="propose_correction"):
        c.submit_proposal(admin, d, 2, fix.root, fix.cumulative_total, DATA_HASH, "")
    with pytest.raises(DistributorPaused):  # the contract agrees: EnforcedPause, decoded
        chain.build(admin, d.propose_root(2, fix.root, fix.cumulative_total, DATA_HASH, ""))
    assert d.pending_root() is None


def test_correction_needs_a_pause(dev) -> None:
    chain, admin, d = dev
    tree = vector_tree()
    c.submit_proposal(admin, d, 1, tree.root, tree.cumulative_total, DATA_HASH, "")
    fix = _lowered(tree)
    head = chain.block_number()
    with pytest.raises(ContractRevert) as refused:
        c.submit_proposal(
            admin,
            d,
            1,
            fix.root,
            fix.cumulative_total,
            DATA_HASH,
            "",
            correction=True,
            claimed_at_block=head,
        )
    assert refused.value.error == "ExpectedPause"
    with pytest.raises(ContractRevert) as reverted:
        chain.build(
            admin, d.propose_correction(1, fix.root, fix.cumulative_total, DATA_HASH, "", head)
        )
    assert reverted.value.error == "ExpectedPause"
    with pytest.raises(InputError, match="claimed_at_block"):
        c.submit_proposal(
            admin, d, 1, fix.root, fix.cumulative_total, DATA_HASH, "", correction=True
        )


def test_correction_with_a_stale_reading_is_refused_before_and_on_chain(dev) -> None:
    chain, admin, d = dev
    tree = vector_tree()
    c.submit_proposal(admin, d, 1, tree.root, tree.cumulative_total, DATA_HASH, "")
    read_before = chain.block_number()  # claimed amounts read here, before the pause
    paused = chain.transact(admin, d.pause())
    fix = _lowered(tree)
    nonce = chain.nonces.resync(admin.address)
    with pytest.raises(StaleClaims, match=f"paused at block {paused.block_number}"):
        c.submit_proposal(
            admin,
            d,
            1,
            fix.root,
            fix.cumulative_total,
            DATA_HASH,
            "",
            correction=True,
            claimed_at_block=read_before,
        )
    assert chain.nonces.resync(admin.address) == nonce  # nothing sent
    with pytest.raises(StaleClaims) as reverted:  # the contract agrees, decoded
        chain.build(
            admin,
            d.propose_correction(1, fix.root, fix.cumulative_total, DATA_HASH, "", read_before),
        )
    assert reverted.value.error == "StaleClaims"
    with pytest.raises(StaleClaims):  # a block not mined yet cannot have been read either
        c.submit_proposal(
            admin,
            d,
            1,
            fix.root,
            fix.cumulative_total,
            DATA_HASH,
            "",
            correction=True,
            claimed_at_block=chain.block_number() + 1,
        )
    assert d.pending_root() is None


def test_correction_is_proposed_listed_and_accepted_under_pause(dev) -> None:
    chain, admin, d = dev
    tree = vector_tree()
    block0 = chain.block_number() + 1
    c.submit_proposal(admin, d, 1, tree.root, tree.cumulative_total, DATA_HASH, "ipfs://1")
    paused = chain.transact(admin, d.pause())
    fix = _lowered(tree)
    fix_hash = "0x" + "ef" * 32
    with pytest.raises(StaleClaims, match="wait for one more"):  # nodes simulate at the head
        c.submit_proposal(
            admin,
            d,
            1,
            fix.root,
            fix.cumulative_total,
            fix_hash,
            "",
            correction=True,
            claimed_at_block=paused.block_number,
        )
    chain.mine(1)
    mined = c.submit_proposal(
        admin,
        d,
        1,
        fix.root,
        fix.cumulative_total,
        fix_hash,
        "ipfs://fix",
        correction=True,
        claimed_at_block=paused.block_number,
    )
    # Staged even with a zero challenge period; the event is CorrectionProposed.
    assert d.root() == tree.root
    assert d.pending_root() == c.PendingRoot(
        1,
        fix.root,
        fix.cumulative_total,
        fix_hash,
        chain.w3.eth.get_block(mined.block_number)["timestamp"],
    )
    (event,) = c.read_events(d, mined.block_number, mined.block_number)
    assert event.name == "CorrectionProposed"
    assert event.args["root"] == fix.root and event.args["dataURI"] == "ipfs://fix"
    history = c.root_history(d, fix.root, block0)
    assert history.status == "pending" and [e.name for e in history.proposals] == [
        "CorrectionProposed"
    ]
    found = c.find_proposal(d, fix.root, block0)
    assert found is not None and found.args["dataHash"] == fix_hash
    assert c.find_proposal(d, tree.root, block0).args["dataHash"] == DATA_HASH
    assert c.find_proposal(d, "0x" + "77" * 32, block0) is None

    with pytest.raises(ContractRevert) as refused:  # unpause waits for the correction
        chain.build(admin, d.unpause())
    assert refused.value.error == "RootPending"
    chain.transact(admin, d.accept_root())
    assert d.paused() and d.root() == fix.root and d.previous_root() == "0x" + "00" * 32
    assert c.root_history(d, fix.root, block0).status == "accepted"
    names = [e.name for e in c.read_events(d, block0)]
    assert names == ["RootProposed", "RootAccepted", "Paused", "CorrectionProposed", "RootAccepted"]
    chain.transact(admin, d.unpause())
    account, amount = max(fix.values, key=lambda v: v[1])
    assert amount > 0
    assert c.send_claim(admin, d, c.claim_info(d, fix, account)).paid == {account: amount}


def test_claim_info_refuses_a_tree_that_is_not_on_chain(dev) -> None:
    _chain, _admin, d = dev
    tree = vector_tree()
    with pytest.raises(ChainError, match="not the distributor's accepted root"):
        c.claim_info(d, tree, tree.values[0][0])


def test_prepared_tx_survives_persistence_between_sign_and_send(dev) -> None:
    chain, admin, d = dev
    tree = vector_tree()
    call = d.propose_root(1, tree.root, tree.cumulative_total, DATA_HASH, "ipfs://1")
    prepared = chain.build(admin, call)
    stored = prepared.to_json()
    assert json.loads(stored)["nonce"] == str(prepared.nonce)
    restored = c.PreparedTx.from_json(stored)
    assert restored == prepared
    assert chain.lookup(restored.tx_hash) is None and not chain.is_pending(restored.tx_hash)
    assert chain.send(restored) == prepared.tx_hash
    assert chain.send(restored) == prepared.tx_hash  # sending the same bytes again is harmless
    mined = chain.wait(restored)
    assert mined.tx_hash == prepared.tx_hash
    assert chain.nonces.mined_count(admin.address) == prepared.nonce + 1
    events = c.read_events(d, mined.block_number, mined.block_number, names=("RootProposed",))
    assert events[0].args["root"] == tree.root and events[0].args["dataURI"] == "ipfs://1"
    assert events[0].tx_hash == mined.tx_hash


def test_a_signed_but_never_sent_tx_is_broadcast_by_wait(dev) -> None:
    # A crash after persisting the PreparedTx and before send: the restarted process waits on
    # what it stored, and wait() finds the node does not know it and broadcasts it.
    chain, admin, d = dev
    stored = chain.build(admin, d.token.transfer(d.address, 5)).to_json()
    prepared = c.PreparedTx.from_json(stored)
    assert not chain.is_pending(prepared.tx_hash)
    mined = chain.wait(prepared, timeout=10)
    assert mined.tx_hash == prepared.tx_hash and mined.status == 1
    assert d.token.balance_of(d.address) == d.total_funded() + 5


def test_claim_from_a_service_document(dev) -> None:
    _chain, admin, d = dev
    tree = vector_tree()
    c.submit_proposal(admin, d, 1, tree.root, tree.cumulative_total, DATA_HASH, "")
    account, amount = tree.values[5]
    body = json.dumps(c.claim_info(d, tree, account).to_json()).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            ok = self.path == f"/v1/accounts/{account}/claim"
            self.send_response(200 if ok else 404)
            self.send_header("content-type", "application/json")
            self.end_headers()
            self.wfile.write(body if ok else b"{}")

        def log_message(self, *args) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        info = claim_info_from_service(url + "/", account)
        with pytest.raises(InputError, match="no reward"):
            claim_info_from_service(url, tree.values[0][0])
    finally:
        server.shutdown()
        server.server_close()
    assert info.cumulative_amount == amount and info.claimable == amount
    fresh = c.refresh_claim(d, info)
    assert c.send_claim(admin, d, fresh).paid == {account: amount}
    assert c.refresh_claim(d, info).claimable == 0
    with pytest.raises(ChainError, match="names contract"):
        c.refresh_claim(d, dataclasses.replace(info, distributor=d.token.address))


def test_fees_bump_by_at_least_the_percent() -> None:
    fees = c.Fees(100, 10)
    bumped = fees.bumped(10)
    assert bumped == c.Fees(110, 11)
    assert c.Fees(101, 1).bumped(10) == c.Fees(112, 2)  # rounded up, as nodes compare
    assert fees.bumped(10, floor=c.Fees(500, 20)) == c.Fees(500, 20)
    assert fees.bumped(50, cap=120) == c.Fees(120, 15)


def test_keys_never_show_their_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = Key.generate("poster")
    secret = "0x" + key._account.key.hex()
    assert secret[2:] not in repr(key) and secret[2:] not in str(key)
    assert key.address in repr(key)
    with pytest.raises(TypeError):
        pickle.dumps(key)

    settings = Settings(poster_key_env="TEST_W2E_POSTER")
    monkeypatch.delenv("TEST_W2E_POSTER", raising=False)
    assert load_optional_key(settings, "poster") is None
    with pytest.raises(KeyUnavailable, match="TEST_W2E_POSTER"):
        load_key(settings, "poster")
    monkeypatch.setenv("TEST_W2E_POSTER", secret)
    assert load_key(settings, "poster").address == key.address
    monkeypatch.setenv("TEST_W2E_POSTER", secret[:-1] + "g")
    with pytest.raises(KeyUnavailable) as bad:
        load_key(settings, "poster")
    assert secret[2:-1] not in str(bad.value)

    path = tmp_path / "poster.json"
    save_keystore(key, path, "pw", kdf="pbkdf2", iterations=2)
    assert secret[2:] not in path.read_text()
    with_file = Settings(poster_keystore=str(path), poster_password_env="TEST_W2E_POSTER_PW")
    monkeypatch.setenv("TEST_W2E_POSTER_PW", "pw")
    assert load_key(with_file, "poster").address == key.address
    monkeypatch.setenv("TEST_W2E_POSTER_PW", "wrong")
    with pytest.raises(KeyUnavailable, match="wrong password"):
        load_key(with_file, "poster")
    monkeypatch.delenv("TEST_W2E_POSTER_PW")
    assert load_key(with_file, "poster", prompt=lambda _: "pw").address == key.address
    with pytest.raises(KeyUnavailable, match="TEST_W2E_POSTER_PW"):
        load_key(with_file, "poster", prompt=None)

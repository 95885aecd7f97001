"""The chain adapter against anvil (npm @foundry-rs/anvil) on a free 127.0.0.1 port: challenge
period, revoke, pause, a same-nonce fee bump, a restart from --state, and the CLI."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from storekit import skip_module_without
from support.anvil import Anvil, find_anvil
from typer.testing import CliRunner

from settlement.adapters import chain as c
from settlement.adapters.keys import Key, save_keystore
from settlement.cli.main import app
from settlement.domain.merkle import MerkleTree
from settlement.errors import (
    ContractRevert,
    DistributorPaused,
    RpcUnavailable,
    StaleClaims,
    TransactionFailed,
)

pytestmark = pytest.mark.slow  # starts anvil nodes

ANVIL = find_anvil()
if ANVIL is None:
    skip_module_without("anvil (node_modules)")

DATA_HASH = "0x" + "cd" * 32
HOUR = 3600


@pytest.fixture
def anvil() -> Iterator[Anvil]:
    with Anvil(ANVIL) as node:  # __exit__ kills it whatever the test did
        yield node


def _keys(chain: c.Chain, *names: str) -> list[Key]:
    keys = [Key.generate(n) for n in names]
    for k in keys:
        chain.set_balance(k.address, 10**20)
    return keys


def _setup(chain: c.Chain, challenge_period: int = HOUR, accounts: int = 6):
    admin, poster, guardian, relayer = _keys(chain, "admin", "poster", "guardian", "relayer")
    values = sorted((Key.generate().address.lower(), (i + 1) * 10**18 + i) for i in range(accounts))
    tree = MerkleTree.of(values)
    record = c.deploy(
        chain,
        admin,
        poster=poster.address,
        guardian=guardian.address,
        challenge_period=challenge_period,
        mint=10**24,
        fund=tree.cumulative_total,
    )
    return c.Distributor(chain, record.distributor), tree, poster, guardian, relayer


def test_challenge_period_then_accept_and_claim(anvil: Anvil) -> None:
    chain = c.connect(rpc_url=anvil.url)
    d, tree, poster, _guardian, relayer = _setup(chain)
    start = chain.block_number()
    mined = c.submit_proposal(poster, d, 1, tree.root, tree.cumulative_total, DATA_HASH, "ipfs://1")
    pending = d.pending_root()
    stamp = chain.w3.eth.get_block(mined.block_number)["timestamp"]
    assert pending == c.PendingRoot(1, tree.root, tree.cumulative_total, DATA_HASH, stamp + HOUR)
    assert d.root() == "0x" + "00" * 32
    with pytest.raises(ContractRevert) as early:
        chain.build(relayer, d.accept_root())
    assert early.value.error == "TooEarly"
    with pytest.raises(ContractRevert) as twice:
        c.submit_proposal(poster, d, 2, tree.root, tree.cumulative_total, DATA_HASH, "")
    assert twice.value.error == "RootPending"

    chain.increase_time(HOUR)
    chain.transact(relayer, d.accept_root())  # anyone may accept once due
    assert d.root() == tree.root and d.pending_root() is None and d.current_epoch() == 1
    events = c.read_events(d, start, names=("RootProposed", "RootAccepted"), chunk=2)
    assert [(e.name, e.args["epoch"], e.args["root"]) for e in events] == [
        ("RootProposed", 1, tree.root),
        ("RootAccepted", 1, tree.root),
    ]
    assert events[0].args["validAt"] == stamp + HOUR

    account, amount = tree.values[0]
    assert c.send_claim(relayer, d, c.claim_info(d, tree, account)).paid == {account: amount}
    results = c.relay_claims(
        relayer, d, c.claim_infos(d, tree, [a for a, _ in tree.values]), batch_size=2
    )
    assert sum(r.total for r in results) == tree.cumulative_total - amount
    for a, n in tree.values:
        assert d.token.balance_of(a) == n
    assert c.scan_claims(d, start).claimed == dict(tree.values)


def test_guardian_revokes_a_pending_root_and_the_epoch_is_proposed_again(anvil: Anvil) -> None:
    chain = c.connect(rpc_url=anvil.url)
    d, tree, poster, guardian, _relayer = _setup(chain)
    start = chain.block_number()
    c.submit_proposal(poster, d, 1, "0x" + "66" * 32, tree.cumulative_total, DATA_HASH, "bad")
    with pytest.raises(ContractRevert) as not_guardian:
        chain.build(poster, d.revoke_root())
    assert not_guardian.value.error == "AccessControlUnauthorizedAccount"
    chain.increase_time(2 * HOUR)  # revocable even after validAt
    chain.transact(guardian, d.revoke_root())
    assert d.pending_root() is None
    revoked = c.read_events(d, start, names=("RootRevoked",))
    assert [(e.args["epoch"], e.args["root"]) for e in revoked] == [(1, "0x" + "66" * 32)]
    with pytest.raises(ContractRevert) as nothing:
        chain.build(guardian, d.accept_root())
    assert nothing.value.error == "NoPendingRoot"

    c.submit_proposal(poster, d, 1, tree.root, tree.cumulative_total, DATA_HASH, "good")
    assert d.pending_root().root == tree.root
    assert c.root_history(d, "0x" + "66" * 32, start).status == "revoked"
    assert c.root_history(d, tree.root, start).status == "pending"
    chain.increase_time(HOUR)
    chain.transact(guardian, d.accept_root())
    history = c.root_history(d, tree.root, start)
    assert history.status == "accepted" and len(history.proposals) == 1
    assert history.proposals[0].args["dataURI"] == "good"
    assert c.root_history(d, "0x" + "77" * 32, start).status == "absent"


def test_wait_counts_confirmations(anvil: Anvil) -> None:
    chain = c.connect(rpc_url=anvil.url, poll_interval=0.02)
    (sender,) = _keys(chain, "sender")
    prepared = chain.build(
        sender, c.Call(Key.generate().address, "0x", "transfer", value=1), gas=21_000
    )
    chain.send(prepared)
    chain.mine(2)
    assert chain.wait(prepared, confirmations=3).tx_hash == prepared.tx_hash
    with pytest.raises(TransactionFailed, match="not yet 5 blocks deep"):
        chain.wait(prepared, confirmations=5, timeout=0.3)


def test_pause_blocks_claims_and_proposals_until_unpause(anvil: Anvil) -> None:
    chain = c.connect(rpc_url=anvil.url)
    d, tree, poster, guardian, relayer = _setup(chain, challenge_period=60)
    c.submit_proposal(poster, d, 1, tree.root, tree.cumulative_total, DATA_HASH, "")
    chain.increase_time(60)
    chain.transact(relayer, d.accept_root())
    infos = c.claim_infos(d, tree, [a for a, _ in tree.values])

    chain.transact(guardian, d.pause())
    assert d.paused() and d.root() == tree.root  # root() still reports the accepted root
    with pytest.raises(DistributorPaused):
        c.send_claim(relayer, d, infos[0])
    with pytest.raises(DistributorPaused):
        c.relay_claims(relayer, d, infos)
    with pytest.raises(DistributorPaused, match="propose_correction"):
        c.submit_proposal(poster, d, 2, tree.root, tree.cumulative_total, DATA_HASH, "")
    assert d.token.balance_of(infos[0].account) == 0

    chain.transact(guardian, d.unpause())
    assert c.send_claim(relayer, d, infos[0]).paid == {infos[0].account: infos[0].cumulative_amount}


def _accepted(
    chain: c.Chain, d: c.Distributor, tree: MerkleTree, poster: Key, relayer: Key
) -> None:
    c.submit_proposal(poster, d, 1, tree.root, tree.cumulative_total, DATA_HASH, "ipfs://1")
    chain.increase_time(HOUR)
    chain.transact(relayer, d.accept_root())


def _lowered(tree: MerkleTree) -> MerkleTree:
    top = max(tree.values, key=lambda v: v[1])
    return MerkleTree.of(sorted((a, n // 2 if (a, n) == top else n) for a, n in tree.values))


def _correct(poster: Key, d: c.Distributor, fix: MerkleTree, claimed_at_block: int) -> c.Mined:
    return c.submit_proposal(
        poster, d, 1, fix.root, fix.cumulative_total, DATA_HASH, "ipfs://fix", correction=True,
        claimed_at_block=claimed_at_block,
    )  # fmt: skip


def test_pause_racing_an_ordinary_proposal_makes_it_revert(anvil: Anvil) -> None:
    chain = c.connect(rpc_url=anvil.url)
    d, tree, poster, guardian, relayer = _setup(chain)
    _accepted(chain, d, tree, poster, relayer)
    start = chain.block_number() + 1
    d.check_proposal(tree.cumulative_total)  # the service's check passes: not paused
    prepared = chain.build(
        poster, d.propose_root(2, tree.root, tree.cumulative_total, DATA_HASH, "")
    )
    chain.transact(guardian, d.pause())  # lands first
    chain.send(prepared)
    with pytest.raises(TransactionFailed, match="EnforcedPause"):
        chain.wait(prepared)
    assert d.pending_root() is None and d.root() == tree.root
    assert c.read_events(d, start, names=c.PROPOSAL_EVENTS) == []
    chain.transact(guardian, d.unpause())  # no correction pending: the guardian is not stuck


def test_correction_waits_for_the_challenge_period_under_pause(anvil: Anvil) -> None:
    chain = c.connect(rpc_url=anvil.url)
    d, tree, poster, guardian, relayer = _setup(chain)
    _accepted(chain, d, tree, poster, relayer)
    start = chain.block_number() + 1
    paused = chain.transact(guardian, d.pause())
    assert d.paused_at_block() == paused.block_number
    fix = _lowered(tree)
    at_head = d.propose_correction(
        1, fix.root, fix.cumulative_total, DATA_HASH, "", paused.block_number
    )
    with pytest.raises(StaleClaims):  # anvil estimates at the head: block.number == the pause's
        chain.build(poster, at_head)
    chain.mine(1)
    mined = _correct(poster, d, fix, paused.block_number)
    stamp = chain.w3.eth.get_block(mined.block_number)["timestamp"]
    expected = c.PendingRoot(1, fix.root, fix.cumulative_total, DATA_HASH, stamp + HOUR)
    assert d.pending_root() == expected
    history = c.root_history(d, fix.root, start)
    assert history.status == "pending"
    assert [(e.name, e.args["validAt"]) for e in history.proposals] == [
        ("CorrectionProposed", stamp + HOUR)
    ]
    with pytest.raises(ContractRevert) as early:
        chain.build(relayer, d.accept_root())
    assert early.value.error == "TooEarly"
    with pytest.raises(ContractRevert) as stuck:
        chain.build(guardian, d.unpause())
    assert stuck.value.error == "RootPending"
    chain.increase_time(HOUR)
    chain.transact(relayer, d.accept_root())
    assert d.paused() and d.root() == fix.root and d.previous_root() == "0x" + "00" * 32
    assert c.root_history(d, fix.root, start).status == "accepted"
    assert c.find_proposal(d, fix.root, start).name == "CorrectionProposed"


def test_reading_from_an_earlier_pause_is_stale(anvil: Anvil) -> None:
    chain = c.connect(rpc_url=anvil.url)
    d, tree, poster, guardian, relayer = _setup(chain)
    _accepted(chain, d, tree, poster, relayer)
    chain.transact(guardian, d.pause())
    chain.mine(1)
    read_at = chain.block_number() - 1  # claimed amounts read in the first pause
    chain.transact(guardian, d.unpause())
    account = tree.values[0][0]
    c.send_claim(relayer, d, c.claim_info(d, tree, account))  # a claim lands in between
    chain.transact(guardian, d.pause())
    chain.mine(1)
    fix = _lowered(tree)
    with pytest.raises(StaleClaims):
        _correct(poster, d, fix, read_at)
    stale = d.propose_correction(1, fix.root, fix.cumulative_total, DATA_HASH, "", read_at)
    with pytest.raises(StaleClaims):  # the contract agrees
        chain.build(poster, stale)
    _correct(poster, d, fix, chain.block_number() - 1)
    assert d.pending_root().root == fix.root


def test_stuck_transaction_is_replaced_with_the_same_nonce(tmp_path: Path) -> None:
    # No automine: blocks come from the thread below, each with a base fee above the first
    # transaction's fee cap, so only a bumped replacement can be included.
    with Anvil(ANVIL, args=["--no-mining"]) as node:
        chain = c.connect(rpc_url=node.url, bump_blocks=2, bump_percent=20, poll_interval=0.02)
        (sender,) = _keys(chain, "sender")
        to = Key.generate().address
        first = chain.build(sender, c.Call(to, "0x", "transfer", value=12345), gas=21_000)
        chain.send(first)
        assert chain.is_pending(first.tx_hash)
        high = hex(first.fees.max_fee_per_gas + 1)
        stop = threading.Event()

        def produce_blocks() -> None:
            while not stop.is_set():
                for method, params in (
                    ("anvil_setNextBlockBaseFeePerGas", [high]),
                    ("evm_mine", []),
                ):
                    requests.post(
                        node.url,
                        json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params},
                        timeout=5,
                    ).raise_for_status()
                time.sleep(0.03)

        producer = threading.Thread(target=produce_blocks, daemon=True)
        replacements: list[c.PreparedTx] = []
        producer.start()
        try:
            mined = chain.wait(first, key=sender, before_send=replacements.append, timeout=30)
        finally:
            stop.set()
            producer.join(10)
        assert replacements, "no replacement was sent"
        assert mined.tx_hash == replacements[-1].tx_hash != first.tx_hash
        assert chain.lookup(first.tx_hash) is None
        tx = chain.w3.eth.get_transaction(mined.tx_hash)
        assert tx["nonce"] == first.nonce == replacements[-1].nonce
        assert tx["maxFeePerGas"] > first.fees.max_fee_per_gas
        assert (
            replacements[0].fees.max_priority_fee_per_gas * 100
            >= first.fees.max_priority_fee_per_gas * 120
        )
        assert chain.balance(to) == 12345
        assert chain.nonces.mined_count(sender.address) == first.nonce + 1


def test_state_survives_an_anvil_kill_with_state_interval(tmp_path: Path) -> None:
    state = tmp_path / "anvil-state.json"
    args = ["--state", str(state), "--state-interval", "1"]
    with Anvil(ANVIL, args=args) as node:
        chain = c.connect(rpc_url=node.url)
        d, tree, poster, _guardian, relayer = _setup(chain, challenge_period=1)
        c.submit_proposal(poster, d, 1, tree.root, tree.cumulative_total, DATA_HASH, "")
        chain.increase_time(1)
        chain.transact(relayer, d.accept_root())
        first, amount = tree.values[0]
        c.send_claim(relayer, d, c.claim_info(d, tree, first))
        head = chain.block_number()
        done = time.time()

        # A dump written after the last transaction holds it; a SIGKILL writes nothing more.
        # Anvil rewrites the file in place every second: kill right after a whole dump was
        # read back, not while the next one is half written.
        def whole_dump() -> bool:
            if not state.exists() or state.stat().st_mtime <= done + 0.05:
                return False
            try:
                json.loads(state.read_bytes())
            except ValueError:
                return False
            return True

        c.wait_until(whole_dump, 10, "a whole state dump")
        node.stop(kill=True)
        with pytest.raises(RpcUnavailable):
            c.connect(rpc_url=node.url).block_number()

    with Anvil(ANVIL, args=args) as again:
        chain = c.connect(rpc_url=again.url)
        d = c.Distributor(chain, d.address)
        assert chain.block_number() >= head
        assert d.root() == tree.root and d.current_epoch() == 1
        assert d.claimed(first) == amount == d.token.balance_of(first)
        assert chain.nonces.mined_count(relayer.address) > 0
        second, amount2 = tree.values[1]
        assert c.send_claim(relayer, d, c.claim_info(d, tree, second)).paid == {second: amount2}


def test_cli_deploy_and_claim_from_a_dump(anvil: Anvil, tmp_path: Path, monkeypatch) -> None:
    chain = c.connect(rpc_url=anvil.url)
    admin, poster, guardian, claimer = _keys(chain, "admin", "poster", "guardian", "claimer")
    record_path = tmp_path / "deployment.json"
    env = {
        "W2E_RPC_URL": anvil.url,
        "W2E_DEPLOYMENT_FILE": str(record_path),
        "W2E_CHALLENGE_PERIOD": "0",
        "W2E_DEV_MODE": "false",
        "W2E_ADMIN_KEY_ENV": "TEST_ADMIN_KEY",
        "W2E_POSTER_KEY_ENV": "TEST_POSTER_KEY",
        "W2E_GUARDIAN_KEY_ENV": "TEST_GUARDIAN_KEY",
        "W2E_CLAIMER_KEY_ENV": "TEST_CLAIMER_KEY",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for name, key in (
        ("TEST_ADMIN_KEY", admin),
        ("TEST_POSTER_KEY", poster),
        ("TEST_GUARDIAN_KEY", guardian),
    ):
        monkeypatch.setenv(name, "0x" + key._account.key.hex())
    runner = CliRunner()

    refused = runner.invoke(app, ["deploy"])
    assert refused.exit_code == 2 and "challenge period of 0" in refused.output

    values = sorted((Key.generate().address.lower(), 10**18 * (i + 2) + 1) for i in range(5))
    tree = MerkleTree.of(values)
    done = runner.invoke(
        app,
        [
            "deploy",
            "--challenge-period",
            "60",
            "--mint",
            str(10**24),
            "--fund",
            str(tree.cumulative_total),
        ],
    )
    assert done.exit_code == 0, done.output
    record = json.loads(record_path.read_text())
    assert (
        record["roles"]["poster"] == poster.address
        and record["roles"]["guardian"] == guardian.address
    )
    assert record["chainId"] == 31337 and record["challengePeriod"] == 60
    # The epoch clock every command then reads: the deployment block's epoch, not a fixed date.
    deployed_at = chain.w3.eth.get_block(record["block"])["timestamp"]
    assert record["epochSeconds"] == 3600
    assert record["genesis"] == deployed_at - deployed_at % 3600
    for secret in (admin, poster, guardian):
        assert secret._account.key.hex() not in done.output

    d = c.Distributor(chain, record["distributor"])
    c.submit_proposal(poster, d, 1, tree.root, tree.cumulative_total, DATA_HASH, "")
    chain.increase_time(60)
    chain.transact(claimer, d.accept_root())
    dump = tmp_path / "tree.json"
    dump.write_bytes(tree.dump_json())

    # Claim from a keystore (password from the variable the settings name).
    keystore = tmp_path / "claimer.json"
    save_keystore(claimer, keystore, "s3cret", kdf="pbkdf2", iterations=2)
    monkeypatch.setenv("W2E_CLAIMER_KEYSTORE_PASSWORD", "s3cret")
    account, amount = values[0]
    one = runner.invoke(app, ["claim", account, "--dump", str(dump), "--keystore", str(keystore)])
    assert one.exit_code == 0, one.output
    assert f"({amount} base units) to {account}" in one.output
    assert d.token.balance_of(account) == amount

    again = runner.invoke(app, ["claim", account, "--dump", str(dump), "--keystore", str(keystore)])
    assert again.exit_code == 1 and "nothing to claim" in again.output

    monkeypatch.setenv("TEST_CLAIMER_KEY", "0x" + claimer._account.key.hex())
    relayed = runner.invoke(
        app, ["claim", "--relay", *[a for a, _ in values], "--dump", str(dump), "--batch-size", "2"]
    )
    assert relayed.exit_code == 0, relayed.output
    rest = sum(n for _, n in values[1:])
    assert (
        f"total paid {rest // 10**18}.{rest % 10**18:018d} W2E ({rest} base units) in 2 transaction(s)"
        in relayed.output
    )
    assert "skipped 1 account(s)" in relayed.output
    for a, n in values:
        assert d.token.balance_of(a) == n


def test_unreachable_rpc_says_what_to_do() -> None:
    port = c.free_port()
    with pytest.raises(RpcUnavailable, match="W2E_RPC_URL"):
        c.connect(rpc_url=f"http://127.0.0.1:{port}")

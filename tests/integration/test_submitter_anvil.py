"""The submitter against anvil (npm @foundry-rs/anvil) on a free 127.0.0.1 port: challenge
period, revoke, pause, insolvency, a fee bump, anvil killed mid-submission and restarted
from --state, and the submitter process SIGKILLed between send and receipt. Every run ends
with exactly one proposal per root."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from eth_account import Account
from storekit import skip_module_without
from support.anvil import Anvil, find_anvil

from settlement.adapters import chain as c
from settlement.adapters.db import submitter as sdb
from settlement.adapters.db.store import Store, open_store
from settlement.adapters.keys import Key
from settlement.config import Settings
from settlement.domain.merkle import MerkleTree
from settlement.domain.receipts import Params
from settlement.jobs import close_due
from settlement.services import submit as submitter_mod
from settlement.services import submit_loop
from settlement.services.ingest import Ingestor
from settlement.services.registry import load_registries
from settlement.services.submit import Submitter, proposals_on_chain
from settlement.sim.generate import SimConfig, generate, read_lines

pytestmark = pytest.mark.slow  # anvil nodes and SIGKILLed submitter processes

ANVIL = find_anvil()
if ANVIL is None:
    skip_module_without("anvil (node_modules)")

GENESIS = 1_767_225_600
EPOCH = 900
GRACE = 60
HOUR = 3600
EMISSION = 1000 * 10**18


def cutoff(epoch: int) -> int:
    return GENESIS + epoch * EPOCH + GRACE


@dataclass
class Net:
    settings: Settings
    env: dict[str, str]  # W2E_* for a submitter subprocess (holds a throwaway test key)
    store: Store
    chain: c.Chain
    distributor: c.Distributor
    deployment: c.Deployment
    poster: Key
    guardian: Key
    admin: Key
    relayer: Key

    def submitter(
        self, chain: c.Chain | None = None, say: Callable[[str], None] | None = None
    ) -> Submitter:
        chain = chain or self.chain
        return Submitter(
            self.store,
            self.settings,
            chain,
            c.Distributor(chain, self.distributor.address),
            self.poster,
            deployment_block=self.deployment.block,
            say=say,
        )

    def close(self, epoch: int) -> None:
        closed = close_due(self.store, self.settings, cutoff(epoch))
        assert [x.epoch for x in closed][-1:] == [epoch]


def _rpc(url: str, method: str, *params: object) -> object:
    r = requests.post(
        url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}, timeout=5
    )
    r.raise_for_status()
    return r.json().get("result")


def make_net(
    tmp: Path,
    url: str,
    *,
    challenge: int = HOUR,
    funded_epochs: int = 4,
    dev: bool = False,
    window: int = 3000,
    database_url: str | None = None,
) -> Net:
    """A deployed distributor and a store holding simulated receipts issued over `window`
    seconds from genesis; `url` "" is the embedded chain; `database_url` (default: SQLite in
    `tmp`) the service's store."""
    chain = c.connect(rpc_url=url, poll_interval=0.02, bump_blocks=2)
    secrets = {n: Account.create() for n in ("admin", "poster", "guardian", "relayer")}
    keys = {n: Key(a, n) for n, a in secrets.items()}
    for k in keys.values():
        chain.set_balance(k.address, 10**20)
    admin = keys["admin"]
    deployment = c.deploy(
        chain,
        admin,
        poster=keys["poster"].address,
        guardian=keys["guardian"].address,
        challenge_period=challenge,
        dev=dev,
        mint=10 * EMISSION,
        fund=funded_epochs * EMISSION,
    )
    c.save_deployment(deployment, tmp / "deployment.json")
    env = {
        "W2E_DATABASE_URL": database_url or f"sqlite:///{tmp}/submit.db",
        "W2E_DATA_DIR": str(tmp / "epochs"),
        "W2E_GENESIS": str(GENESIS),
        "W2E_EPOCH_SECONDS": str(EPOCH),
        "W2E_GRACE_SECONDS": str(GRACE),
        "W2E_MAX_SESSION_AGE": "1800",
        "W2E_CHAIN_ID": str(chain.chain_id),
        "W2E_DISTRIBUTOR": deployment.distributor,
        "W2E_RPC_URL": url,
        "W2E_DEPLOYMENT_FILE": str(tmp / "deployment.json"),
        "W2E_CHAIN_POLL_INTERVAL": "0.05",
        "W2E_FEE_BUMP_BLOCKS": "2",
        "W2E_CHALLENGE_PERIOD": str(challenge),
        "W2E_DEV_MODE": "true" if dev else "false",
        "W2E_POSTER_KEY": "0x" + bytes(secrets["poster"].key).hex(),
    }
    settings = Settings(
        **{k[4:].lower(): v for k, v in env.items() if k != "W2E_POSTER_KEY"},
    )
    cfg = SimConfig(
        seed=3,
        receipts=1500,
        nodes=6,
        viewers=60,
        creators=4,
        contents=12,
        chain_id=chain.chain_id,
        distributor=bytes.fromhex(deployment.distributor[2:]),
        start=GENESIS,
        window=window,
        params=Params.from_settings(settings),
        workers=1,
    )
    sim = generate(cfg, tmp / "sim")
    store = open_store(settings.database_url)
    load_registries(store, sim.out_dir / "registries.json", settings=settings)
    ingestor = Ingestor(store, settings)
    for batch in read_lines(sim.receipts_path, 1000):
        ingestor.ingest(batch, cfg.now)
    return Net(
        settings,
        env,
        store,
        chain,
        c.Distributor(chain, deployment.distributor),
        deployment,
        keys["poster"],
        keys["guardian"],
        admin,
        keys["relayer"],
    )


@pytest.fixture
def net(tmp_path: Path) -> Iterator[Net]:
    with Anvil(ANVIL) as node:
        n = make_net(tmp_path, node.url, funded_epochs=3)
        try:
            yield n
        finally:
            n.store.close()


def one_proposal_per_root(n: Net) -> dict[str, int]:
    counts = proposals_on_chain(n.distributor, n.deployment.block)
    assert counts and set(counts.values()) == {1}, counts
    return counts


def test_challenge_period_revoke_pause_and_insolvency(net: Net) -> None:
    n, d = net, net.distributor
    n.close(1)
    sub = n.submitter()
    (row,) = sub.step()
    assert row.status == sdb.MINED and row.valid_at is not None
    assert sub.step()[0].status == sdb.MINED  # not due: no accept, no new proposal
    assert d.current_epoch() == 0

    # The guardian revokes: marked, alerted, never proposed again as it was.
    n.chain.transact(n.guardian, d.revoke_root())
    (row,) = sub.step()
    assert row.status == sdb.REVOKED
    assert submitter_mod.REVOKED._value.get() == 1
    assert sub.step() == [] and d.pending_root() is None
    revoked_root = row.root

    # Only an operator's decision proposes it again as it was.
    assert sub.release_revoked(revoked_root) == 1
    assert submitter_mod.REVOKED._value.get() == 0
    (again,) = sub.step()
    assert again.root == revoked_root and again.status == sdb.MINED and again.id != row.id
    n.chain.transact(n.guardian, d.revoke_root())
    assert sub.step()[0].status == sdb.REVOKED and sub.step() == []

    # A new close brings a new root (epochs 1-2 folded), which pause holds back.
    n.close(2)
    n.chain.transact(n.guardian, d.pause())
    assert sub.step() == []
    assert submitter_mod.PAUSED._value.get() == 1
    n.chain.transact(n.guardian, d.unpause())
    (row,) = sub.step()
    assert (row.first_epoch, row.epoch, row.status) == (1, 2, sdb.MINED)
    n.chain.transact(n.guardian, d.pause())
    n.chain.increase_time(HOUR)
    assert sub.step()[0].status == sdb.MINED  # due, but no ordinary acceptance while paused
    n.chain.transact(n.guardian, d.unpause())
    assert sub.step()[0].status == sdb.ACCEPTED
    assert d.current_epoch() == 2 and d.root() == row.root

    # Epochs 3-4 need 4 epochs of emission; 3 are funded: refused, shortfall on the gauge.
    n.close(4)
    assert sub.step() == []
    assert submitter_mod.SHORTFALL._value.get() == EMISSION
    c.fund_distributor(n.admin, d, EMISSION)
    (row,) = sub.step()
    assert (row.first_epoch, row.epoch) == (3, 4)
    assert submitter_mod.SHORTFALL._value.get() == 0
    n.chain.increase_time(HOUR)
    assert sub.step()[0].status == sdb.ACCEPTED
    # `settlement serve`'s claim route connects to W2E_RPC_URL and the deployment record itself.
    from fastapi.testclient import TestClient

    from settlement.api.app import create_app

    tree = MerkleTree.load(Path(row.dump_path).read_bytes())
    account, amount = tree.values[0]
    with TestClient(create_app(n.settings, n.store)) as client:
        body = client.get(f"/v1/accounts/{account}/claim").json()
    assert body["root"] == tree.root and body["cumulativeAmount"] == str(amount)
    n.chain.transact(n.relayer, c.Call(body["contract"], body["calldata"], "claim"))
    assert d.token.balance_of(account) == amount

    counts = proposals_on_chain(d, n.deployment.block)
    # The revoked root twice (released once by the operator), epochs 1-2, epochs 3-4 once.
    assert counts.pop(revoked_root) == 2
    assert len(counts) == 2 and set(counts.values()) == {1}


def test_stuck_proposal_is_replaced_with_higher_fees(tmp_path: Path) -> None:
    with Anvil(ANVIL) as node:
        n = make_net(tmp_path, node.url, challenge=0, dev=True)
        try:
            n.close(1)
            _rpc(node.url, "evm_setAutomine", False)
            sub = n.submitter()
            result: list[sdb.Proposal] = []
            worker = threading.Thread(target=lambda: result.extend(sub.step()), daemon=True)
            worker.start()
            c.wait_until(lambda: any(r.status == sdb.SENT for r in sub.rows.all()), 20, "sent")
            (first,) = sub.rows.all()[0].txs
            high = hex(first.fees.max_fee_per_gas + 1)
            stop = threading.Event()

            def produce_blocks() -> None:
                # Each block's base fee above the first version's fee cap: only a bump fits.
                while not stop.is_set():
                    _rpc(node.url, "anvil_setNextBlockBaseFeePerGas", high)
                    _rpc(node.url, "evm_mine")
                    time.sleep(0.03)

            producer = threading.Thread(target=produce_blocks, daemon=True)
            producer.start()
            try:
                worker.join(60)
            finally:
                stop.set()
                producer.join(10)
            (row,) = result
            assert row.status == sdb.ACCEPTED  # challenge period 0: accepted when proposed
            assert len(row.txs) >= 2 and row.tx_hash == row.txs[-1].tx_hash
            assert {t.nonce for t in row.txs} == {row.txs[0].nonce}
            assert (
                row.txs[-1].fees.max_fee_per_gas > int(high, 16) > row.txs[0].fees.max_fee_per_gas
            )
            assert n.chain.lookup(first.tx_hash) is None
            one_proposal_per_root(n)
        finally:
            n.store.close()


def test_anvil_killed_mid_submission_comes_back_from_its_state(tmp_path: Path) -> None:
    state = tmp_path / "anvil-state.json"
    args = ["--state", str(state), "--state-interval", "1"]
    node = Anvil(ANVIL, args=args).start()
    try:
        n = make_net(tmp_path, node.url, challenge=0, dev=True)
        n.close(1)
        done = time.time()
        c.wait_until(lambda: state.exists() and state.stat().st_mtime > done + 0.05, 10, "a dump")
        _rpc(node.url, "evm_setAutomine", False)  # the proposal stays in the pool...

        sub = n.submitter()
        worker = threading.Thread(target=lambda: submit_loop.run_step(sub), daemon=True)
        worker.start()
        c.wait_until(lambda: any(r.status == sdb.SENT for r in sub.rows.all()), 20, "sent")
        node.stop(kill=True)  # ...and dies with it: a SIGKILLed anvil writes no dump
        worker.join(30)
        assert not worker.is_alive()
        (sent,) = sub.rows.all()
        assert sent.status == sdb.SENT

        node = Anvil(ANVIL, port=node.port, args=args).start()
        chain = c.connect(rpc_url=node.url, poll_interval=0.02)
        assert chain.lookup(sent.tx_hash) is None  # the restarted node forgot the pool
        restarted = n.submitter(chain)
        (row,) = restarted.step()
        assert row.status == sdb.ACCEPTED and row.tx_hash == sent.txs[0].tx_hash
        counts = proposals_on_chain(c.Distributor(chain, n.distributor.address), n.deployment.block)
        assert counts == {row.root: 1}
        assert restarted.step() == []
    finally:
        node.stop(kill=True)
        n.store.close()


def test_submitter_sigkilled_between_send_and_receipt(net: Net, tmp_path: Path) -> None:
    n = net
    n.close(1)
    url = n.settings.rpc_url
    assert url is not None
    _rpc(url, "evm_setAutomine", False)  # the receipt never comes while the process lives
    env = {"PATH": os.environ.get("PATH", ""), **n.env}
    argv = [sys.executable, "-m", "settlement.cli", "submit"]
    log = tmp_path / "submit.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv, env=env, cwd=tmp_path, stdout=out, stderr=out, start_new_session=True
        )
    try:
        rows = sdb.SubmitterStore(n.store)
        c.wait_until(
            lambda: any(r.status == sdb.SENT for r in rows.all()) or proc.poll() is not None,
            60,
            "the proposal to be sent",
        )
        assert proc.poll() is None, log.read_text()
        (sent,) = rows.all()
        assert n.chain.is_pending(sent.tx_hash)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    assert proc.returncode == -signal.SIGKILL

    _rpc(url, "evm_mine")  # mined while nobody watches
    _rpc(url, "evm_setAutomine", True)
    again = subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True, timeout=60)
    assert again.returncode == 0, again.stderr.decode()
    assert again.stderr.count(b"reconciled proposal 1 (epoch 1): sent -> mined") == 1  # once
    assert b"alembic" not in again.stderr.lower()  # migrations keep their INFO lines
    (row,) = sdb.SubmitterStore(n.store).all()
    assert row.status == sdb.MINED and row.tx_hash == sent.tx_hash
    n.chain.increase_time(HOUR)
    assert n.submitter().step()[0].status == sdb.ACCEPTED
    assert one_proposal_per_root(n) == {row.root: 1}


def test_submit_says_what_it_did_once_or_why_there_was_nothing(net: Net, tmp_path: Path) -> None:
    n = net
    env = {"PATH": os.environ.get("PATH", ""), **n.env}
    argv = [sys.executable, "-m", "settlement.cli", "submit"]

    def submit() -> subprocess.CompletedProcess[bytes]:
        done = subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True, timeout=120)
        assert done.returncode == 0, done.stderr.decode()
        assert b"alembic" not in done.stderr.lower() and b"Traceback" not in done.stderr
        return done

    idle = submit()
    assert idle.stdout == b""
    assert idle.stderr.decode().splitlines() == [
        "nothing to do: no epoch is closed yet (`settlement epochs close`)"
    ]

    n.close(1)
    proposed = submit()
    lines = proposed.stderr.decode().splitlines()
    assert [line.split(" ")[0] for line in lines] == ["proposing", "proposal", "proposal"]
    assert lines[0].startswith("proposing root 0x") and lines[0].endswith(
        "for epoch 1 (proposal 1)"
    )
    assert "sent: 0x" in lines[1] and "is in its challenge period: acceptRoot from" in lines[2]
    (row,) = [json.loads(x) for x in proposed.stdout.splitlines()]
    assert row["status"] == "mined" and row["epochs"] == [1, 1]

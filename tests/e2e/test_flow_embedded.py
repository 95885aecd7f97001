"""In-process end to end on the embedded chain: simulated receipts -> ingest -> close ->
propose -> accept -> claims, with every account's on-chain balance equal to its cumulative
allocation; folding of epochs closed while a root is pending; reconcile after a crash
between persisting a proposal and sending it, and between sending it and recording it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from settlement.adapters import chain as c
from settlement.adapters.db import submitter as sdb
from settlement.adapters.db.epochs import CloseReader, EpochStore
from settlement.adapters.db.store import Store, open_store
from settlement.api.app import create_app
from settlement.api.routes.claims import account_chain_fields
from settlement.config import Settings
from settlement.domain.merkle import MerkleTree
from settlement.domain.receipts import Params
from settlement.jobs import ChainScheduler, close_due
from settlement.services.claims import ChainContext, Claims, index_claims
from settlement.services.ingest import Ingestor
from settlement.services.registry import load_registries
from settlement.services.submit import Submitter, proposals_on_chain
from settlement.sim.generate import SimConfig, generate, read_lines

GENESIS = 1_767_225_600
EPOCH = 900
GRACE = 60
CHALLENGE = 600


@dataclass
class World:
    settings: Settings
    store: Store
    chain: c.Chain
    distributor: c.Distributor
    deployment: c.Deployment
    poster: c.Key
    relayer: c.Key
    now: int


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("flow")
    chain = c.connect(Settings(rpc_url=None), confirmations=1, poll_interval=0.01)
    admin, poster, relayer = chain.dev_key(0), chain.dev_key(1), chain.dev_key(2)
    base = dict(
        database_url=f"sqlite:///{tmp}/flow.db",
        data_dir=str(tmp / "epochs"),
        genesis=GENESIS,
        epoch_seconds=EPOCH,
        grace_seconds=GRACE,
        max_session_age=1800,
        dev_mode=True,
        challenge_period=CHALLENGE,
    )
    settings = Settings(**base)
    deployment = c.deploy(
        chain,
        admin,
        poster=poster.address,
        challenge_period=CHALLENGE,
        dev=True,
        mint=4 * settings.emission,
        fund=4 * settings.emission,
    )
    settings = Settings(**base, chain_id=chain.chain_id, distributor=deployment.distributor)
    cfg = SimConfig(
        seed=7,
        receipts=3000,
        nodes=12,
        viewers=150,
        creators=6,
        contents=30,
        chain_id=chain.chain_id,
        distributor=bytes.fromhex(deployment.distributor[2:]),
        start=GENESIS,
        window=3000,
        params=Params.from_settings(settings),
        workers=1,
    )
    sim = generate(cfg, tmp / "sim")
    store = open_store(settings.database_url)
    load_registries(store, sim.out_dir / "registries.json", settings=settings)
    ingestor = Ingestor(store, settings)
    for batch in read_lines(sim.receipts_path, 1000):
        ingestor.ingest(batch, cfg.now)
    try:
        yield World(
            settings,
            store,
            chain,
            c.Distributor(chain, deployment.distributor),
            deployment,
            poster,
            relayer,
            cfg.now,
        )
    finally:
        store.close()


def _cutoff(epoch: int) -> int:
    return GENESIS + epoch * EPOCH + GRACE


def _submitter(w: World) -> Submitter:
    return Submitter(
        w.store, w.settings, w.chain, w.distributor, w.poster, deployment_block=w.deployment.block
    )


def _balances(store: Store, epoch: int) -> dict[str, int]:
    epochs = EpochStore(store)
    rows = epochs.run(lambda cur: CloseReader(epochs, cur).balances(epoch + 1))
    return {"0x" + a.hex(): n + v + cc for a, (n, v, cc) in rows.items()}


def test_receipts_to_claims_with_folding_and_restarts(world: World, tmp_path: Path) -> None:
    w = world
    d = w.distributor
    assert [x.epoch for x in close_due(w.store, w.settings, _cutoff(1))] == [1]

    sub = _submitter(w)
    (row,) = sub.step()
    assert (row.kind, row.epoch, row.status) == ("root", 1, sdb.MINED)
    assert d.pending_root() is not None and d.current_epoch() == 0
    assert sub.step() == [sdb.SubmitterStore(w.store).get(row.id)]  # not due yet: nothing new
    assert d.current_epoch() == 0

    # Epochs 2 and 3 close while epoch 1's root is pending: one later proposal carries both.
    assert [x.epoch for x in close_due(w.store, w.settings, _cutoff(3))] == [2, 3]
    w.chain.increase_time(CHALLENGE)
    touched = sub.step()
    assert [r.status for r in touched] == [sdb.ACCEPTED, sdb.MINED]
    folded = touched[1]
    assert (folded.first_epoch, folded.epoch) == (2, 3)
    assert d.current_epoch() == 1

    # A new process finds the pending root and proposes nothing more; it accepts when due.
    w.chain.increase_time(CHALLENGE)
    again = _submitter(w)
    touched = again.step()
    assert [(r.id, r.status) for r in touched][-1] == (folded.id, sdb.ACCEPTED)
    assert d.current_epoch() == 3
    epoch3 = EpochStore(w.store).get(3)
    assert d.root() == "0x" + epoch3.root.hex()

    # Claims: a few alone, the rest relayed through claimMany, all from the published dump.
    tree = MerkleTree.load(Path(folded.dump_path).read_bytes())
    balances = _balances(w.store, 3)
    assert dict(tree.values) == {a: v for a, v in balances.items() if v > 0}
    accounts = [a for a, _ in tree.values]
    infos = c.claim_infos(d, tree, accounts)
    # Through the API: GET /v1/accounts/{address}/claim gives calldata a wallet sends as is.
    app = create_app(w.settings, w.store, chain_context=ChainContext(w.chain, d))
    with TestClient(app) as client:
        for info in infos[:3]:
            body = client.get(f"/v1/accounts/{info.account}/claim").json()
            assert body == info.to_json() and int(body["claimable"]) > 0
            w.chain.transact(w.relayer, c.Call(body["contract"], body["calldata"], "claim"))
            assert d.token.balance_of(info.account) == int(body["cumulativeAmount"])
            again = client.get(f"/v1/accounts/{info.account}/claim").json()
            assert again["claimable"] == "0" and again["claimed"] == body["cumulativeAmount"]
        nobody = client.get("/v1/accounts/0x" + "12" * 20 + "/claim")
        assert nobody.status_code == 404 and "no reward" in nobody.json()["message"]
        assert client.get("/v1/accounts/0x12/claim").status_code == 422
    c.relay_claims(w.relayer, d, c.claim_infos(d, tree, accounts), batch_size=50)
    for account, amount in tree.values:
        assert d.token.balance_of(account) == amount == d.claimed(account)
    assert sum(balances.values()) == d.cumulative_total() == tree.cumulative_total

    # The Claimed indexer agrees with the contract.
    assert index_claims(w.store, d, w.deployment.block) == len(accounts) + 0
    assert sdb.SubmitterStore(w.store).claimed_all() == dict(tree.values)

    # What GET /v1/accounts/{address} adds from the chain: claimed (indexed), claimable now.
    claims = Claims(w.settings, ChainContext(w.chain, d))
    account, amount = tree.values[0]
    fields = account_chain_fields(claims, w.store, bytes.fromhex(account[2:]))
    assert fields["claimed"] == str(amount) and fields["claimableNow"] == "0"
    assert fields["acceptedRoot"] == tree.root and fields["acceptedProof"] == tree.proof(0)
    assert "pending" not in fields
    # ... and the route itself serves them next to what the account earned.
    with TestClient(app) as client:
        body = client.get(f"/v1/accounts/{account}").json()
    assert body["claimed"] == str(amount) and body["claimableNow"] == "0"
    assert body["acceptedRoot"] == tree.root and body["acceptedProof"] == tree.proof(0)
    assert int(body["earned"]["total"]) >= amount

    # Exactly one proposal per root.
    assert set(proposals_on_chain(d, w.deployment.block).values()) == {1}


def test_crash_after_persist_or_after_send_never_proposes_twice(world: World) -> None:
    w = world
    d = w.distributor
    assert [x.epoch for x in close_due(w.store, w.settings, _cutoff(4))] == [4]
    sub = _submitter(w)
    candidate = sub.candidate()
    assert candidate is not None and candidate.epoch == 4

    # Crash 1: the signed proposal is persisted, never sent.
    call = d.propose_root(4, candidate.root, candidate.cumulative_total, candidate.data_hash, "x")
    prepared = w.chain.build(w.poster, call)
    row = sub.rows.insert(
        kind=sdb.ROOT,
        epoch=4,
        first_epoch=4,
        root=candidate.root,
        cumulative_total=candidate.cumulative_total,
        data_hash=candidate.data_hash,
        data_uri="x",
        from_block=w.chain.block_number(),
        prepared=prepared,
    )
    restarted = _submitter(w)
    restarted.step()
    after = restarted.rows.get(row.id)
    assert after.status == sdb.MINED and after.tx_hash == prepared.tx_hash
    claims = Claims(w.settings, ChainContext(w.chain, d))
    top = max(
        _balances(w.store, 4).items(), key=lambda x: x[1] - _balances(w.store, 3).get(x[0], 0)
    )
    fields = account_chain_fields(claims, w.store, bytes.fromhex(top[0][2:]))
    before = _balances(w.store, 3).get(top[0], 0)
    assert fields["pending"]["adds"] == str(top[1] - max(before, int(fields["claimed"])))
    assert fields["pending"]["epoch"] == 4 and int(fields["pending"]["adds"]) > 0
    assert proposals_on_chain(d, w.deployment.block)[candidate.root] == 1

    # Crash 2 (on the acceptRoot): sent, but the process died before writing `sent`.
    w.chain.increase_time(CHALLENGE)
    accept = w.chain.build(w.poster, d.accept_root())
    restarted.rows.update(row.id, accept_txs=[accept])
    w.chain.send(accept)
    third = _submitter(w)
    third.step()
    assert third.rows.get(row.id).status == sdb.ACCEPTED
    assert w.chain.lookup(accept.tx_hash).status == 1  # adopted, not sent again
    assert d.current_epoch() == 4
    assert set(proposals_on_chain(d, w.deployment.block).values()) == {1}
    assert third.step() == []  # nothing left to do


def test_chain_scheduler_job_ticks_the_submitter_and_the_claims_indexer(world: World) -> None:
    w = world
    sub = _submitter(w)
    rows = sdb.SubmitterStore(w.store)
    before = rows.cursor("claimed")
    w.chain.mine(3)
    scheduler = ChainScheduler(sub, 0.05)
    scheduler.start()
    try:
        c.wait_until(lambda: scheduler.ticks >= 2, 20, "two ticks")
    finally:
        scheduler.shutdown()
    assert sub.reconciled  # the first tick reconciled, later ones found nothing to do
    assert rows.cursor("claimed") == w.chain.block_number() + 1 > (before or 0)
    assert all(r.status == sdb.ACCEPTED for r in rows.all())

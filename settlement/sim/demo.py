"""`settlement demo`: a simulated network through the real HTTP API into SQLite, a few short
epochs closed, roots proposed and accepted, claims by nodes, viewers and creators (one
relayed claimMany), the auditor checking every epoch over HTTP, and a summary whose checks
are on-chain balances == allocations and a clean audit.

Everything runs in this process and on 127.0.0.1: the embedded py-evm chain lives here,
so the API runs under uvicorn in a thread to share it, and the auditor reads that chain
through the same web3 instance (`ChainView(distributor)`) while it reads the files over HTTP
from the demo's own `/v1/data`, exactly as a third party would. With `rpc` (a dev chain such
as anvil) the contracts, roots and claims stay on that chain and the datasets in
`directory`, so a third party can audit the run afterwards; the in-demo auditor then
connects to that RPC like any outsider. `hold` (the CLI's --serve) is called while the
service and chain are still up; nothing is left running once `run_demo` returns.
"""

from __future__ import annotations

import dataclasses
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from settlement.adapters import chain as c
from settlement.adapters.db import submitter as sdb
from settlement.adapters.db.epochs import CloseReader, EpochStore
from settlement.adapters.db.store import Store, open_store
from settlement.client.claims import claim_info_from_service
from settlement.config import Settings
from settlement.domain.merkle import MerkleTree
from settlement.domain.receipts import Params
from settlement.errors import SettlementError
from settlement.services.claims import index_claims
from settlement.services.close import close_epoch
from settlement.services.submit import Submitter, proposals_on_chain
from settlement.sim.demo_support import Clock, Server, own_keys, throwaway_keys, workdir
from settlement.sim.generate import SimResult, generate, read_lines
from settlement.sim.post import upload_registries
from settlement.sim.world import SimConfig, build_world

EPOCH_SECONDS = 900
GRACE_SECONDS = 60
SESSION_AGE = 1800  # sessions of at most 20 minutes: they span an epoch or two
WINDOW = 3000  # sessions start in the first 50 minutes
EPOCHS = 4
CHALLENGE = 600  # seconds; the embedded chain's clock is moved past it
CLASSES = ("node", "viewer", "creator")

# The steps the progress callback names, in order (the CLI draws one bar per step).
DEPLOY, SIMULATE, INGEST, SETTLE, CLAIMS, AUDIT = (
    "deploy contracts",
    "simulate and sign receipts",
    "ingest over HTTP",
    "close epochs, post roots",
    "claims",
    "audit over HTTP",
)
STEPS = (DEPLOY, SIMULATE, INGEST, SETTLE, CLAIMS, AUDIT)
Progress = Callable[[str, int, int], None]  # (step, done, total)


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    nodes: int = 300
    viewers: int = 3000
    creators: int = 60
    contents: int = 600
    receipts: int = 40_000
    seed: int = 1
    # Processes signing (the simulator) and verifying (the auditor). None: signing in this
    # process, since a pool first re-imports the whole CLI in a fresh interpreter, which costs
    # more than a second core saves at the demo's size; the auditor on every core.
    workers: int | None = None
    own_claims: int = 1  # per class: accounts that claim with their own key, twice
    relayed_claims: int = 39  # accounts in the relayed claimMany, a third of each class
    directory: str | None = None
    rpc: str | None = None  # a dev chain that outlives the demo (anvil); None: the embedded one
    port: int | None = None  # the service's port on 127.0.0.1 (None: any free one)
    serve: bool = False  # dataURIs point at the service even with `rpc` (it stays up a while)


@dataclasses.dataclass
class Claimed:
    """What one class of accounts claimed."""

    own_key: int = 0  # accounts that sent claim() themselves
    relayed: int = 0  # accounts paid by the relayed claimMany
    paid: int = 0  # base units, read back from the token
    equal: int = 0  # of them, balance == claimed() == allocation


@dataclasses.dataclass
class DemoResult:
    verdicts: dict[str, int]
    expected: dict[str, int]  # the verdicts the simulator's bad actors should get
    kinds: dict[str, str]  # reason -> what the simulator's bad actor did
    proposals: list[dict[str, Any]]
    top: dict[str, list[tuple[str, int]]]
    checks: list[tuple[str, str, int, int, int]]  # account, class, allocation, balance, claimed
    claims: dict[str, Claimed]
    totals: dict[str, int]
    audit: Any  # services.audit.AuditReport
    seconds: dict[str, float]  # wall, per step
    cpu: dict[str, float]  # CPU, per step (signing: the simulator's workers)
    ok: bool
    problems: list[str]
    url: str = ""
    audit_command: str | None = None  # how a third party audits this run (with `rpc`)

    @property
    def rejections(self) -> dict[str, int]:
        """Rejected receipts by reason code (not `accepted`, not the accepted `duplicate`)."""
        return {k: n for k, n in self.verdicts.items() if k not in ("accepted", "duplicate")}


def _balances(store: Store, epoch: int) -> dict[str, tuple[int, int, int]]:
    epochs = EpochStore(store)
    rows = epochs.run(lambda cur: CloseReader(epochs, cur).balances(epoch + 1))
    return {"0x" + a.hex(): v for a, v in rows.items()}


@dataclasses.dataclass
class _Run:
    """What the steps after ingestion share."""

    cfg: DemoConfig
    settings: Settings
    store: Store
    chain: c.Chain
    distributor: c.Distributor
    deployment: c.Deployment
    poster: c.Key
    relayer: c.Key
    url: str
    sim: SimResult
    sim_cfg: SimConfig
    clock: Clock
    say: Any
    progress: Progress


def run_demo(
    cfg: DemoConfig,
    say: Any = print,
    progress: Progress | None = None,
    hold: Callable[[DemoResult], None] | None = None,
) -> DemoResult:
    """The whole flow; `progress(step, done, total)` per unit of work of each of `STEPS`;
    `hold(result)` runs while the service and the chain are still up (--serve)."""
    tick = progress or (lambda step, done, total: None)
    clock = Clock()
    t0 = clock.start()
    now = int(time.time())
    # Epoch 1 starts early enough that every honest receipt is in the past and the first
    # EPOCHS epochs are due now: issuedAt <= start + WINDOW + 1200 <= now.
    genesis = now - (WINDOW + SESSION_AGE + 600) - 100
    port = cfg.port or c.free_port()
    url = f"http://127.0.0.1:{port}"
    with workdir(cfg.directory) as work:
        base: dict[str, Any] = dict(
            database_url=f"sqlite:///{work}/demo.db",
            data_dir=str(work / "epochs"),
            genesis=genesis,
            epoch_seconds=EPOCH_SECONDS,
            grace_seconds=GRACE_SECONDS,
            max_session_age=SESSION_AGE,
            dev_mode=True,
            challenge_period=CHALLENGE,
            rpc_url=None,
            rate_limit=0,
            admin_token=secrets.token_hex(16),
            # Each proposal's dataURI is the demo service's /v1/data, which the auditor reads.
            # A demo on an outside chain that does not --serve leaves its chain behind but not
            # its service: there the dataURI stays the local path, so the chain's URIs still
            # resolve afterwards (the audit command it prints), and the in-demo auditor is
            # pointed at /v1/data explicitly.
            data_base_uri=f"{url}/v1/data" if cfg.rpc is None or cfg.serve else None,
        )
        settings = Settings(**base)  # type: ignore[arg-type]
        tick(DEPLOY, 0, 1)
        if cfg.rpc is None:
            chain = c.connect(settings, confirmations=1, poll_interval=0.01)
            admin, poster, relayer = chain.dev_key(0), chain.dev_key(1), chain.dev_key(2)
            # A view without `from` makes web3's eth-tester middleware list the accounts three
            # times; the demo reads hundreds of views, so give them one.
            chain.w3.eth.default_account = relayer.address  # type: ignore[assignment]
        else:
            chain = c.connect(settings, rpc_url=cfg.rpc, confirmations=1, poll_interval=0.05)
            admin, poster, relayer = throwaway_keys(chain)
        funding = EPOCHS * settings.emission
        deployment = c.deploy(
            chain,
            admin,
            poster=poster.address,
            challenge_period=CHALLENGE,
            dev=True,
            mint=funding,
            fund=funding,
        )
        # Receipts are signed for the deployed distributor's domain: deploy first.
        settings = Settings(
            **base,
            chain_id=chain.chain_id,
            distributor=deployment.distributor,  # type: ignore[arg-type]
        )
        distributor = c.Distributor(chain, deployment.distributor)
        where = "the embedded chain" if cfg.rpc is None else f"the chain at {cfg.rpc}, chain"
        say(
            f"deployed W2EToken and RewardDistributor {deployment.distributor} on {where} "
            f"{chain.chain_id} (challenge period {CHALLENGE} s), funded {funding} base units"
        )
        if cfg.rpc is not None:
            (work / "deployment.json").write_text(deployment.to_json())
        tick(DEPLOY, 1, 1)
        clock.stop("deploy", t0)

        t = clock.start()
        sim_cfg = SimConfig(
            seed=cfg.seed,
            receipts=cfg.receipts,
            nodes=cfg.nodes,
            viewers=cfg.viewers,
            creators=cfg.creators,
            contents=cfg.contents,
            chain_id=chain.chain_id,
            distributor=bytes.fromhex(deployment.distributor[2:]),
            start=genesis,
            window=WINDOW,
            params=Params.from_settings(settings),
            workers=cfg.workers or 1,
        )
        tick(SIMULATE, 0, cfg.receipts)
        sim = generate(
            sim_cfg, work / "sim", progress=lambda done: tick(SIMULATE, done, cfg.receipts)
        )
        say(
            f"simulated {sim.receipts} receipts of {cfg.nodes} nodes, {cfg.viewers} viewers "
            f"and {cfg.creators} creators, {sum(sim.kinds.values())} from bad actors"
        )
        clock.stop("simulate", t, extra_cpu=sim.cpu_seconds if sim.workers > 1 else 0.0)

        from settlement.api.app import create_app
        from settlement.services.claims import ChainContext

        store = open_store(settings.database_url)
        try:
            app = create_app(settings, store, chain_context=ChainContext(chain, distributor))
            with Server(app, port) as server:
                run = _Run(
                    cfg, settings, store, chain, distributor, deployment, poster, relayer,
                    server.url, sim, sim_cfg, clock, say, tick,
                )  # fmt: skip
                verdicts = _ingest(run)
                result = _settle(run, verdicts)
                clock.stop("total", t0, sim.cpu_seconds if sim.workers > 1 else 0.0)
                if hold is not None:
                    hold(result)
                return result
        finally:
            store.close()


def _ingest(run: _Run) -> dict[str, int]:
    """Registries, then every receipt through POST /v1/receipts; counts by verdict label."""
    from collections import Counter

    from settlement.client.http import SettlementClient

    t = run.clock.start()
    token = run.settings.admin_token.get_secret_value()  # type: ignore[union-attr]
    upload_registries(run.url, run.sim.out_dir / "registries.json", token)
    counts: Counter[str] = Counter()
    total = run.sim.receipts
    run.progress(INGEST, 0, total)
    with SettlementClient(run.url, max_batch=2000) as client:
        for part in read_lines(run.sim.receipts_path, client.max_batch):
            for batch in client.submit_iter(part):
                counts.update(v.label for v in batch.verdicts)
            run.progress(INGEST, sum(counts.values()), total)
    verdicts = dict(sorted(counts.items()))
    run.say(f"posted to {run.url}/v1/receipts: {verdicts}")
    run.clock.stop("ingest", t)
    return verdicts


def _settle(run: _Run, verdicts: dict[str, int]) -> DemoResult:
    cfg, store, chain, distributor = run.cfg, run.store, run.chain, run.distributor
    t = run.clock.start()
    now = int(time.time())
    submitter = Submitter(
        store,
        run.settings,
        chain,
        distributor,
        run.poster,
        deployment_block=run.deployment.block,
        say=run.say,
    )
    done = 0
    steps = EPOCHS + 3  # four closes, three proposals (epochs 2 and 3 share one)

    def advance() -> None:
        nonlocal done
        done += 1
        run.progress(SETTLE, done, steps)

    def close(epoch: int) -> None:
        closed = close_epoch(store, run.settings, epoch, now=now)
        assert closed is not None
        run.say(f"closed epoch {epoch}: root {closed.root}, cumulative {closed.cumulative_total}")
        advance()

    def settle_root() -> None:
        submitter.step()  # proposes; the root waits for its challenge period
        chain.increase_time(CHALLENGE)
        submitter.step()  # accepts
        advance()

    run.progress(SETTLE, 0, steps)
    close(1)
    settle_root()
    run.clock.stop("close+propose", t)

    # Claims through the API's calldata. A node, a viewer and a creator (the top earner of each
    # class) claim with their own key, now and after the last root; then one relayer sends a
    # claimMany for accounts of all three classes.
    t = run.clock.start()
    world = build_world(run.sim_cfg)
    by_class = _balances(store, 1)
    own: dict[str, str] = {}  # account -> class
    for i, cls in enumerate(CLASSES):
        ranked = sorted(
            (a for a, row in by_class.items() if row[i] > 0), key=lambda a: -by_class[a][i]
        )
        for account in [a for a in ranked if a not in own][: cfg.own_claims]:
            own[account] = cls
    keys = own_keys(world, own)
    claim_steps = 2 * len(own) + 1
    claim_done = 0

    def claimed_one() -> None:
        nonlocal claim_done
        claim_done += 1
        run.progress(CLAIMS, claim_done, claim_steps)

    run.progress(CLAIMS, 0, claim_steps)
    for account in own:
        chain.set_balance(account, 10**17)  # gas money for its own claim
        info = c.refresh_claim(distributor, claim_info_from_service(run.url, account))
        c.send_claim(keys[account], distributor, info)
        claimed_one()
    run.clock.stop("claims", t)

    t = run.clock.start()
    close(2)
    close(3)  # closed while nothing is proposed for 2: one proposal carries both
    settle_root()
    close(4)
    settle_root()
    run.clock.stop("close+propose", t)

    t = run.clock.start()
    final = _balances(store, EPOCHS)
    tree = _accepted_tree(submitter)
    for account in own:
        info = c.refresh_claim(distributor, claim_info_from_service(run.url, account))
        if info.claimable > 0:  # earned nothing since its first claim: nothing to send
            c.send_claim(keys[account], distributor, info)
        claimed_one()
    leaves = dict(tree.values)
    relayed: dict[str, str] = {}  # account -> the class it was picked from
    share = cfg.relayed_claims // len(CLASSES)
    for i, cls in enumerate(CLASSES):
        mine = sorted(a for a, row in final.items() if row[i] > 0 and a in leaves)
        mine = [a for a in mine if a not in own and a not in relayed]
        step = max(1, len(mine) // max(1, share))  # spread over the class, not its top
        relayed.update(dict.fromkeys(mine[::step][:share], cls))
    infos = [claim_info_from_service(run.url, a) for a in relayed]
    results = c.relay_claims(run.relayer, distributor, infos, batch_size=len(infos) or 1)
    claimed_one()
    run.say(
        f"relayed one claimMany for {len(relayed)} accounts (nodes, viewers and creators): "
        f"tx {results[0].tx_hash if results else '-'}"
    )
    index_claims(store, distributor, run.deployment.block)
    run.clock.stop("claims", t)

    audit_report = _audit(run)
    return _summarise(run, verdicts, submitter, final, tree, own, relayed, audit_report)


def _audit(run: _Run) -> Any:
    """The auditor, as a third party runs it: the chain's events and the files over HTTP."""
    from settlement.services import audit as auditor

    t = run.clock.start()
    run.progress(AUDIT, 0, 1)
    if run.cfg.rpc is None:
        # The embedded chain has no RPC endpoint: the auditor reads it through the same web3.
        view = auditor.ChainView(run.distributor, run.deployment.block)
    else:
        view = auditor.ChainView.connect(
            run.cfg.rpc, run.deployment.distributor, run.deployment.block
        )
    # With an HTTP dataURI on chain the auditor follows it; else it is given /v1/data.
    source = None if run.settings.data_base_uri else auditor.HttpSource(f"{run.url}/v1/data")
    try:
        report = auditor.audit(
            source,
            view,
            None,
            lambda what, done, total: run.progress(AUDIT, done, max(total, 1)),
            workers=run.cfg.workers,
        )
    finally:
        if source is not None:
            source.close()
    report.source = f"{run.url}/v1/data" + (" (the dataURIs on chain)" if source is None else "")
    verdict = "clean" if report.ok else f"{len(report.mismatches) + report.suppressed} mismatch(es)"
    run.say(f"audited {len(report.epochs)} epochs over HTTP from {report.source}: {verdict}")
    run.clock.stop("audit", t)
    return report


def _summarise(
    run: _Run,
    verdicts: dict[str, int],
    submitter: Submitter,
    final: dict[str, tuple[int, int, int]],
    tree: MerkleTree,
    own: dict[str, str],
    relayed: dict[str, str],
    audit_report: Any,
) -> DemoResult:
    """The checks: on-chain balances against allocations for everyone, and the audit."""
    distributor = run.distributor
    problems: list[str] = []
    checks = []
    leaves = dict(tree.values)
    claimed_accounts = set(own) | set(relayed)
    claims = {cls: Claimed() for cls in CLASSES}
    # Everyone's claimed amount from the Claimed indexer (one log scan); the token balance and
    # the contract's claimed() read directly for each account that claimed.
    indexed_claims = sdb.SubmitterStore(run.store).claimed_all()
    for account, (n, v, cr) in sorted(final.items()):
        total = n + v + cr
        if leaves.get(account, 0) != total:
            problems.append(f"{account}: leaf {leaves.get(account, 0)} != allocation {total}")
        expect = total if account in claimed_accounts else 0
        if indexed_claims.get(account, 0) != expect:
            problems.append(
                f"{account}: Claimed events say {indexed_claims.get(account, 0)}, expected {expect}"
            )
        if account in claimed_accounts:
            balance = distributor.token.balance_of(account)
            claimed = distributor.claimed(account)
            if balance != expect or claimed != expect:
                problems.append(
                    f"{account}: balance {balance}, claimed {claimed}, expected {expect}"
                )
            cls = own.get(account) or relayed[account]
            row = claims[cls]
            row.own_key += account in own
            row.relayed += account not in own
            row.paid += balance
            row.equal += balance == claimed == total
            checks.append((account, cls, total, balance, claimed))
    for cls, row in claims.items():
        if row.own_key == 0 or row.relayed == 0:
            problems.append(f"no {cls} claimed both with its own key and through the relayer")
    allocated = sum(n + v + cr for n, v, cr in final.values())
    if allocated != distributor.cumulative_total() or allocated != tree.cumulative_total:
        problems.append(
            f"allocated {allocated} != on-chain cumulative total {distributor.cumulative_total()}"
        )
    per_root = proposals_on_chain(distributor, run.deployment.block)
    if set(per_root.values()) != {1}:
        problems.append(f"a root was proposed more than once: {per_root}")
    if not audit_report.ok:
        problems.append(
            f"the audit found {len(audit_report.mismatches) + audit_report.suppressed} mismatch(es)"
        )
    if [e.epoch for e in audit_report.epochs] != list(range(1, EPOCHS + 1)):
        problems.append(
            f"the audit covered {[e.epoch for e in audit_report.epochs]}, not 1-{EPOCHS}"
        )
    top = {
        cls: sorted(((a, row[i]) for a, row in final.items() if row[i] > 0), key=lambda x: -x[1])[
            :3
        ]
        for i, cls in enumerate(CLASSES)
    }
    proposals = [
        {
            "epochs": f"{r.first_epoch}-{r.epoch}" if r.first_epoch < r.epoch else str(r.epoch),
            "root": r.root,
            "total": r.cumulative_total,
            "status": r.status,
        }
        for r in submitter.rows.all()
    ]
    audit_command = None
    if run.cfg.rpc is not None:
        audit_command = (
            f"settlement audit --rpc {run.cfg.rpc} --distributor {run.deployment.distributor} "
            f"--from-block {run.deployment.block}"
        )
    kinds = run.sim.truth["kinds"]
    return DemoResult(
        verdicts=verdicts,
        expected=dict(run.sim.truth["expected"]["ingest"]),
        kinds={
            reason: "; ".join(
                k["what"] for k in kinds.values() if k["count"] and k["reason"] == reason
            )
            for reason in {k["reason"] for k in kinds.values()}
        },
        proposals=proposals,
        top=top,
        checks=checks,
        claims=claims,
        totals={
            "allocated": allocated,
            "funded": distributor.total_funded(),
            "onchain_total": distributor.cumulative_total(),
            "paid": sum(row.paid for row in claims.values()),
            "claimed_accounts": len(claimed_accounts),
            "accounts": len(final),
        },
        audit=audit_report,
        seconds=run.clock.wall,
        cpu=run.clock.cpu,
        ok=not problems,
        problems=problems,
        url=run.url,
        audit_command=audit_command,
    )


def _accepted_tree(submitter: Submitter) -> MerkleTree:
    row = submitter.rows.latest_accepted(submitter.distributor.root())
    if row is None or row.dump_path is None:
        raise SettlementError("no accepted root with a published tree: the demo cannot claim")
    return MerkleTree.load(Path(row.dump_path).read_bytes())

"""`settlement demo`: a simulated network through the real HTTP API into SQLite, a few short
epochs closed, roots proposed and accepted on the embedded chain, claims (one relayed
claimMany), and a summary whose last check is on-chain balances == allocations.

Everything runs in this process and on 127.0.0.1: the embedded py-evm chain lives here,
so the API runs under uvicorn in a thread to share it. Nothing is left running afterwards.
With `rpc` (a dev chain such as anvil) the contracts, roots and claims stay on that chain
and the datasets in `directory`, so a third party can audit the run afterwards.
"""

from __future__ import annotations

import contextlib
import dataclasses
import secrets
import tempfile
import threading
import time
from collections.abc import Iterator
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
from settlement.errors import InputError, SettlementError
from settlement.services.claims import index_claims
from settlement.services.close import close_epoch
from settlement.services.submit import Submitter, proposals_on_chain
from settlement.sim.generate import generate
from settlement.sim.post import post, upload_registries
from settlement.sim.world import SimConfig

EPOCH_SECONDS = 900
GRACE_SECONDS = 60
SESSION_AGE = 1800  # sessions of at most 20 minutes: they span an epoch or two
WINDOW = 3000  # sessions start in the first 50 minutes
EPOCHS = 4
CHALLENGE = 600  # seconds; the embedded chain's clock is moved past it


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    nodes: int = 300
    viewers: int = 3000
    creators: int = 60
    contents: int = 600
    receipts: int = 40_000
    seed: int = 1
    workers: int | None = None
    single_claims: int = 4  # accounts claimed one by one, twice (after the first root and the last)
    relayed_claims: int = 40  # accounts in the relayed claimMany
    directory: str | None = None
    rpc: str | None = None  # a dev chain that outlives the demo (anvil); None: the embedded one


@dataclasses.dataclass
class DemoResult:
    verdicts: dict[str, int]
    proposals: list[dict[str, Any]]
    top: dict[str, list[tuple[str, int]]]
    checks: list[tuple[str, str, int, int, int]]  # account, class, allocation, balance, claimed
    totals: dict[str, int]
    seconds: dict[str, float]
    ok: bool
    problems: list[str]
    audit_command: str | None = None  # how a third party audits this run (with `rpc`)


class _Server:
    """uvicorn serving `app` on 127.0.0.1 in a thread; `stop` always joins it."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.port = c.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", access_log=False
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="demo-api", daemon=True)

    def __enter__(self) -> _Server:
        self.thread.start()
        c.wait_until(lambda: self.server.started or not self.thread.is_alive(), 30, "the API")
        if not self.server.started:
            raise SettlementError("the demo API did not start; see the log above")
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(30)


def _balances(store: Store, epoch: int) -> dict[str, tuple[int, int, int]]:
    epochs = EpochStore(store)
    rows = epochs.run(lambda cur: CloseReader(epochs, cur).balances(epoch + 1))
    return {"0x" + a.hex(): v for a, v in rows.items()}


def _throwaway_keys(chain: c.Chain) -> tuple[c.Key, c.Key, c.Key]:
    """Admin, poster and relayer keys made for this run and funded with the dev chain's own
    `anvil_setBalance`: the demo needs no key from anyone, and none outlives the process."""
    from eth_account import Account

    admin, poster, relayer = (
        c.Key(Account.create(), f"demo-{role}") for role in ("admin", "poster", "relayer")
    )
    for key in (admin, poster, relayer):
        chain.set_balance(key.address, 10**20)
        # A chain that is not a dev chain answers anvil_setBalance with an error, not money.
        if chain.w3.eth.get_balance(key.address) < 10**20:
            raise InputError(
                "demo --rpc needs a dev chain that funds accounts with anvil_setBalance (anvil)"
            )
    return admin, poster, relayer


@contextlib.contextmanager
def _workdir(directory: str | None) -> Iterator[Path]:
    if directory is not None:
        path = Path(directory)
        if path.exists() and any(path.iterdir()):
            raise InputError(
                f"--dir {path} is not empty: the demo starts from nothing, give a new one"
            )
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="w2e-demo-") as tmp:
        yield Path(tmp)


def run_demo(cfg: DemoConfig, say: Any = print) -> DemoResult:
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    now = int(time.time())
    # Epoch 1 starts early enough that every honest receipt is in the past and the first
    # EPOCHS epochs are due now: issuedAt <= start + WINDOW + 1200 <= now.
    genesis = now - (WINDOW + SESSION_AGE + 600) - 100
    with _workdir(cfg.directory) as work:
        base = dict(
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
            data_base_uri=None,
        )
        settings = Settings(**base)  # type: ignore[arg-type]
        if cfg.rpc is None:
            chain = c.connect(settings, confirmations=1, poll_interval=0.01)
            admin, poster, relayer = chain.dev_key(0), chain.dev_key(1), chain.dev_key(2)
        else:
            chain = c.connect(settings, rpc_url=cfg.rpc, confirmations=1, poll_interval=0.05)
            admin, poster, relayer = _throwaway_keys(chain)
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
        seconds["deploy"] = time.perf_counter() - t0

        t = time.perf_counter()
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
            workers=cfg.workers,
        )
        sim = generate(sim_cfg, work / "sim")
        say(
            f"simulated {sim.receipts} receipts of {cfg.nodes} nodes and {cfg.viewers} viewers, "
            f"{sum(sim.kinds.values())} from bad actors"
        )
        seconds["simulate"] = time.perf_counter() - t

        from settlement.api.app import create_app
        from settlement.client.http import SettlementClient
        from settlement.services.claims import ChainContext

        store = open_store(settings.database_url)
        try:
            app = create_app(settings, store, chain_context=ChainContext(chain, distributor))
            with _Server(app) as server:
                t = time.perf_counter()
                token = settings.admin_token.get_secret_value()  # type: ignore[union-attr]
                upload_registries(server.url, sim.out_dir / "registries.json", token)
                with SettlementClient(server.url, max_batch=2000) as client:
                    verdicts = post(sim.receipts_path, client)
                say(f"posted to {server.url}/v1/receipts: {verdicts}")
                seconds["ingest"] = time.perf_counter() - t
                return _settle(
                    cfg,
                    settings,
                    store,
                    chain,
                    distributor,
                    deployment,
                    poster,
                    relayer,
                    server.url,
                    verdicts,
                    seconds,
                    t0,
                    say,
                )
        finally:
            store.close()


def _settle(
    cfg: DemoConfig,
    settings: Settings,
    store: Store,
    chain: c.Chain,
    distributor: c.Distributor,
    deployment: c.Deployment,
    poster: c.Key,
    relayer: c.Key,
    url: str,
    verdicts: dict[str, int],
    seconds: dict[str, float],
    t0: float,
    say: Any,
) -> DemoResult:
    t = time.perf_counter()
    now = int(time.time())
    submitter = Submitter(
        store, settings, chain, distributor, poster, deployment_block=deployment.block, say=say
    )

    def close(epoch: int) -> None:
        closed = close_epoch(store, settings, epoch, now=now)
        assert closed is not None
        say(f"closed epoch {epoch}: root {closed.root}, cumulative {closed.cumulative_total}")

    def settle_root() -> None:
        submitter.step()  # proposes; the root waits for its challenge period
        chain.increase_time(CHALLENGE)
        submitter.step()  # accepts

    close(1)
    settle_root()
    seconds["close+propose"] = time.perf_counter() - t

    # Claims through the API's calldata: some nodes and viewers, now and after the last root.
    t = time.perf_counter()
    tree1 = _accepted_tree(submitter)
    by_class = _balances(store, 1)
    nodes = [a for a, (n, _, _) in sorted(by_class.items(), key=lambda x: -x[1][0]) if n > 0]
    viewers = [a for a, (_, v, _) in sorted(by_class.items(), key=lambda x: -x[1][1]) if v > 0]
    half = cfg.single_claims // 2
    singles = nodes[:half] + viewers[: cfg.single_claims - half]
    for account in singles:
        info = c.refresh_claim(distributor, claim_info_from_service(url, account))
        c.send_claim(relayer, distributor, info)
    assert tree1 is not None
    seconds["claims"] = time.perf_counter() - t

    t = time.perf_counter()
    close(2)
    close(3)  # closed while nothing is proposed for 2: one proposal carries both
    settle_root()
    close(4)
    settle_root()
    seconds["close+propose"] += time.perf_counter() - t

    t = time.perf_counter()
    final = _balances(store, EPOCHS)
    tree = _accepted_tree(submitter)
    for account in singles:
        info = c.refresh_claim(distributor, claim_info_from_service(url, account))
        if info.claimable > 0:  # earned nothing since its first claim: nothing to send
            c.send_claim(relayer, distributor, info)
    rest = [a for a, _ in tree.values if a not in set(singles)]
    # Every few accounts, whatever their class: nodes, viewers and creators alike.
    step = max(1, len(rest) // max(1, cfg.relayed_claims))
    relayed = rest[::step][: cfg.relayed_claims]
    infos = [claim_info_from_service(url, a) for a in relayed]
    results = c.relay_claims(relayer, distributor, infos, batch_size=len(infos) or 1)
    say(
        f"relayed one claimMany for {len(relayed)} accounts: tx {results[0].tx_hash if results else '-'}"
    )
    indexed = index_claims(store, distributor, deployment.block)
    seconds["claims"] += time.perf_counter() - t

    # The check: on-chain balances against allocations, for everyone.
    problems: list[str] = []
    checks = []
    leaves = dict(tree.values)
    claimed_accounts = set(singles) | set(relayed)
    # Everyone's claimed amount from the Claimed indexer (one log scan); the token balance and
    # the contract's claimed() read directly for each account that claimed.
    indexed_claims = sdb.SubmitterStore(store).claimed_all()
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
            cls = max(("node", n), ("viewer", v), ("creator", cr), key=lambda x: x[1])[0]
            checks.append((account, cls, total, balance, claimed))
    allocated = sum(n + v + cr for n, v, cr in final.values())
    if allocated != distributor.cumulative_total() or allocated != tree.cumulative_total:
        problems.append(
            f"allocated {allocated} != on-chain cumulative total {distributor.cumulative_total()}"
        )
    per_root = proposals_on_chain(distributor, deployment.block)
    if set(per_root.values()) != {1}:
        problems.append(f"a root was proposed more than once: {per_root}")
    top = {
        cls: sorted(((a, row[i]) for a, row in final.items() if row[i] > 0), key=lambda x: -x[1])[
            :3
        ]
        for i, cls in enumerate(("node", "viewer", "creator"))
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
    seconds["total"] = time.perf_counter() - t0
    audit_command = None
    if cfg.rpc is not None:
        audit_command = (
            f"settlement audit --rpc {cfg.rpc} --distributor {deployment.distributor} "
            f"--from-block {deployment.block}"
        )
    return DemoResult(
        verdicts=verdicts,
        proposals=proposals,
        top=top,
        checks=checks,
        totals={
            "allocated": allocated,
            "funded": distributor.total_funded(),
            "onchain_total": distributor.cumulative_total(),
            "paid": sum(distributor.token.balance_of(a) for a in claimed_accounts),
            "claimed_accounts": len(claimed_accounts),
            "accounts": len(final),
            "claimed_events_indexed": indexed,
        },
        seconds=seconds,
        ok=not problems,
        problems=problems,
        audit_command=audit_command,
    )


def _accepted_tree(submitter: Submitter) -> MerkleTree:
    row = submitter.rows.latest_accepted(submitter.distributor.root())
    if row is None or row.dump_path is None:
        raise SettlementError("no accepted root with a published tree: the demo cannot claim")
    return MerkleTree.load(Path(row.dump_path).read_bytes())


def _w2e(amount: int) -> str:
    whole, frac = divmod(amount, 10**18)
    return f"{whole}.{frac:018d}"[: len(str(whole)) + 5]


def render(result: DemoResult) -> None:
    """The short Rich summary."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    verdicts = Table(title="Receipts by verdict")
    verdicts.add_column("verdict / reason")
    verdicts.add_column("receipts", justify="right")
    for label, n in sorted(result.verdicts.items(), key=lambda x: -x[1]):
        verdicts.add_row(label, str(n))
    console.print(verdicts)

    roots = Table(title="Roots on chain (one proposal each)")
    for col in ("epochs", "root", "cumulative W2E", "status"):
        roots.add_column(col)
    for p in result.proposals:
        roots.add_row(p["epochs"], p["root"][:18] + "…", _w2e(p["total"]), p["status"])
    console.print(roots)

    top = Table(title="Top earners by class (cumulative, W2E)")
    for col in ("class", "account", "W2E"):
        top.add_column(col)
    for cls, rows in result.top.items():
        for account, amount in rows:
            top.add_row(cls, account, _w2e(amount))
    console.print(top)

    claims = Table(title="Claimed accounts: on-chain balance against allocation")
    for col in ("account", "class", "allocation", "on-chain", "equal"):
        claims.add_column(col)
    for account, cls, alloc, balance, _claimed in result.checks[:10]:
        claims.add_row(
            f"{account[:10]}…{account[-6:]}",
            cls,
            _w2e(alloc),
            _w2e(balance),
            "yes" if alloc == balance else "NO",
        )
    if len(result.checks) > 10:
        claims.add_row(f"… and {len(result.checks) - 10} more", "", "", "", "")
    console.print(claims)
    t = result.totals
    console.print(
        f"accounts {t['accounts']}, claimed {t['claimed_accounts']} (paid {_w2e(t['paid'])} W2E); "
        f"allocated {t['allocated']} = on-chain cumulativeTotal {t['onchain_total']} "
        f"<= funded {t['funded']} base units"
    )
    timing = ", ".join(f"{k} {v:.1f} s" for k, v in result.seconds.items())
    console.print(f"time: {timing}")
    if result.audit_command is not None:
        console.print(f"audit it from the chain and the published files: {result.audit_command}")
    if result.ok:
        console.print("[bold green]OK[/]: every on-chain balance equals its allocation")
    else:
        console.print(f"[bold red]MISMATCH[/]: {len(result.problems)} problem(s)")
        for p in result.problems[:20]:
            console.print(f"  {p}")

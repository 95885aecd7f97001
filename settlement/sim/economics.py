"""Running the hostile-economics scenarios (`settlement/sim/scenarios.py`) through the real
service and close, measuring each pool, and the bad-root scenario on the embedded chain.

`run_scenario(name, profile)` gives an `Outcome`: per pool the attacker's share of the
epoch's emission, its share of the real work, what honest accounts lost against the run
without the attacker (each account's shortfall, gains elsewhere not netted), and the bound
the defences promise (None: unbounded, the share grows with keys the attacker makes).
`scripts/economics` prints them as a table and a last-line JSON object.
"""

from __future__ import annotations

import random
import secrets as pysecrets
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

from settlement.sim.scenarios import (
    CHAIN_ID,
    DISTRIBUTOR,
    EPOCH,
    GRACE,
    POOLS,
    PROFILES,
    SCALES,
    SCENARIOS,
    UINT64_MAX,
    World,
    honest_world,
)


@dataclass
class PoolResult:
    attacker: int  # base units the attacker's accounts got
    emitted: int  # the pool's emission this epoch
    # What honest accounts got in the run without the attacker, and the sum over them of
    # what they got less in the attack run (an account's gain does not offset another's loss).
    honest_lost: int
    honest_baseline: int
    attacker_work: int
    total_work: int

    @property
    def attacker_share(self) -> Fraction:
        return Fraction(self.attacker, self.emitted) if self.emitted else Fraction(0)

    @property
    def work_share(self) -> Fraction:
        return Fraction(self.attacker_work, self.total_work) if self.total_work else Fraction(0)

    @property
    def honest_loss(self) -> Fraction:
        if not self.honest_baseline:
            return Fraction(0)
        return Fraction(self.honest_lost, self.honest_baseline)


@dataclass
class Outcome:
    name: str
    profile: str
    pools: dict[str, PoolResult]
    verdicts: dict[str, int]
    identities: int | None
    bound: dict[str, Fraction | None]  # None: unbounded (grows with the attacker's keys)
    note: str

    def within_bound(self) -> bool:
        return all(
            b is not None and self.pools[p].attacker_share <= b for p, b in self.bound.items()
        )


def _settings(work: Path, genesis: int, profile: str, **extra: Any) -> Any:
    from settlement.config import Settings

    values: dict[str, Any] = {
        "database_url": f"sqlite:///{work}/economics.db",
        "data_dir": str(work / "epochs"),
        "genesis": genesis,
        "epoch_seconds": EPOCH,
        "grace_seconds": GRACE,
        "chain_id": CHAIN_ID,
        "distributor": DISTRIBUTOR,
        "rate_limit": 0,
        "admin_token": pysecrets.token_hex(16),
        **PROFILES[profile],
        **extra,
    }
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def run_world(
    world: World,
    profile: str,
    *,
    extra: dict[str, Any] | None = None,
    after_close: Callable[[Any, Any], None] | None = None,
) -> tuple[dict[str, dict[bytes, int]], dict[str, int], Any]:
    """Registries, garbage and receipts through the HTTP API, then the real close of epoch 1.
    Returns (allocations by pool and account, verdict counts, settings). `extra` settings
    win over the profile's; `after_close(settings, closed)` runs while the dataset exists."""
    from fastapi.testclient import TestClient

    from settlement.adapters.db.store import open_store
    from settlement.api.app import create_app
    from settlement.services.close import close_epoch

    with tempfile.TemporaryDirectory(prefix="w2e-economics-") as tmp:
        work = Path(tmp)
        settings = _settings(work, world.genesis, profile, **(extra or {}))
        token = settings.admin_token.get_secret_value()
        store = open_store(settings.database_url)
        verdicts: dict[str, int] = {}
        try:
            with TestClient(create_app(settings, store)) as client:
                auth = {"Authorization": f"Bearer {token}"}
                r = client.post("/v1/admin/registries", json=world.registries(), headers=auth)
                r.raise_for_status()
                batches = [*world.garbage, *_chunks(world.receipts, 2000)]
                for batch in batches:
                    answer = client.post("/v1/receipts", json={"receipts": batch})
                    answer.raise_for_status()
                    for item in answer.json()["results"]:
                        label = item["reason"] or item["verdict"]
                        verdicts[label] = verdicts.get(label, 0) + 1
                closed = close_epoch(store, settings, 1, now=world.genesis + EPOCH + GRACE)
                if after_close is not None:
                    after_close(settings, closed)
                rows = client.get("/v1/epochs/1/allocations", params={"limit": 10_000})
                rows.raise_for_status()
        finally:
            store.close()
    alloc: dict[str, dict[bytes, int]] = {p: {} for p in POOLS}
    for row in rows.json():
        alloc[row["class"]][bytes.fromhex(row["account"][2:])] = int(row["amount"])
    return alloc, dict(sorted(verdicts.items())), settings


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _emitted(settings: Any) -> dict[str, int]:
    node = settings.emission * settings.bps_node // 10_000
    viewer = settings.emission * settings.bps_viewer // 10_000
    return {"node": node, "viewer": viewer, "creator": settings.emission - node - viewer}


def _bound(
    settings: Any, identities: int | None, honest_work: dict[str, int]
) -> dict[str, Fraction | None]:
    """The most `identities` allowlisted viewers at the per-viewer caps can draw from each
    pool against the honest work: k*cap / (k*cap + honest). None: unlimited identities."""
    if identities is None:
        return {p: None for p in POOLS}
    caps = {
        "node": settings.max_bytes_per_viewer,
        "viewer": settings.max_watch_seconds_per_epoch,
        "creator": settings.max_watch_seconds_per_epoch,
    }
    out: dict[str, Fraction | None] = {}
    for p in POOLS:
        if caps[p] >= UINT64_MAX:  # no cap: one identity draws any share
            out[p] = None if identities else Fraction(0)
            continue
        most = identities * caps[p]
        out[p] = Fraction(most, most + honest_work[p]) if most else Fraction(0)
    return out


_baselines: dict[tuple[int, str, str], dict[str, dict[bytes, int]]] = {}


def run_scenario(
    name: str, profile: str, scale: str = "small", seed: int = 7, attack: int | None = None
) -> Outcome:
    """One scenario under one profile: the attack run and (cached) the honest-only run.
    `attack` overrides the scale's number of attacker keys or sessions."""
    if name == BAD_ROOT:
        return run_bad_root(profile, scale, seed)
    sc = SCALES[scale] if attack is None else replace(SCALES[scale], attack=attack)
    # Epoch 1 is running while the receipts arrive (the last are issued ~3,070 s after
    # genesis, so at most a few seconds ahead of now); the close runs at its cutoff.
    genesis = int(time.time()) - 3100
    key = (seed, scale, profile)
    if key not in _baselines:
        _baselines[key] = run_world(honest_world(seed, sc, genesis), profile)[0]
    baseline = _baselines[key]
    world = honest_world(seed, sc, genesis)
    honest_work = {p: sum(world.work[p].values()) for p in POOLS}
    _, build = SCENARIOS[name]
    attack = build(world, sc, random.Random(f"{seed}:{name}"), PROFILES[profile])
    alloc, verdicts, settings = run_world(world, profile)
    emitted = _emitted(settings)
    pools = {}
    for p in POOLS:
        mine = sum(a for acct, a in alloc[p].items() if acct in attack.accounts)
        base = {a: v for a, v in baseline[p].items() if a not in attack.accounts}
        pools[p] = PoolResult(
            attacker=mine,
            emitted=emitted[p],
            honest_lost=sum(max(0, v - alloc[p].get(a, 0)) for a, v in base.items()),
            honest_baseline=sum(base.values()),
            attacker_work=sum(w for acct, w in world.work[p].items() if acct in attack.accounts),
            total_work=sum(world.work[p].values()),
        )
    return Outcome(
        name,
        profile,
        pools,
        verdicts,
        attack.identities,
        _bound(settings, attack.identities, honest_work),
        attack.bound_note,
    )


# --- a poster key posting a bad root -------------------------------------------------------

BAD_ROOT = "bad_root"
BAD_ROOT_TEXT = (
    "the poster key proposes the epoch's tree plus a whole emission to the attacker; "
    "the watchtower (with the guardian key) audits the manifest and revokes it"
)
# Profiles without the watchtower running: dev, and production as run before issue 17
# documented it as part of a production deployment.
WATCHTOWER_PROFILES = ("production",)


def run_bad_root(profile: str, scale: str = "small", seed: int = 7) -> Outcome:
    """The honest epoch through the service and close on the embedded chain; a stolen poster
    key proposes the true tree plus one emission to an attacker account. With the watchtower
    (production), it audits the proposal against the published manifest and the guardian
    revokes it inside the challenge period; without it, the root is accepted once the
    period ends. The attacker's share: what it can claim under the accepted root, against
    the epoch's emission."""
    from eth_account import Account

    from settlement.adapters import chain as c
    from settlement.domain.merkle import MerkleTree
    from settlement.domain.receipts import Domain
    from settlement.services.published import epoch_data_uri
    from settlement.services.submit import epoch_dump_path
    from settlement.services.watchtower import Watchtower, chained, manifest_audit

    challenge = 3600
    chain = c.connect(rpc_url="", poll_interval=0.01, bump_blocks=2)
    keys = {n: c.Key(Account.create(), n) for n in ("admin", "poster", "guardian", "relayer")}
    for k in keys.values():
        chain.set_balance(k.address, 10**20)
    emission = _settings(Path("."), 0, profile).emission
    deployment = c.deploy(
        chain,
        keys["admin"],
        poster=keys["poster"].address,
        guardian=keys["guardian"].address,
        challenge_period=challenge,
        mint=4 * emission,
        fund=4 * emission,
    )
    distributor = c.Distributor(chain, deployment.distributor)
    attacker = Account.create().address.lower()
    stolen = emission
    result: dict[str, Any] = {}

    def attack(settings: Any, closed: Any) -> None:
        dump = epoch_dump_path(settings, closed.manifest)
        assert dump is not None
        values = dict(MerkleTree.load(Path(dump).read_bytes()).values)
        values[attacker] = stolen
        tree = MerkleTree.of(sorted(values.items()))
        chain.transact(
            keys["poster"],
            distributor.propose_root(
                1, tree.root, tree.cumulative_total, closed.data_hash, epoch_data_uri(settings, 1)
            ),
        )
        if profile in WATCHTOWER_PROFILES:
            tower = Watchtower(
                distributor,
                chained(manifest_audit()),
                from_block=deployment.block,
                guardian=keys["guardian"],
                say=lambda message: None,
            )
            result["actions"] = [a.did for a in tower.step()]
        chain.increase_time(challenge)
        if distributor.pending_root() is not None:
            chain.transact(keys["relayer"], distributor.accept_root())
        result["bad_root_accepted"] = distributor.root() == tree.root

    domain = Domain(chain.chain_id, bytes.fromhex(deployment.distributor[2:]))
    genesis = int(time.time()) - 3100
    world = honest_world(seed, SCALES[scale], genesis, domain)
    run_world(
        world,
        profile,
        extra={"chain_id": chain.chain_id, "distributor": deployment.distributor},
        after_close=attack,
    )
    taken = stolen if result["bad_root_accepted"] else 0
    pool = PoolResult(
        attacker=taken,
        emitted=emission,
        honest_lost=0,  # honest leaves stay in the bad tree: the loss is the contract's funds
        honest_baseline=emission,
        attacker_work=0,
        total_work=1,
    )
    return Outcome(
        BAD_ROOT,
        profile,
        {"all": pool},
        {"watchtower": len(result.get("actions", [])), **{a: 1 for a in result.get("actions", [])}},
        None,
        {"all": Fraction(0) if profile in WATCHTOWER_PROFILES else None},
        "revoked inside the challenge period"
        if profile in WATCHTOWER_PROFILES
        else "no watchtower: accepted after the challenge period (any amount up to the funds)",
    )


# --- report --------------------------------------------------------------------------------


def scenario_names() -> list[str]:
    return [*SCENARIOS, BAD_ROOT]


def describe(name: str) -> str:
    return BAD_ROOT_TEXT if name == BAD_ROOT else SCENARIOS[name][0]


def percent(x: Fraction | None) -> str:
    """A share as a percentage with two decimals, by integer arithmetic; None: unbounded."""
    if x is None:
        return "unbounded"
    hundredths = (x.numerator * 10_000 * 2 + x.denominator) // (2 * x.denominator)
    return f"{hundredths // 100}.{hundredths % 100:02d}%"


def ratio(x: Fraction | None) -> float | None:
    """A share for the JSON line: a ratio rounded to 6 decimals (a measurement, not money);
    None (unbounded) stays None."""
    return None if x is None else round(x.numerator / x.denominator, 6)


def to_json(outcomes: list[Outcome]) -> dict[str, Any]:
    """{"scenarios": {name: {profile: {"pool": {pool: {...}}, "bounded", "within_bound"}}}}."""
    out: dict[str, Any] = {}
    for o in outcomes:
        out.setdefault(o.name, {})[o.profile] = {
            "pool": {
                p: {
                    "attacker_share": ratio(r.attacker_share),
                    "work_share": ratio(r.work_share),
                    "honest_loss": ratio(r.honest_loss),
                    "bound": ratio(o.bound[p]),
                }
                for p, r in o.pools.items()
            },
            "bounded": all(b is not None for b in o.bound.values()),
            "within_bound": o.within_bound(),
            "verdicts": o.verdicts,
        }
    return {"scenarios": out}

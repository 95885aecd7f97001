"""Hostile economics (issue 17 item 4): each scenario is an honest population plus one
attacker, whose receipts go through the real HTTP API (the FastAPI app in-process over a
real SQLite store) and whose epoch is settled by the real close (`services/close.py`).

From the close's allocations (read back through `GET /v1/epochs/1/allocations`) each
scenario reports, per pool (node, viewer, creator): the attacker's share of the pool, the
share of the real work the attacker did (bytes really served, seconds really watched),
what honest participants lost against the same run without the attacker, and the bound
the defences promise. Same seed, same numbers: keys, sessions and counters come from the
seed; only absolute times move with the clock, and no reward depends on them.

Profiles: `dev` is Settings' defaults (embedded/dev mode); `before` what production mode
accepted before issue 17 (per-viewer caps set, approval registry, no viewer allowlist);
`production` what it accepts now (the viewer allowlist is required: safety.py).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import coincurve

from settlement.client.signer import address_of, sign_digest
from settlement.domain.receipts import DeliveryReceipt, Domain, Receipt, ViewReceipt, digest
from settlement.domain.wire import to_wire

POOLS = ("node", "viewer", "creator")
SEGMENT = 4  # seconds per segment (the Settings default)
EPOCH = 3600
GRACE = 300
DISTRIBUTOR = "0x" + "d1" * 20
CHAIN_ID = 31337
# The byte cap production must set (safety.py refuses the unbounded default): a viewer's
# whole watch cap (3,600 s) at 8 Mbit/s, above every rung of an HD ladder.
RECOMMENDED_MAX_BYTES_PER_VIEWER = 3600 * 8_000_000 // 8
HONEST_BITRATES = (1_500_000, 3_000_000, 6_000_000)  # bits per second
MAX_BITRATE = 50_000_000  # Settings.max_bitrate default: the plausibility limit
UINT64_MAX = 2**64 - 1

_CAPS = {"max_bytes_per_viewer": RECOMMENDED_MAX_BYTES_PER_VIEWER}
PROFILES: dict[str, dict[str, Any]] = {
    "dev": {},
    "before": {**_CAPS, "registry_mode": "approval", "viewer_allowlist": False},
    "production": {**_CAPS, "registry_mode": "approval", "viewer_allowlist": True},
}


@dataclass(frozen=True)
class Scale:
    nodes: int
    viewers: int
    creators: int
    contents: int
    attack: int  # keys, sessions or viewers the attacker brings (scenario-dependent)
    garbage_batches: int


SCALES = {
    "small": Scale(nodes=4, viewers=24, creators=4, contents=8, attack=24, garbage_batches=2),
    "full": Scale(nodes=20, viewers=300, creators=20, contents=60, attack=300, garbage_batches=10),
}


# --- parties and receipts -------------------------------------------------------------


@dataclass(frozen=True)
class Party:
    key: coincurve.PrivateKey
    address: bytes

    @classmethod
    def of(cls, seed: int, role: str, index: int) -> Party:
        from settlement.domain.receipts import keccak

        key = coincurve.PrivateKey(keccak(f"w2e-economics:{seed}:{role}:{index}".encode()))
        return cls(key, address_of(key))

    @property
    def hex(self) -> str:
        return "0x" + self.address.hex()


def signed(key: coincurve.PrivateKey, r: Receipt, domain: Domain) -> dict[str, Any]:
    """The wire object of `r` signed by `key` under `domain`."""
    return to_wire(replace(r, signature=sign_digest(key, digest(r, domain))))


@dataclass
class World:
    """The honest population, the registries, the receipts and the real work done."""

    seed: int
    genesis: int
    domain: Domain
    nodes: list[Party]
    viewers: list[Party]
    creators: list[Party]
    contents: list[tuple[bytes, Party]]  # content id -> creator
    receipts: list[dict[str, Any]] = field(default_factory=list)
    # Real work by account and pool: bytes served (node), seconds watched (viewer and the
    # creator of what was watched).
    work: dict[str, dict[bytes, int]] = field(default_factory=lambda: {p: {} for p in POOLS})
    extra_nodes: list[Party] = field(default_factory=list)
    extra_viewers: list[Party] = field(default_factory=list)  # allowlisted attacker viewers
    extra_contents: list[tuple[bytes, Party]] = field(default_factory=list)
    garbage: list[list[Any]] = field(default_factory=list)  # raw batches sent as they are
    # Honest sessions: (viewer, session id, content, startedAt, node, bytes, seconds).
    sessions: list[tuple[Party, bytes, tuple[bytes, Party], int, Party, int, int]] = field(
        default_factory=list
    )

    def add_work(self, pool: str, account: bytes, amount: int) -> None:
        self.work[pool][account] = self.work[pool].get(account, 0) + amount

    def session(
        self,
        viewer: Party,
        content: tuple[bytes, Party],
        nodes: list[tuple[Party, int]],  # (node, bytes it is credited with)
        started: int,
        seconds: int,
        rng: random.Random,
        *,
        segments: int | None = None,
        watch: int | None = None,
    ) -> bytes:
        """A viewer's session: one delivery receipt per node and one view receipt, with the
        final cumulative counters. Returns the session id."""
        sid = rng.randbytes(32)
        issued = started + seconds
        segs = seconds // SEGMENT if segments is None else segments
        for node, served in nodes:
            r = DeliveryReceipt(
                sid, viewer.address, node.address, content[0], started, served, segs, issued
            )
            self.receipts.append(signed(viewer.key, r, self.domain))
        v = ViewReceipt(
            sid, viewer.address, content[0], started, seconds if watch is None else watch, issued
        )
        self.receipts.append(signed(viewer.key, v, self.domain))
        return sid

    def registries(self) -> dict[str, Any]:
        return {
            "nodes": [
                {"address": n.hex, "label": f"node-{i}", "active": True}
                for i, n in enumerate(self.nodes + self.extra_nodes)
            ],
            "content": [
                {"contentId": "0x" + cid.hex(), "creator": c.hex}
                for cid, c in self.contents + self.extra_contents
            ],
            "viewers": [v.hex for v in self.viewers + self.extra_viewers],
        }


def honest_world(seed: int, scale: Scale, genesis: int, domain: Domain | None = None) -> World:
    """Honest viewers, each watching one or two sessions of 10-30 minutes from one node at
    an HD ladder rung, inside epoch 1."""
    rng = random.Random(seed)
    creators = [Party.of(seed, "creator", i) for i in range(scale.creators)]
    world = World(
        seed=seed,
        genesis=genesis,
        domain=domain or Domain.from_hex(CHAIN_ID, DISTRIBUTOR),
        nodes=[Party.of(seed, "node", i) for i in range(scale.nodes)],
        viewers=[Party.of(seed, "viewer", i) for i in range(scale.viewers)],
        creators=creators,
        contents=[(rng.randbytes(32), creators[i % scale.creators]) for i in range(scale.contents)],
    )
    for viewer in world.viewers:
        for _ in range(rng.choice((1, 2))):
            content = rng.choice(world.contents)
            node = rng.choice(world.nodes)
            seconds = rng.randrange(600, 1800, SEGMENT)
            served = rng.choice(HONEST_BITRATES) * seconds // 8
            started = genesis + rng.randrange(0, 1200)
            sid = world.session(viewer, content, [(node, served)], started, seconds, rng)
            world.sessions.append((viewer, sid, content, started, node, served, seconds))
            world.add_work("node", node.address, served)
            world.add_work("viewer", viewer.address, seconds)
            world.add_work("creator", content[1].address, seconds)
    return world


# --- scenarios --------------------------------------------------------------------------


@dataclass(frozen=True)
class Attack:
    """What a scenario's attacker controls: its accounts, and how many identities the
    service lets it hold under the profile (None: as many as it likes)."""

    accounts: frozenset[bytes]
    identities: int | None  # allowlisted viewer identities it holds, None: unlimited
    bound_note: str


Build = Callable[[World, Scale, random.Random, dict[str, Any]], Attack]
SCENARIOS: dict[str, tuple[str, Build]] = {}


def scenario(name: str, text: str) -> Callable[[Build], Build]:
    def register(build: Build) -> Build:
        SCENARIOS[name] = (text, build)
        return build

    return register


def _max_session(
    world: World,
    viewer: Party,
    node: Party,
    content: tuple[bytes, Party],
    rng: random.Random,
    started: int,
    seconds: int,
) -> int:
    """A session at the plausibility limit (max_bitrate over the elapsed time): the most a
    receipt may claim. Returns the bytes claimed."""
    elapsed = seconds + SEGMENT
    served = MAX_BITRATE * elapsed // 8
    world.session(viewer, content, [(node, served)], started, seconds, rng)
    return served


@scenario("sybil_viewers", "invented viewer keys farm the viewer pool (watching honest content)")
def _sybil(world: World, scale: Scale, rng: random.Random, profile: dict[str, Any]) -> Attack:
    keys = [Party.of(world.seed, "sybil", i) for i in range(scale.attack)]
    for p in keys:
        world.session(
            p,
            rng.choice(world.contents),
            [(rng.choice(world.nodes), 3_000_000 * 3000 // 8)],
            world.genesis + 60,
            3000,
            rng,
        )
    return Attack(
        frozenset(p.address for p in keys),
        0 if profile.get("viewer_allowlist") else None,
        "the keys are not in the viewer allowlist: UNKNOWN_VIEWER",
    )


@scenario(
    "parallel_sessions",
    "one allowlisted viewer key runs many parallel sessions at max bitrate through its own node",
)
def _parallel(world: World, scale: Scale, rng: random.Random, profile: dict[str, Any]) -> Attack:
    viewer, node = (
        Party.of(world.seed, "attacker-viewer", 0),
        Party.of(world.seed, "attacker-node", 0),
    )
    world.extra_viewers.append(viewer)
    world.extra_nodes.append(node)
    for _ in range(scale.attack):
        _max_session(world, viewer, node, rng.choice(world.contents), rng, world.genesis + 60, 3000)
    # Real work: the viewer watched one session (at most 3,000 s); the node served it.
    world.add_work("viewer", viewer.address, 3000)
    world.add_work("node", node.address, 3_000_000 * 3000 // 8)
    return Attack(frozenset({viewer.address, node.address}), 1, "one identity: the per-viewer caps")


@scenario("node_fake_viewers", "a registered node signs receipts for viewer keys it invents")
def _fake_viewers(
    world: World, scale: Scale, rng: random.Random, profile: dict[str, Any]
) -> Attack:
    node = Party.of(world.seed, "attacker-node", 0)
    world.extra_nodes.append(node)
    fakes = [Party.of(world.seed, "fake-viewer", i) for i in range(scale.attack)]
    for p in fakes:
        _max_session(world, p, node, rng.choice(world.contents), rng, world.genesis + 60, 3000)
    accounts = {node.address, *(p.address for p in fakes)}
    return Attack(
        frozenset(accounts),
        0 if profile.get("viewer_allowlist") else None,
        "invented viewers are not allowlisted",
    )


@scenario("self_dealing_creator", "a creator farms its own content with throwaway viewers")
def _self_dealing(
    world: World, scale: Scale, rng: random.Random, profile: dict[str, Any]
) -> Attack:
    creator = Party.of(world.seed, "attacker-creator", 0)
    content = (rng.randbytes(32), creator)
    world.extra_contents.append(content)
    throwaway = [Party.of(world.seed, "throwaway", i) for i in range(scale.attack)]
    for p in throwaway:
        world.session(
            p,
            content,
            [(rng.choice(world.nodes), 3_000_000 * 3000 // 8)],
            world.genesis + 60,
            3000,
            rng,
        )
    # The creator signing for its own content directly: SELF_DEALING.
    world.session(
        creator, content, [(world.nodes[0], 3_000_000 * 3000 // 8)], world.genesis + 60, 3000, rng
    )
    accounts = {creator.address, *(p.address for p in throwaway)}
    return Attack(
        frozenset(accounts),
        0 if profile.get("viewer_allowlist") else None,
        "throwaway viewers are not allowlisted",
    )


@scenario(
    "phantom_node",
    "allowlisted viewers credit a colluding node that served nothing, on top of the honest node that did",
)
def _phantom(world: World, scale: Scale, rng: random.Random, profile: dict[str, Any]) -> Attack:
    node = Party.of(world.seed, "attacker-node", 0)
    world.extra_nodes.append(node)
    colluders = [Party.of(world.seed, "colluder", i) for i in range(2)]
    world.extra_viewers.extend(colluders)
    for p in colluders:
        honest = rng.choice(world.nodes)
        seconds = 3000
        served = 3_000_000 * seconds // 8
        phantom = MAX_BITRATE * (seconds + SEGMENT) // 8
        world.session(
            p,
            rng.choice(world.contents),
            [(honest, served), (node, phantom)],
            world.genesis + 60,
            seconds,
            rng,
        )
        world.add_work("node", honest.address, served)
        world.add_work("viewer", p.address, seconds)
    return Attack(
        frozenset({node.address, *(p.address for p in colluders)}),
        len(colluders),
        "the colluding viewers' byte caps",
    )


@scenario(
    "cross_domain_replay",
    "receipts signed for another chain or distributor, and honest receipts replayed",
)
def _replay(world: World, scale: Scale, rng: random.Random, profile: dict[str, Any]) -> Attack:
    viewer, node = (
        Party.of(world.seed, "attacker-viewer", 0),
        Party.of(world.seed, "attacker-node", 0),
    )
    world.extra_viewers.append(viewer)
    world.extra_nodes.append(node)
    home = world.domain
    for other in (
        Domain(CHAIN_ID + 1, home.verifying_contract),
        Domain.from_hex(CHAIN_ID, "0x" + "e2" * 20),
    ):
        world.domain = other
        for _ in range(scale.attack // 2):
            world.session(
                viewer,
                rng.choice(world.contents),
                [(node, 3_000_000 * 3000 // 8)],
                world.genesis + 60,
                3000,
                rng,
            )
    world.domain = home
    world.receipts.extend(list(world.receipts[: scale.attack]))  # replays: duplicates
    return Attack(
        frozenset({viewer.address, node.address}), 1, "SIGNER_MISMATCH; replays are duplicates"
    )


@scenario(
    "inflated_counters",
    "an allowlisted viewer inflates counters past, then up to, the plausibility limits for its own node",
)
def _inflated(world: World, scale: Scale, rng: random.Random, profile: dict[str, Any]) -> Attack:
    viewer, node = (
        Party.of(world.seed, "attacker-viewer", 0),
        Party.of(world.seed, "attacker-node", 0),
    )
    world.extra_viewers.append(viewer)
    world.extra_nodes.append(node)
    content = rng.choice(world.contents)
    started = world.genesis + 60
    # Past the limits: bytes at 10x max bitrate, watch beyond elapsed, segments ahead.
    world.session(viewer, content, [(node, 10 * MAX_BITRATE * 3000 // 8)], started, 3000, rng)
    world.session(viewer, content, [(node, 100)], started, 600, rng, segments=10_000, watch=5000)
    # At the limits: bounded by max_bitrate and then the per-viewer caps.
    _max_session(world, viewer, node, content, rng, started, 3000)
    return Attack(
        frozenset({viewer.address, node.address}), 1, "IMPLAUSIBLE, then the per-viewer caps"
    )


@scenario(
    "equivocation",
    "an allowlisted viewer signs conflicting receipts of one session hoping both count",
)
def _equivocation(
    world: World, scale: Scale, rng: random.Random, profile: dict[str, Any]
) -> Attack:
    viewer, node = (
        Party.of(world.seed, "attacker-viewer", 0),
        Party.of(world.seed, "attacker-node", 0),
    )
    world.extra_viewers.append(viewer)
    world.extra_nodes.append(node)
    for _ in range(4):
        content, started = rng.choice(world.contents), world.genesis + 60
        sid = world.session(viewer, content, [(node, 200_000_000)], started, 2000, rng)
        # Crossing counters (more bytes, fewer segments), and another content id.
        r = DeliveryReceipt(
            sid, viewer.address, node.address, content[0], started, 400_000_000, 10, started + 2000
        )
        world.receipts.append(signed(viewer.key, r, world.domain))
        v = ViewReceipt(
            sid,
            viewer.address,
            world.contents[0][0] if content != world.contents[0] else world.contents[1][0],
            started,
            2000,
            started + 2000,
        )
        world.receipts.append(signed(viewer.key, v, world.domain))
    return Attack(
        frozenset({viewer.address, node.address}), 0, "the session is quarantined: CONFLICT"
    )


@scenario(
    "equivocation_grief",
    "an allowlisted viewer equivocates on sessions honest nodes served, to cost them their credit",
)
def _grief(world: World, scale: Scale, rng: random.Random, profile: dict[str, Any]) -> Attack:
    # An allowlisted viewer of the honest population turns griefer: after its honest
    # sessions it signs a crossing delivery receipt for each, so they are quarantined and
    # the nodes that really served them lose that credit.
    griefer = world.viewers[0]
    for viewer, sid, content, started, node, served, seconds in world.sessions:
        if viewer is griefer:
            r = DeliveryReceipt(
                sid,
                viewer.address,
                node.address,
                content[0],
                started,
                served + 1,
                1,
                started + seconds,
            )
            world.receipts.append(signed(viewer.key, r, world.domain))
    return Attack(
        frozenset({griefer.address}),
        0,
        "quarantine: the griefer forfeits too; a node loses at most the griefer's capped bytes",
    )


@scenario(
    "garbage_flood", "one client floods 10,000-item batches of garbage between honest batches"
)
def _garbage(world: World, scale: Scale, rng: random.Random, profile: dict[str, Any]) -> Attack:
    junk: list[Any] = [
        None,
        1,
        "x",
        [],
        {},
        {"kind": "delivery"},
        {"kind": "view", "sessionId": 7},
        1e308,
        2**70,
        {"a": [[[]]]},
    ]
    for _ in range(scale.garbage_batches):
        world.garbage.append([junk[rng.randrange(len(junk))] for _ in range(10_000)])
    return Attack(frozenset(), 0, "every item MALFORMED in place; honest items unaffected")

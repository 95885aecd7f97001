"""The simulated network: its configuration, the bad-actor kinds with the verdicts they
must get, and the world of keys (nodes, viewers, creators, content) built from the seed."""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from settlement.domain.receipts import (
    SECP256K1_N,
    Domain,
    Params,
    address_of,
    keccak,
)
from settlement.errors import InputError

RECEIPTS_FILE = "receipts.ndjson"
REGISTRIES_FILE = "registries.json"
TRUTH_FILE = "truth.json"
LABELS_FILE = "labels.txt"  # one line per receipt: `honest` or its bad-actor kind
HONEST = "honest"


@dataclass(frozen=True, slots=True)
class BadKind:
    reason: str  # the verdict label the receipt must get (a reason code, or `duplicate`)
    stateless: bool  # True: `settlement receipts verify` (no state, no registries) rejects it
    what: str


# Insertion order is generation order: part of what makes a seed reproducible.
BAD_KINDS: dict[str, BadKind] = {
    "forged": BadKind("SIGNER_MISMATCH", True, "signed by another key than the viewer it names"),
    "wrong_domain": BadKind("SIGNER_MISMATCH", True, "signed for another chainId or distributor"),
    "high_s": BadKind("NON_CANONICAL_SIGNATURE", True, "honest signature malleated: s -> n-s"),
    "malformed": BadKind("MALFORMED", True, "a field missing, unknown, mistyped or out of range"),
    "implausible": BadKind("IMPLAUSIBLE", True, "bytes over max bitrate, watch over elapsed"),
    "inflated": BadKind("SIGNER_MISMATCH", True, "counters raised by the node after signing"),
    "self_node": BadKind("SELF_DEALING", True, "a node operator's key as viewer of itself"),
    "replay": BadKind("duplicate", False, "an accepted receipt sent again, byte for byte"),
    "equivocation": BadKind("CONFLICT", False, "crossing counters or another contentId"),
    "self_dealing_creator": BadKind("SELF_DEALING", False, "a creator watching its own content"),
    "unknown_node": BadKind("UNKNOWN_NODE", False, "names a node not in the registry"),
    "unknown_content": BadKind("UNKNOWN_CONTENT", False, "names content not in the registry"),
    # Last, so the kinds above draw the same numbers as before it was added.
    "padded_segments": BadKind(
        "IMPLAUSIBLE", True, "segments beyond elapsed time + lead, or too few bytes per segment"
    ),
}
DEFAULT_BAD_FRACTION = 0.002  # per kind: 2.6 % bad receipts in all

# Rungs of a typical ABR ladder, bits per second; those above max_bitrate / 4 are dropped
# so that an honest player that buffers a few segments ahead stays plausible.
BITRATE_LADDER = (400_000, 800_000, 1_500_000, 3_000_000, 6_000_000, 12_000_000)
MAX_SESSION_SECONDS = 2 * 3600
NOW_MARGIN = 600  # seconds between the last honest issuedAt and the run's `now`


@dataclass(frozen=True)
class SimConfig:
    """What to simulate. Exactly one of `receipts` (exact total) and `sessions` is set."""

    seed: int = 0
    receipts: int | None = None
    sessions: int | None = None
    nodes: int = 100
    viewers: int = 10_000
    creators: int = 200
    contents: int = 2_000
    chain_id: int = 31337
    distributor: bytes = bytes(20)
    start: int = 1_767_225_600  # first startedAt; settings' genesis by default
    window: int = 6 * 3600  # sessions start in [start, start + window)
    params: Params = field(default_factory=Params.defaults)
    bad: Mapping[str, float] = field(
        default_factory=lambda: dict.fromkeys(BAD_KINDS, DEFAULT_BAD_FRACTION)
    )
    workers: int | None = None  # None: every core
    # Longest honest session; `simulate --url` shortens it for a service whose genesis is
    # recent, so every receipt falls between genesis and the service's now.
    max_session_seconds: int = MAX_SESSION_SECONDS

    def validate(self) -> None:
        if (self.receipts is None) == (self.sessions is None):
            raise InputError("give exactly one of --receipts and --sessions")
        if (self.receipts or 0) < 0 or (self.sessions or 0) < 0:
            raise InputError("--receipts and --sessions must be >= 0")
        for name, count in (
            ("nodes", self.nodes),
            ("viewers", self.viewers),
            ("creators", self.creators),
            ("contents", self.contents),
        ):
            if count < 1:
                raise InputError(f"--{name} must be >= 1, got {count}")
        unknown = sorted(set(self.bad) - set(BAD_KINDS))
        if unknown:
            raise InputError(
                f"unknown bad-actor kind {unknown[0]!r}; kinds: {', '.join(BAD_KINDS)}"
            )
        if any(not 0 <= f <= 1 for f in self.bad.values()):
            raise InputError("bad-actor fractions must be in [0, 1]")
        if sum(self.bad.values()) > 0.5:
            raise InputError(
                "bad-actor fractions add up to more than 0.5; honest traffic is the base"
            )
        if len(self.distributor) != 20:
            raise InputError("distributor must be a 20-byte address")
        if self.window < 1:
            raise InputError("window must be >= 1 second")
        p = self.params
        if self.start < p.genesis:
            raise InputError(f"--start {self.start} is before genesis {p.genesis}: all TOO_OLD")
        if self.session_seconds + NOW_MARGIN + self.window + p.clock_skew > p.max_age:
            raise InputError(
                f"window {self.window} s is too long for max_age {p.max_age} s: "
                "early receipts would be TOO_OLD at the run's `now`"
            )
        smallest = smallest_segment(p)
        if smallest < p.min_segment_bytes:
            raise InputError(
                f"min_segment_bytes {p.min_segment_bytes} is above the smallest honest segment "
                f"({smallest} bytes at the lowest bitrate rung): honest players would be IMPLAUSIBLE"
            )

    @property
    def session_seconds(self) -> int:
        """Longest honest session (issuedAt - startedAt stays within max_session_age)."""
        return max(1, min(self.max_session_seconds, self.params.max_session_age - NOW_MARGIN))

    @property
    def now(self) -> int:
        """A `now` at which every honest receipt is in its time window: verify with it."""
        return self.start + self.window + self.session_seconds + NOW_MARGIN

    @property
    def domain(self) -> Domain:
        return Domain(self.chain_id, self.distributor)


# --- the world: keys, registries ------------------------------------------------------


def _secret(seed: int, label: str, index: int) -> bytes:
    data = f"w2e-simulate/{seed}/{label}/{index}".encode()
    while True:
        secret = keccak(data)
        if 0 < int.from_bytes(secret, "big") < SECP256K1_N:
            return secret
        data = secret  # one chance in 2**128: hash again


@dataclass(frozen=True)
class World:
    """Keys and registries of one run. Secrets stay in memory: never written or printed."""

    node_secrets: tuple[bytes, ...]
    nodes: tuple[bytes, ...]
    viewer_secrets: tuple[bytes, ...]
    viewers: tuple[bytes, ...]
    creator_secrets: tuple[bytes, ...]
    creators: tuple[bytes, ...]
    contents: tuple[bytes, ...]
    content_creator: tuple[int, ...]  # index into creators

    def __repr__(self) -> str:
        return f"World(nodes={len(self.nodes)}, viewers={len(self.viewers)}, contents={len(self.contents)})"

    def registries(self) -> dict[str, Any]:
        """Registries JSON: nodes, content -> creator, and every address that signs as a viewer."""
        return {
            "nodes": [
                {"address": "0x" + a.hex(), "label": f"node-{i}", "active": True}
                for i, a in enumerate(self.nodes)
            ],
            "content": [
                {"contentId": "0x" + c.hex(), "creator": "0x" + self.creators[k].hex()}
                for c, k in zip(self.contents, self.content_creator, strict=True)
            ],
            # Creators and node operators watch too; listing them keeps allowlist mode from
            # answering UNKNOWN_VIEWER before the self-dealing checks they are meant to meet.
            "viewers": ["0x" + a.hex() for a in (*self.viewers, *self.creators, *self.nodes)],
        }


def _addresses(secrets: tuple[bytes, ...]) -> list[bytes]:
    return [address_of(s) for s in secrets]


def build_world(cfg: SimConfig, pool: Any = None) -> World:
    seed = cfg.seed
    node_secrets = tuple(_secret(seed, "node", i) for i in range(cfg.nodes))
    viewer_secrets = tuple(_secret(seed, "viewer", i) for i in range(cfg.viewers))
    creator_secrets = tuple(_secret(seed, "creator", i) for i in range(cfg.creators))
    everything = node_secrets + viewer_secrets + creator_secrets
    if pool is not None and len(everything) > 20_000:
        step = 5_000
        parts = pool.map(
            _addresses, [everything[i : i + step] for i in range(0, len(everything), step)]
        )
        addresses = [a for part in parts for a in part]
    else:
        addresses = _addresses(everything)
    n, v = cfg.nodes, cfg.viewers
    rng = random.Random(int.from_bytes(keccak(f"w2e-simulate/{seed}/content".encode())[:16], "big"))
    contents = tuple(
        keccak(f"w2e-simulate/{seed}/content/{i}".encode()) for i in range(cfg.contents)
    )
    # Every creator owns at least one item when there is room, the rest at random.
    owners = [i % cfg.creators for i in range(cfg.contents)]
    rng.shuffle(owners)
    return World(
        node_secrets=node_secrets,
        nodes=tuple(addresses[:n]),
        viewer_secrets=viewer_secrets,
        viewers=tuple(addresses[n : n + v]),
        creator_secrets=creator_secrets,
        creators=tuple(addresses[n + v :]),
        contents=contents,
        content_creator=tuple(owners),
    )


def bitrate_ladder(p: Params) -> tuple[int, ...]:
    return tuple(b for b in BITRATE_LADDER if 4 * b <= p.max_bitrate) or (p.max_bitrate // 4,)


def smallest_segment(p: Params) -> int:
    """Fewest bytes an honest segment can have: the lowest rung, minus the 20 % spread."""
    seg_bytes = min(bitrate_ladder(p)) * p.segment_seconds // 8
    return seg_bytes - seg_bytes // 5


def parse_bad_fractions(values: list[str]) -> dict[str, float]:
    """`KIND=F`, `all=F` or a bare `F` (every kind), applied left to right over the defaults."""
    fractions = dict.fromkeys(BAD_KINDS, DEFAULT_BAD_FRACTION)
    for value in values:
        name, sep, number = value.rpartition("=")
        if not sep:
            name = "all"
        try:
            f = float(number)
        except ValueError:
            raise InputError(f"--bad-fraction {value!r}: {number!r} is not a number") from None
        if name == "all":
            fractions = dict.fromkeys(BAD_KINDS, f)
        elif name in BAD_KINDS:
            fractions[name] = f
        else:
            raise InputError(
                f"--bad-fraction {value!r}: unknown kind {name!r}; kinds: all, {', '.join(BAD_KINDS)}"
            )
    return fractions

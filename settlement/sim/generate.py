"""Seeded traffic generator: a network of nodes, viewers, creators and content, honest
sessions with cumulative receipts, and bad actors whose expected verdicts are known.

Writes receipts.ndjson (wire format), labels.txt (`honest` or the bad-actor kind of each
line), registries.json (nodes, content -> creator, viewers) and truth.json (counts per
kind, the reason each must get, and the expected summaries of `settlement receipts
verify` and of an ingest from an empty store).

Same configuration and seed, same output bytes, whatever the number of workers: the
output is a sequence of chunks, each generated from its own seed derived from the
run's seed and the chunk's index, written in index order.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import random
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any

import coincurve
import orjson
import typer

from settlement.cli.options import ChainIdOption, DistributorOption
from settlement.client.signer import sign_digest
from settlement.domain.receipts import (
    SECP256K1_N,
    UINT32_MAX,
    DeliveryReceipt,
    Domain,
    Params,
    ViewReceipt,
    address_of,
    digest,
    keccak,
)
from settlement.domain.wire import dumps_wire, to_wire
from settlement.errors import InputError, SettlementError

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
CHUNK_RECEIPTS = 10_000
CHUNK_SESSIONS = 250


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
        smallest = _smallest_segment(p)
        if smallest < p.min_segment_bytes:
            raise InputError(
                f"min_segment_bytes {p.min_segment_bytes} is above the smallest honest segment "
                f"({smallest} bytes at the lowest bitrate rung): honest players would be IMPLAUSIBLE"
            )

    @property
    def session_seconds(self) -> int:
        """Longest honest session (issuedAt - startedAt stays within max_session_age)."""
        return max(1, min(MAX_SESSION_SECONDS, self.params.max_session_age - NOW_MARGIN))

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


# --- chunk generation (runs in workers) ------------------------------------------------

_state: dict[str, Any] = {}


def _ladder(p: Params) -> tuple[int, ...]:
    return tuple(b for b in BITRATE_LADDER if 4 * b <= p.max_bitrate) or (p.max_bitrate // 4,)


def _smallest_segment(p: Params) -> int:
    """Fewest bytes an honest segment can have: the lowest rung, minus the 20 % spread."""
    seg_bytes = min(_ladder(p)) * p.segment_seconds // 8
    return seg_bytes - seg_bytes // 5


def _init_worker(cfg: SimConfig, world: World) -> None:
    p = cfg.params
    ladder = _ladder(p)
    other_chain = cfg.chain_id + 1 if cfg.chain_id < 2**256 - 1 else cfg.chain_id - 1
    _state.clear()
    _state.update(
        cfg=cfg,
        world=world,
        domain=cfg.domain,
        wrong_domains=(
            Domain(other_chain, cfg.distributor),
            Domain(cfg.chain_id, keccak(b"not the distributor" + cfg.distributor)[:20]),
        ),
        ladder=ladder,
        # Zipf-like popularity: a few titles get most sessions.
        content_cum=list(
            _cumulative(1.0 / (rank + 1) ** 0.9 for rank in range(len(world.contents)))
        ),
        keys={},
    )


def _cumulative(weights: Iterable[float]) -> Iterator[float]:
    total = 0.0
    for w in weights:
        total += w
        yield total


def _key(label: str, index: int) -> coincurve.PrivateKey:
    keys = _state["keys"]
    key = keys.get((label, index))
    if key is None:
        world: World = _state["world"]
        secrets = {
            "viewer": world.viewer_secrets,
            "creator": world.creator_secrets,
            "node": world.node_secrets,
        }[label]
        key = keys[(label, index)] = coincurve.PrivateKey(secrets[index])
    return key


@dataclass(slots=True)
class _Session:
    key: coincurve.PrivateKey
    viewer: bytes
    session_id: bytes
    content: int
    started_at: int
    last_issued: int = 0
    last_seq: int = 0
    deliveries: dict[bytes, DeliveryReceipt] = field(default_factory=dict)  # best per node
    view: ViewReceipt | None = None
    equivocations: int = 0


@dataclass(slots=True)
class _Honest:
    receipt: DeliveryReceipt | ViewReceipt
    line: bytes
    seq: int
    session: _Session


class _Chunk:
    """Generates one chunk: honest sessions first, then bad actors derived from them."""

    def __init__(self, index: int) -> None:
        cfg: SimConfig = _state["cfg"]
        self.cfg = cfg
        self.world: World = _state["world"]
        self.domain: Domain = _state["domain"]
        self.params = cfg.params
        seed = int.from_bytes(keccak(f"w2e-simulate/{cfg.seed}/chunk/{index}".encode())[:16], "big")
        self.rng = random.Random(seed)
        # (issuedAt, seq, sub, line, label): the first three are unique, so they alone order rows
        self.rows: list[tuple[int, int, int, bytes, str]] = []
        self.seq = 0
        self.sub = 0
        self.honest: list[_Honest] = []
        self.honest_delivery: list[_Honest] = []
        self.sessions: list[_Session] = []
        self.counts: Counter[str] = Counter()

    # -- helpers

    def _signed(self, receipt: Any, key: coincurve.PrivateKey, domain: Domain | None = None) -> Any:
        sig = sign_digest(key, digest(receipt, domain or self.domain))
        if type(receipt) is DeliveryReceipt:
            return DeliveryReceipt(
                receipt.session_id,
                receipt.viewer,
                receipt.node,
                receipt.content_id,
                receipt.started_at,
                receipt.bytes_served,
                receipt.segments_served,
                receipt.issued_at,
                sig,
            )
        return ViewReceipt(
            receipt.session_id,
            receipt.viewer,
            receipt.content_id,
            receipt.started_at,
            receipt.watch_seconds,
            receipt.issued_at,
            sig,
        )

    def _emit_bad(self, kind: str, issued: int, seq: int, line: bytes) -> None:
        self.sub += 1
        self.rows.append((issued, seq, self.sub, line, kind))
        self.counts[kind] += 1

    def _pick_content(self) -> int:
        return self.rng.choices(range(len(self.world.contents)), cum_weights=_state["content_cum"])[
            0
        ]

    def _limit(self, elapsed: int) -> int:
        """Most bytes a node may plausibly serve in `elapsed` seconds (PROTOCOL section 3)."""
        return self.params.max_bitrate * elapsed // 8

    # -- honest traffic

    def session(
        self,
        key: coincurve.PrivateKey,
        viewer: bytes,
        content: int,
        budget: int,
        bad_kind: str | None,
    ) -> int:
        """One playback, re-signed every few segments; emits at most `budget` receipts."""
        rng = self.rng
        seg = self.params.segment_seconds
        world = self.world
        started = self.cfg.start + rng.randrange(self.cfg.window)
        max_segments = max(1, self.cfg.session_seconds // seg - 1)
        n_segments = min(max_segments, max(1, int(rng.lognormvariate(4.0, 1.0))))
        seg_bytes = _state["ladder"][rng.randrange(len(_state["ladder"]))] * seg // 8
        spread = seg_bytes // 5
        every = rng.randint(2, 6)  # segments between two signatures
        # Segments the player buffers ahead of playback. A receipt signed when `watched`
        # segments have played has elapsed >= (watched + 1) * seg, so `ahead` segments stay
        # plausible while (ahead - 1) * seg <= max_lead_seconds.
        ahead = min(rng.randint(1, 3), 1 + self.params.max_lead_seconds // seg)
        n_nodes = min(n_segments, rng.choices((1, 2, 3), cum_weights=(70, 92, 100))[0])
        nodes = [
            world.nodes[i]
            for i in rng.sample(range(len(world.nodes)), min(n_nodes, len(world.nodes)))
        ]
        switches = (
            sorted(rng.sample(range(1, n_segments), len(nodes) - 1)) if len(nodes) > 1 else []
        )
        switches.append(n_segments)
        sess = _Session(key, viewer, rng.randbytes(32), content, started)
        self.sessions.append(sess)
        content_id = world.contents[content]
        served: dict[bytes, list[int]] = {}
        node_at = 0
        fetched = watched = emitted = 0
        honest = bad_kind is None
        rand = rng.random  # int(rand() * n): a fraction of randint's cost, in the hot loop
        width = 2 * spread + 1
        label = bad_kind or HONEST
        while watched < n_segments and emitted < budget:
            watched = min(n_segments, watched + every)
            dirty: list[bytes] = []
            for _ in range(min(n_segments, watched + ahead) - fetched):
                if fetched >= switches[node_at]:
                    node_at += 1
                node = nodes[node_at]
                counters = served.get(node)
                if counters is None:
                    counters = served[node] = [0, 0]
                counters[0] += seg_bytes - spread + int(rand() * width)
                counters[1] += 1
                if node not in dirty:
                    dirty.append(node)
                fetched += 1
            issued = started + watched * seg + (rand() < 0.5)
            unsigned: list[Any] = [
                DeliveryReceipt(
                    sess.session_id, viewer, node, content_id, started, *served[node], issued
                )
                for node in dirty
            ]
            unsigned.append(
                ViewReceipt(sess.session_id, viewer, content_id, started, watched * seg, issued)
            )
            for receipt in unsigned[: budget - emitted]:
                signed = self._signed(receipt, key)
                line = dumps_wire(signed)
                self.seq += 1
                self.rows.append((issued, self.seq, 0, line, label))
                emitted += 1
                if honest:
                    record = _Honest(signed, line, self.seq, sess)
                    self.honest.append(record)
                    if type(signed) is DeliveryReceipt:
                        self.honest_delivery.append(record)
                        sess.deliveries[signed.node] = signed
                    else:
                        sess.view = signed
                    sess.last_issued, sess.last_seq = issued, self.seq
                else:
                    self.counts[bad_kind] += 1
        return emitted

    def honest_sessions(self, *, receipts: int | None = None, sessions: int | None = None) -> None:
        world = self.world
        made = 0
        done = 0
        while (receipts is not None and made < receipts) or (
            sessions is not None and done < sessions
        ):
            v = self.rng.randrange(len(world.viewers))
            budget = receipts - made if receipts is not None else 1 << 62
            made += self.session(
                _key("viewer", v), world.viewers[v], self._pick_content(), budget, None
            )
            done += 1

    # -- bad actors

    def bad_actors(self, counts: Mapping[str, int]) -> None:
        for kind in BAD_KINDS:  # fixed order: reproducible
            n = counts.get(kind, 0)
            if n <= 0:
                continue
            if kind == "self_dealing_creator":
                self._creator_sessions(n)
                continue
            pool = (
                self.honest_delivery
                if kind in ("inflated", "self_node", "unknown_node", "padded_segments")
                else self.honest
            )
            if not pool:
                continue  # nothing honest to derive from: the truth file counts what was made
            make = getattr(self, "_" + kind)
            for _ in range(n):
                make(pool[self.rng.randrange(len(pool))])

    def _forged(self, base: _Honest) -> None:
        attacker = coincurve.PrivateKey(self.rng.randbytes(32))
        r = base.receipt
        line = dumps_wire(self._signed(r, attacker))
        self._emit_bad("forged", r.issued_at, base.seq, line)

    def _wrong_domain(self, base: _Honest) -> None:
        domain = _state["wrong_domains"][self.rng.randrange(2)]
        r = base.receipt
        line = dumps_wire(self._signed(r, base.session.key, domain))
        self._emit_bad("wrong_domain", r.issued_at, base.seq, line)

    def _high_s(self, base: _Honest) -> None:
        r = base.receipt
        sig = r.signature
        s = SECP256K1_N - int.from_bytes(sig[32:64], "big")
        w = to_wire(r)
        w["signature"] = "0x" + (sig[:32] + s.to_bytes(32, "big") + bytes((55 - sig[64],))).hex()
        self._emit_bad("high_s", r.issued_at, base.seq, orjson.dumps(w))

    def _malformed(self, base: _Honest) -> None:
        r = base.receipt
        w = to_wire(r)
        rng = self.rng
        ints = ["startedAt", "issuedAt", "bytesServed" if "node" in w else "watchSeconds"]
        hexes = ["sessionId", "viewer", "contentId", "signature"] + (
            ["node"] if "node" in w else []
        )
        variant = rng.randrange(13)
        f = rng.choice(ints)
        h = rng.choice(hexes)
        if variant == 0:
            del w[rng.choice(list(w))]
        elif variant == 1:
            w[rng.choice(("extra", "epoch", "Viewer", "watch_seconds"))] = 1
        elif variant == 2:
            w[f] = float(w[f]) + 0.5
        elif variant == 3:
            w[f] = -1 - w[f]
        elif variant == 4:
            w[f] = rng.choice((True, False))
        elif variant == 5:
            w[f] = None
        elif variant == 6:
            w[f] = "0" + str(w[f])  # leading zero
        elif variant == 7:
            small = "segmentsServed" if "node" in w else "watchSeconds"
            w[small] = 2**32 + w[small]  # uint32 overflow
        elif variant == 12:
            w[f] = str(2**64 + rng.randrange(2**32))  # uint64 overflow, as a digit string
        elif variant == 8:
            w[h] = w[h][:-2]  # one byte short
        elif variant == 9:
            w[h] = "0x" + "zz" + w[h][4:]
        elif variant == 10:
            w[h] = w[h][2:]  # no 0x
        else:
            w["kind"] = rng.choice(("download", "views", "", "DELIVERY"))
        self._emit_bad("malformed", r.issued_at, base.seq, orjson.dumps(w))

    def _implausible(self, base: _Honest) -> None:
        r = base.receipt
        rng = self.rng
        elapsed = r.issued_at - r.started_at + self.params.segment_seconds
        if rng.randrange(4) == 0:
            # Started after it was issued; issuedAt unchanged keeps it inside the time window.
            bad = _replace_started(r, r.issued_at + 1 + rng.randrange(600))
        elif type(r) is DeliveryReceipt:
            bad = DeliveryReceipt(
                r.session_id,
                r.viewer,
                r.node,
                r.content_id,
                r.started_at,
                self._limit(elapsed) + 1 + rng.randrange(1 << 24),
                r.segments_served,
                r.issued_at,
            )
        else:
            bad = ViewReceipt(
                r.session_id,
                r.viewer,
                r.content_id,
                r.started_at,
                elapsed + 1 + rng.randrange(3600),
                r.issued_at,
            )
        line = dumps_wire(self._signed(bad, base.session.key))
        self._emit_bad("implausible", r.issued_at, base.seq, line)

    def _padded_segments(self, base: _Honest) -> None:
        # A viewer lifting its watch clip (min(watch, segment_seconds * segments)) with
        # segments nobody served: more than elapsed time plus the lead allows, or more than
        # its bytes can fill at min_segment_bytes each. Within max_bitrate, signed by the viewer.
        r = base.receipt
        rng = self.rng
        p = self.params
        elapsed = r.issued_at - r.started_at + p.segment_seconds
        most = min((elapsed + p.max_lead_seconds) // p.segment_seconds, UINT32_MAX)
        variant = rng.randrange(3)
        if variant == 0 and most < UINT32_MAX:
            segments = most + 1 + rng.randrange(min(UINT32_MAX - most, 1 << 16))
            amount = r.bytes_served
        elif variant == 1 and p.min_segment_bytes > 0 and r.segments_served > 0:
            segments = r.segments_served
            floor = p.min_segment_bytes * segments
            amount = floor - 1 - rng.randrange(min(floor, 1 << 20))
        else:  # PROTOCOL 8: all the segments a uint32 holds, no bytes
            segments, amount = UINT32_MAX, 0
        bad = replace(r, bytes_served=amount, segments_served=segments)
        line = dumps_wire(self._signed(bad, base.session.key))
        self._emit_bad("padded_segments", r.issued_at, base.seq, line)

    def _inflated(self, base: _Honest) -> None:
        # The node raises the viewer's totals and keeps the viewer's signature.
        r = base.receipt
        w = to_wire(r)
        room = (
            self._limit(r.issued_at - r.started_at + self.params.segment_seconds) - r.bytes_served
        )
        if room > 0:
            w["bytesServed"] = (
                r.bytes_served + 1 + self.rng.randrange(min(room, r.bytes_served + 1))
            )
        else:
            w["segmentsServed"] = r.segments_served + 1
        self._emit_bad("inflated", r.issued_at, base.seq, orjson.dumps(w))

    def _self_node(self, base: _Honest) -> None:
        r = base.receipt
        i = self.rng.randrange(len(self.world.nodes))
        me = self.world.nodes[i]
        receipt = DeliveryReceipt(
            self.rng.randbytes(32),
            me,
            me,
            r.content_id,
            r.started_at,
            r.bytes_served,
            r.segments_served,
            r.issued_at,
        )
        line = dumps_wire(self._signed(receipt, _key("node", i)))
        self._emit_bad("self_node", r.issued_at, base.seq, line)

    def _replay(self, base: _Honest) -> None:
        # Right behind the original (same issuedAt, next sub-position): it meets the
        # original as its bucket's best and is a duplicate, exactly.
        self._emit_bad("replay", base.receipt.issued_at, base.seq, base.line)

    def _equivocation(self, base: _Honest) -> None:
        # After every honest receipt of the session, so nothing honest meets the quarantine.
        sess = base.session
        rng = self.rng
        sess.equivocations += 1
        issued = sess.last_issued + sess.equivocations
        elapsed = issued - sess.started_at + self.params.segment_seconds
        node, best = next(iter(sess.deliveries.items()), (None, None))
        crossing = best is not None and best.segments_served > 0 and rng.randrange(2) == 0
        room = self._limit(elapsed) - best.bytes_served if best is not None else 0
        if crossing and room > 0:
            receipt: Any = DeliveryReceipt(
                sess.session_id,
                sess.viewer,
                node,
                best.content_id,
                sess.started_at,
                best.bytes_served + 1 + rng.randrange(min(room, 1 << 20)),
                best.segments_served - 1,
                issued,
            )
        else:
            other = (
                (sess.content + 1 + rng.randrange(len(self.world.contents) - 1))
                % len(self.world.contents)
                if len(self.world.contents) > 1
                else None
            )
            if other is None:
                return  # one title only: nothing to equivocate about
            watch = sess.view.watch_seconds if sess.view is not None else 0
            receipt = ViewReceipt(
                sess.session_id,
                sess.viewer,
                self.world.contents[other],
                sess.started_at,
                min(watch, elapsed),
                issued,
            )
        line = dumps_wire(self._signed(receipt, sess.key))
        self._emit_bad("equivocation", issued, sess.last_seq, line)

    def _unknown_node(self, base: _Honest) -> None:
        r = base.receipt
        receipt = DeliveryReceipt(
            r.session_id,
            r.viewer,
            self.rng.randbytes(20),
            r.content_id,
            r.started_at,
            r.bytes_served,
            r.segments_served,
            r.issued_at,
        )
        line = dumps_wire(self._signed(receipt, base.session.key))
        self._emit_bad("unknown_node", r.issued_at, base.seq, line)

    def _unknown_content(self, base: _Honest) -> None:
        r = base.receipt
        sid, content = self.rng.randbytes(32), self.rng.randbytes(32)
        if type(r) is DeliveryReceipt:
            receipt: Any = DeliveryReceipt(
                sid,
                r.viewer,
                r.node,
                content,
                r.started_at,
                r.bytes_served,
                r.segments_served,
                r.issued_at,
            )
        else:
            receipt = ViewReceipt(
                sid, r.viewer, content, r.started_at, r.watch_seconds, r.issued_at
            )
        line = dumps_wire(self._signed(receipt, base.session.key))
        self._emit_bad("unknown_content", r.issued_at, base.seq, line)

    def _creator_sessions(self, n: int) -> None:
        made = 0
        while made < n:
            content = self._pick_content()
            k = self.world.content_creator[content]
            made += self.session(
                _key("creator", k),
                self.world.creators[k],
                content,
                n - made,
                "self_dealing_creator",
            )

    def output(self) -> tuple[bytes, bytes]:
        """The chunk's NDJSON lines in issuedAt order, and each line's label."""
        self.rows.sort()
        return (
            b"".join(row[3] + b"\n" for row in self.rows),
            "".join(row[4] + "\n" for row in self.rows).encode(),
        )


def _replace_started(r: Any, started: int) -> Any:
    if type(r) is DeliveryReceipt:
        return DeliveryReceipt(
            r.session_id,
            r.viewer,
            r.node,
            r.content_id,
            started,
            r.bytes_served,
            r.segments_served,
            r.issued_at,
        )
    return ViewReceipt(r.session_id, r.viewer, r.content_id, started, r.watch_seconds, r.issued_at)


def _gen_chunk(
    task: tuple[int, int | None, int | None, dict[str, int] | None],
) -> tuple[bytes, bytes, dict[str, int], int, float]:
    index, receipts, sessions, bad = task
    cpu = time.process_time()
    chunk = _Chunk(index)
    cfg: SimConfig = _state["cfg"]
    if receipts is not None:
        assert bad is not None
        chunk.honest_sessions(receipts=receipts - sum(bad.values()))
    else:
        chunk.honest_sessions(sessions=sessions)
        honest = len(chunk.honest)
        rest = 1 - sum(cfg.bad.values())
        bad = {k: math.floor(f * honest / rest + 0.5) for k, f in cfg.bad.items()}
    chunk.bad_actors(bad)
    lines, labels = chunk.output()
    return lines, labels, dict(chunk.counts), len(chunk.honest), time.process_time() - cpu


# --- the run -------------------------------------------------------------------------


def _split(total: int, parts: list[int]) -> list[int]:
    """`total` over chunks in proportion to `parts`, summing to `total` exactly."""
    whole = sum(parts)
    out, done, cum = [], 0, 0
    for p in parts:
        cum += p
        upto = total * cum // whole if whole else 0
        out.append(upto - done)
        done = upto
    return out


def _tasks(cfg: SimConfig) -> list[tuple[int, int | None, int | None, dict[str, int] | None]]:
    if cfg.receipts is not None:
        n = cfg.receipts
        sizes = [CHUNK_RECEIPTS] * (n // CHUNK_RECEIPTS) + (
            [n % CHUNK_RECEIPTS] if n % CHUNK_RECEIPTS else []
        )
        per_kind = {k: _split(math.floor(f * n + 0.5), sizes) for k, f in cfg.bad.items()}
        return [
            (i, size, None, {k: per_kind[k][i] for k in cfg.bad}) for i, size in enumerate(sizes)
        ]
    s = cfg.sessions or 0
    sizes = [CHUNK_SESSIONS] * (s // CHUNK_SESSIONS) + (
        [s % CHUNK_SESSIONS] if s % CHUNK_SESSIONS else []
    )
    return [(i, None, size, None) for i, size in enumerate(sizes)]


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class SimResult:
    out_dir: Path
    receipts: int
    honest: int
    kinds: dict[str, int]
    seconds: float  # wall
    cpu_seconds: float  # spent generating chunks, all workers: the cost without neighbours
    workers: int
    truth: dict[str, Any]

    @property
    def receipts_path(self) -> Path:
        return self.out_dir / RECEIPTS_FILE


def generate(
    cfg: SimConfig, out_dir: str | Path, *, progress: Callable[[int], None] | None = None
) -> SimResult:
    """Write receipts.ndjson, labels.txt, registries.json and truth.json into `out_dir`."""
    cfg.validate()
    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tasks = _tasks(cfg)
    workers = max(1, min(cfg.workers or _cores(), len(tasks) or 1))
    kinds: Counter[str] = Counter()
    honest = total = 0
    tmp = out / (RECEIPTS_FILE + ".partial")
    tmp_labels = out / (LABELS_FILE + ".partial")
    with tmp.open("wb") as f, tmp_labels.open("wb") as f_labels:
        files = (f, f_labels)
        if workers == 1:
            world = build_world(cfg)
            _init_worker(cfg, world)
            total, honest, cpu = _drain(map(_gen_chunk, tasks), files, kinds, progress)
        else:
            # forkserver: the caller may run threads (a server, a test), which fork would copy
            method = "forkserver" if sys.platform.startswith("linux") else "spawn"
            ctx = multiprocessing.get_context(method)
            if cfg.nodes + cfg.viewers + cfg.creators > 20_000:
                with ctx.Pool(workers) as pool:
                    world = build_world(cfg, pool)
            else:
                world = build_world(cfg)
            with ctx.Pool(workers, initializer=_init_worker, initargs=(cfg, world)) as pool:
                total, honest, cpu = _drain(pool.imap(_gen_chunk, tasks), files, kinds, progress)
    tmp.replace(out / RECEIPTS_FILE)
    tmp_labels.replace(out / LABELS_FILE)
    (out / REGISTRIES_FILE).write_bytes(
        orjson.dumps(world.registries(), option=orjson.OPT_INDENT_2)
    )
    truth = _truth(cfg, total, honest, kinds)
    (out / TRUTH_FILE).write_bytes(
        orjson.dumps(truth, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
    )
    return SimResult(out, total, honest, dict(kinds), time.perf_counter() - t0, cpu, workers, truth)


def _drain(
    results: Iterable[tuple[bytes, bytes, dict[str, int], int, float]],
    files: tuple[Any, Any],
    kinds: Counter[str],
    progress: Callable[[int], None] | None,
) -> tuple[int, int, float]:
    total = honest = 0
    cpu = 0.0
    for data, labels, counts, n_honest, chunk_cpu in results:
        cpu += chunk_cpu
        files[0].write(data)
        files[1].write(labels)
        kinds.update(counts)
        honest += n_honest
        total += n_honest + sum(counts.values())
        if progress is not None:
            progress(total)
    return total, honest, cpu


def _truth(cfg: SimConfig, total: int, honest: int, kinds: Counter[str]) -> dict[str, Any]:
    p = cfg.params
    verify: Counter[str] = Counter({"accepted": honest})
    ingest: Counter[str] = Counter({"accepted": honest})
    for kind, spec in BAD_KINDS.items():
        n = kinds.get(kind, 0)
        if n:
            verify["accepted" if not spec.stateless else spec.reason] += n
            ingest[spec.reason] += n
    return {
        "seed": cfg.seed,
        "chainId": cfg.chain_id,
        "distributor": "0x" + cfg.distributor.hex(),
        "start": cfg.start,
        "now": cfg.now,
        "params": {
            "genesis": p.genesis,
            "clockSkew": p.clock_skew,
            "maxAge": p.max_age,
            "maxSessionAge": p.max_session_age,
            "segmentSeconds": p.segment_seconds,
            "maxBitrate": p.max_bitrate,
            "maxLeadSeconds": p.max_lead_seconds,
            "minSegmentBytes": p.min_segment_bytes,
        },
        "receipts": total,
        "honest": honest,
        "kinds": {
            kind: {
                "count": kinds.get(kind, 0),
                "reason": spec.reason,
                "stateless": spec.stateless,
                "what": spec.what,
            }
            for kind, spec in BAD_KINDS.items()
        },
        # `verify`: what `settlement receipts verify --now <now>` answers (no state, no
        # registries): exact. `ingest`: a service with registries.json loaded, an empty
        # store, this file posted in order and clock at `now`.
        "expected": {
            "verify": dict(sorted(verify.items())),
            "ingest": dict(sorted(ingest.items())),
        },
    }


def read_lines(path: str | Path, batch: int = 10_000) -> Iterator[list[Any]]:
    """The wire objects of an NDJSON file, `batch` at a time (a line that is not JSON stays text)."""
    part: list[Any] = []
    with Path(path).open("rb") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                part.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                part.append(line.decode("utf-8", "replace"))
            if len(part) >= batch:
                yield part
                part = []
    if part:
        yield part


def upload_registries(url: str, path: str | Path, admin_token: str) -> Any:
    """Load a registries.json into a service (POST /v1/admin/registries, one transaction)."""
    import httpx

    from settlement.client.http import SubmitError

    try:
        response = httpx.post(
            url.rstrip("/") + "/v1/admin/registries",
            content=Path(path).read_bytes(),
            headers={"authorization": f"Bearer {admin_token}", "content-type": "application/json"},
            timeout=60.0,
        )
    except httpx.TransportError as error:
        raise SubmitError(f"cannot upload registries to {url}: {error}") from None
    if response.status_code != 200:
        raise SubmitError(
            f"the service refused the registries with HTTP {response.status_code}: "
            f"{response.text[:300]}",
            status=response.status_code,
            body=response.text,
        )
    return response.json()


def post(path: str | Path, client: Any) -> dict[str, int]:
    """Send a receipts file to a service through a SettlementClient; counts by verdict label."""
    counts: Counter[str] = Counter()

    def items() -> Iterator[Any]:
        for part in read_lines(path, client.max_batch):
            yield from part

    for batch in client.submit_iter(items()):
        counts.update(v.label for v in batch.verdicts)
    return dict(sorted(counts.items()))


# --- CLI (registered in settlement/cli/main.py as `settlement simulate`) --------------------


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


_KINDS_HELP = ", ".join(BAD_KINDS)


def cli_simulate(
    out: Annotated[
        Path, typer.Option(help="directory for receipts.ndjson, registries.json, truth.json")
    ],
    seed: Annotated[int, typer.Option(help="same seed and options, same bytes")] = 0,
    receipts: Annotated[
        int | None, typer.Option(help="exact number of receipts (default 100000)")
    ] = None,
    sessions: Annotated[
        int | None, typer.Option(help="number of honest sessions instead of --receipts")
    ] = None,
    nodes: Annotated[int, typer.Option(help="registered delivery nodes")] = 100,
    viewers: Annotated[int, typer.Option(help="honest viewer keys")] = 10_000,
    creators: Annotated[int, typer.Option(help="content creators")] = 200,
    contents: Annotated[int, typer.Option(help="registered content items")] = 2_000,
    bad_fraction: Annotated[
        list[str] | None,
        typer.Option(
            "--bad-fraction",
            help=f"KIND=F, all=F or F; repeatable; kinds: {_KINDS_HELP} "
            f"(default {DEFAULT_BAD_FRACTION} each)",
        ),
    ] = None,
    chain_id: ChainIdOption = None,
    distributor: DistributorOption = None,
    start: Annotated[
        int | None, typer.Option(help="earliest startedAt, unix seconds (default: genesis)")
    ] = None,
    window: Annotated[
        int, typer.Option(help="sessions start within this many seconds of --start")
    ] = 6 * 3600,
    workers: Annotated[int | None, typer.Option(help="processes (default: every core)")] = None,
    url: Annotated[
        str | None, typer.Option(help="also post the receipts to this settlement service")
    ] = None,
    max_batch: Annotated[int, typer.Option(help="receipts per POST with --url")] = 10_000,
) -> None:
    """Generate a seeded network's receipts, with bad actors of known expected verdicts."""
    from settlement.config import load_settings

    try:
        settings = load_settings()
        domain = Domain.from_settings(settings, chain_id, distributor)
        cfg = SimConfig(
            seed=seed,
            receipts=100_000 if receipts is None and sessions is None else receipts,
            sessions=sessions,
            nodes=nodes,
            viewers=viewers,
            creators=creators,
            contents=contents,
            chain_id=domain.chain_id,
            distributor=domain.verifying_contract,
            start=settings.genesis if start is None else start,
            window=window,
            params=Params.from_settings(settings),
            bad=parse_bad_fractions(bad_fraction or []),
            workers=workers,
        )
        result = generate(cfg, out)
        summary: dict[str, Any] = {
            "simulate": str(result.receipts_path),
            "receipts": result.receipts,
            "honest": result.honest,
            "bad": dict(sorted(result.kinds.items())),
            "now": cfg.now,
            "seconds": round(result.seconds, 3),
            "cpu_seconds": round(result.cpu_seconds, 3),
            "workers": result.workers,
            "receipts_per_s": round(result.receipts / result.seconds) if result.seconds else None,
        }
        if url is not None:
            from settlement.client.http import SettlementClient

            if settings.admin_token is not None:
                summary["registries"] = upload_registries(
                    url, out / REGISTRIES_FILE, settings.admin_token.get_secret_value()
                )
            else:
                typer.echo(
                    "note: W2E_ADMIN_TOKEN is unset, registries.json was not uploaded; "
                    "load it into the service first or expect UNKNOWN_NODE",
                    err=True,
                )
            with SettlementClient(url, max_batch=max_batch) as client:
                summary["posted"] = post(result.receipts_path, client)
    except SettlementError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(error.exit_code) from None
    typer.echo(orjson.dumps(summary).decode())

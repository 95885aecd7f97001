"""Honest traffic, generated inside the worker processes: per-worker state, playback
sessions re-signed every few segments, and a chunk's rows in issuedAt order."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import coincurve

from settlement.client.signer import sign_digest
from settlement.domain.receipts import (
    DeliveryReceipt,
    Domain,
    ViewReceipt,
    digest,
    keccak,
)
from settlement.domain.wire import dumps_wire
from settlement.sim.world import HONEST, SimConfig, World, bitrate_ladder

# --- chunk generation (runs in workers) ------------------------------------------------

worker_state: dict[str, Any] = {}


def init_worker(cfg: SimConfig, world: World) -> None:
    p = cfg.params
    ladder = bitrate_ladder(p)
    other_chain = cfg.chain_id + 1 if cfg.chain_id < 2**256 - 1 else cfg.chain_id - 1
    worker_state.clear()
    worker_state.update(
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


def signing_key(label: str, index: int) -> coincurve.PrivateKey:
    keys = worker_state["keys"]
    key = keys.get((label, index))
    if key is None:
        world: World = worker_state["world"]
        secrets = {
            "viewer": world.viewer_secrets,
            "creator": world.creator_secrets,
            "node": world.node_secrets,
        }[label]
        key = keys[(label, index)] = coincurve.PrivateKey(secrets[index])
    return key


@dataclass(slots=True)
class Session:
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
class HonestReceipt:
    receipt: DeliveryReceipt | ViewReceipt
    line: bytes
    seq: int
    session: Session


class HonestChunk:
    """One chunk's honest sessions; `bad_actors.Chunk` adds the receipts derived from them."""

    def __init__(self, index: int) -> None:
        cfg: SimConfig = worker_state["cfg"]
        self.cfg = cfg
        self.world: World = worker_state["world"]
        self.domain: Domain = worker_state["domain"]
        self.params = cfg.params
        seed = int.from_bytes(keccak(f"w2e-simulate/{cfg.seed}/chunk/{index}".encode())[:16], "big")
        self.rng = random.Random(seed)
        # (issuedAt, seq, sub, line, label): the first three are unique, so they alone order rows
        self.rows: list[tuple[int, int, int, bytes, str]] = []
        self.seq = 0
        self.sub = 0
        self.honest: list[HonestReceipt] = []
        self.honest_delivery: list[HonestReceipt] = []
        self.sessions: list[Session] = []
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
        return self.rng.choices(
            range(len(self.world.contents)), cum_weights=worker_state["content_cum"]
        )[0]

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
        seg_bytes = worker_state["ladder"][rng.randrange(len(worker_state["ladder"]))] * seg // 8
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
        sess = Session(key, viewer, rng.randbytes(32), content, started)
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
                    record = HonestReceipt(signed, line, self.seq, sess)
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
                signing_key("viewer", v), world.viewers[v], self._pick_content(), budget, None
            )
            done += 1

    def output(self) -> tuple[bytes, bytes]:
        """The chunk's NDJSON lines in issuedAt order, and each line's label."""
        self.rows.sort()
        return (
            b"".join(row[3] + b"\n" for row in self.rows),
            "".join(row[4] + "\n" for row in self.rows).encode(),
        )

"""Honest players sending receipts through the SDK (ReceiptSigner, SettlementClient), and the
record of every receipt the service acknowledged with a 200 and an accepted or duplicate
verdict: the receipts a crash must never lose.

Every receipt is plausible by construction (PROTOCOL 3): signed now, segments and bytes
within what the elapsed time allows, nodes and contents registered, viewer != node, and
counters that only grow per key, so the service accepts them.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from eth_account import Account

from settlement.client import ReceiptSigner, RetriesExhausted, SettlementClient, SubmitError
from settlement.client.signer import PlayerSession
from settlement.domain.receipts import DeliveryReceipt, Domain

SEGMENT_BYTES = 200_000  # 400 kbit/s for a 4 s segment: well inside the plausibility rules
SEGMENT_SECONDS = 4


def receipt_key(r: Any) -> tuple[str, bytes, bytes, bytes]:
    node = r.node if type(r) is DeliveryReceipt else b""
    return (type(r).__name__, r.viewer, r.session_id, node)


def counters(r: Any) -> tuple[int, ...]:
    if type(r) is DeliveryReceipt:
        return (r.bytes_served, r.segments_served)
    return (r.watch_seconds,)


@dataclass
class World:
    """Registered nodes and contents, and the viewers' signers."""

    nodes: list[bytes]
    contents: list[bytes]
    signers: list[ReceiptSigner]
    registries: dict[str, Any]

    @classmethod
    def make(cls, chain_id: int, distributor: str, *, viewers: int = 24, seed: int = 0) -> World:
        rng = random.Random(seed)
        domain = Domain.from_hex(chain_id, distributor)
        nodes = [Account.create().address for _ in range(4)]
        creators = [Account.create().address for _ in range(3)]
        contents = [rng.randbytes(32) for _ in range(6)]
        signers = [
            ReceiptSigner.from_hex("0x" + bytes(Account.create().key).hex(), domain)
            for _ in range(viewers)
        ]
        registries = {
            "nodes": [
                {"address": a, "label": f"node{i}", "active": True} for i, a in enumerate(nodes)
            ],
            "content": [
                {"contentId": "0x" + cid.hex(), "creator": creators[i % len(creators)]}
                for i, cid in enumerate(contents)
            ],
            "viewers": [s.address_hex for s in signers],
        }
        return cls([bytes.fromhex(a[2:]) for a in nodes], contents, signers, registries)


@dataclass
class Acked:
    """What the service acknowledged: per receipt key, the highest counters a 200 carried."""

    count: int = 0  # receipts acknowledged with accepted or duplicate
    by_key: dict[tuple[str, bytes, bytes, bytes], tuple[int, ...]] = field(default_factory=dict)
    verdicts: dict[str, int] = field(default_factory=dict)
    errors: int = 0  # batches given up (connection refused for longer than the retries)
    latencies_ms: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, receipts: list[Any], verdicts: Any, ms: float) -> None:
        with self.lock:
            self.latencies_ms.append(ms)
            for r, v in zip(receipts, verdicts, strict=True):
                self.verdicts[v.label] = self.verdicts.get(v.label, 0) + 1
                if v.verdict in ("accepted", "duplicate"):
                    self.count += 1
                    k = receipt_key(r)
                    old = self.by_key.get(k)
                    new = counters(r)
                    if old is None or new > old:
                        self.by_key[k] = new


class Players:
    """Sessions that play, a thread sending each tick's receipts (one batch per tick)."""

    def __init__(
        self, world: World, url: str, acked: Acked, *, sessions: int = 12, seed: int = 0
    ) -> None:
        self.world, self.url, self.acked = world, url, acked
        self.rng = random.Random(seed)
        self.sessions: list[tuple[PlayerSession, bytes]] = []
        self.n_sessions = sessions
        self.stop_event = threading.Event()
        self.thread: threading.Thread | None = None
        self.interval = 0.2

    def _session(self) -> tuple[PlayerSession, bytes]:
        signer = self.rng.choice(self.world.signers)
        node = self.rng.choice(self.world.nodes)
        return signer.start_session(self.rng.choice(self.world.contents)), node

    def batch(self) -> list[Any]:
        """Each session's cumulative receipts now; sessions older than 90 s are replaced."""
        now = int(time.time())
        while len(self.sessions) < self.n_sessions:
            self.sessions.append(self._session())
        out: list[Any] = []
        for i, (session, node) in enumerate(self.sessions):
            played = now - session.started_at
            if played > 90:
                self.sessions[i] = self._session()
                continue
            segments = played // SEGMENT_SECONDS + 1
            out.append(session.delivery(node, segments * SEGMENT_BYTES, segments, issued_at=now))
            out.append(session.view(played, issued_at=now))
        return out

    def send(self, client: SettlementClient, receipts: list[Any]) -> None:
        t0 = time.perf_counter()
        try:
            result = client.submit(receipts)
        except (RetriesExhausted, SubmitError):
            with self.acked.lock:
                self.acked.errors += 1
            return
        self.acked.record(receipts, result.verdicts, (time.perf_counter() - t0) * 1000)

    def run(self) -> None:
        with SettlementClient(
            self.url, max_attempts=40, backoff_base=0.1, backoff_max=1.0, timeout=30
        ) as client:
            while not self.stop_event.is_set():
                t0 = time.monotonic()
                self.send(client, self.batch())
                self.stop_event.wait(max(0.0, self.interval - (time.monotonic() - t0)))

    def start(self) -> Players:
        self.thread = threading.Thread(target=self.run, name="players", daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stop_event.set()
        if self.thread is not None:
            self.thread.join(120)

"""Use case: ingest of receipt batches (and the retention of their sessions).

`Ingestor.ingest` runs PROTOCOL section 3 in order: parse, the stateless checks, the
registry gate (an in-memory copy, reloaded when the store's registry version moves), the
signature, then one database transaction that decides CONFLICT / duplicate / stale /
accepted on the locked sessions (`decide_batch`, pure) and stores the result.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, cast

from settlement import faults
from settlement.adapters.db.epochs import EpochStore
from settlement.adapters.db.rejections import UNREGISTERED_NODE, LoggedRejection, SamplePolicy
from settlement.adapters.db.store import Store
from settlement.config import Settings
from settlement.domain.epochs import EpochClock
from settlement.domain.ingest import RegistrySnapshot, Survivor, decide_batch, registry_gate
from settlement.domain.receipts import (
    DeliveryReceipt,
    Domain,
    Params,
    Reason,
    Receipt,
    Rejected,
    verify,
)
from settlement.domain.wire import parse_wire
from settlement.errors import MalformedReceipt

ACCEPTED: Final = "accepted"
DUPLICATE: Final = "duplicate"
STALE: Final = "stale"
REJECTED: Final = "rejected"
VERDICTS: Final = (ACCEPTED, DUPLICATE, STALE, REJECTED)
_INT64_MAX: Final = 2**63 - 1


@dataclass(frozen=True, slots=True)
class ItemVerdict:
    index: int
    verdict: str  # "accepted" | "duplicate" | "stale" | "rejected"
    reason: str | None  # PROTOCOL reason code when rejected
    detail: str | None


@dataclass(frozen=True, slots=True)
class IngestResult:
    items: list[ItemVerdict]
    # Counts by verdict (all four, zeros included) and by reason code (those that occurred).
    summary: dict[str, int]


# --- ingest -----------------------------------------------------------------------------


class _Registries:
    """An in-memory registry snapshot and the gate (checks 5 and 6) built on it."""

    __slots__ = ("gate", "snapshot")

    def __init__(self, snapshot: RegistrySnapshot, allowlist: bool) -> None:
        self.snapshot = snapshot
        self.gate = registry_gate(snapshot, allowlist)


class Ingestor:
    """Ingest of receipt batches against one store; one per process, safe across threads."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self.domain = Domain.from_settings(settings)
        self.params = Params.from_settings(settings)
        self.sampling = SamplePolicy(
            settings.rejection_sample_cap,
            settings.rejection_sample_per_batch,
            settings.rejection_sample_bytes,
        )
        self.clock = EpochClock.from_settings(settings)
        self._registries: _Registries | None = None
        self._reload = threading.Lock()

    def registries(self) -> _Registries:
        """The registry copy, reloaded when the store's version counter moved (one cheap read)."""
        version = self.store.registry_version()
        current = self._registries
        if current is None or current.snapshot.version != version:
            with self._reload:
                current = self._registries
                if current is None or current.snapshot.version != version:
                    current = _Registries(
                        self.store.registry_snapshot(), self.settings.viewer_allowlist
                    )
                    self._registries = current
        return current

    def _log_epoch(self, r: Receipt, now: int) -> int:
        # Counted by epoch only inside the time window (PROTOCOL 3 row 3): a made-up issuedAt
        # must not make a row of its own, so the labels per day stay bounded.
        low = max(self.clock.genesis, now - self.params.max_age)
        if not low <= r.issued_at <= now + self.params.clock_skew:
            return 0
        bucket = self.clock.bucket(r.issued_at)
        return bucket if bucket <= _INT64_MAX else 0

    def ingest(self, items: Sequence[Any], now: int) -> IngestResult:
        """Verdicts of every item, in order; returns only after the batch is committed."""
        registries = self.registries()
        gate, known_nodes = registries.gate, registries.snapshot.nodes
        domain, params, bucket = self.domain, self.params, self.clock.bucket
        results: list[ItemVerdict | None] = [None] * len(items)
        survivors: list[Survivor] = []
        logged: list[LoggedRejection] = []
        for index, item in enumerate(items):
            try:
                r = parse_wire(item)
            except MalformedReceipt as error:
                detail = str(error)
                results[index] = ItemVerdict(index, REJECTED, Reason.MALFORMED.value, detail)
                logged.append(LoggedRejection(Reason.MALFORMED.value, b"", 0, detail, item))
                continue
            verdict = verify(r, domain, params, now, gate)
            if type(verdict) is not Rejected:
                # issuedAt >= genesis here (else TOO_OLD), so it has a bucket.
                survivors.append((index, r, bucket(r.issued_at)))
                continue
            reason = verdict.reason.value
            results[index] = ItemVerdict(index, REJECTED, reason, verdict.detail)
            node = b""
            if type(r) is DeliveryReceipt:
                # Per node only for registered nodes: anyone can name a random node.
                node = r.node if r.node in known_nodes else UNREGISTERED_NODE
            logged.append(
                LoggedRejection(reason, node, self._log_epoch(r, now), verdict.detail, item)
            )
        faults.point("ingest.commit")
        stateful = self.store.ingest_batch(survivors, decide_batch, now, logged, self.sampling)
        faults.point("ingest.done")
        for (index, _, _), v in zip(survivors, stateful, strict=True):
            if type(v) is Rejected:
                results[index] = ItemVerdict(index, REJECTED, v.reason.value, v.detail)
            else:
                results[index] = ItemVerdict(index, v.verdict, None, None)
        final = cast(list[ItemVerdict], results)  # every slot is set by now
        return IngestResult(final, summarize(final))


def summarize(items: Iterable[ItemVerdict]) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for item in items:
        counts[item.verdict] += 1
        if item.reason is not None:
            counts[item.reason] += 1
    summary = {v: counts.pop(v, 0) for v in VERDICTS}
    summary.update(sorted(counts.items()))
    return summary


# --- retention --------------------------------------------------------------------------


def prune_sessions(store: Store, settings: Settings, now: int, last_closed_epoch: int) -> int:
    """Delete sessions no receipt can be accepted for again (PROTOCOL section 3, Retention).

    A session goes once `startedAt + max_session_age + max_age` has passed and every bucket
    it touched is <= `last_closed_epoch`; a quarantined one also needs its conflict stored
    before cutoff(last_closed_epoch), so that close (which ran after that cutoff) has
    published its evidence. Returns the number of sessions deleted.
    """
    started_before = now - settings.max_session_age - settings.max_age
    conflicts_before = EpochClock.from_settings(settings).cutoff(last_closed_epoch)
    # Under the close lock: a close reading a session while it goes could credit it and
    # then leave its watermarks behind. When a close holds it (here or in another
    # instance), this tick prunes nothing and the next one will.
    epochs = EpochStore(store)
    with epochs.connection() as conn, epochs.close_lock(conn, wait=False) as got:
        if not got:
            return 0
        return store.prune(started_before, last_closed_epoch, conflicts_before)


def compact_balances(store: Store, through_epoch: int) -> int | None:
    """Drop the balance rows that a row of the same account from a later epoch up to
    `through_epoch` (a closed epoch) supersedes, so that the next close reads about one row
    per account however long the service has run (`EpochStore.compact_balances`). Under the
    close lock, like `prune_sessions`: None when a close holds it (try again later).
    Returns the rows deleted.
    """
    epochs = EpochStore(store)
    with epochs.connection() as conn, epochs.close_lock(conn, wait=False) as got:
        if not got:
            return None
        return epochs.compact_balances(through_epoch)

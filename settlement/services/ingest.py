"""Use cases that join the domain and the store: ingest of receipt batches and the registries.

`Ingestor.ingest` runs PROTOCOL section 3 in order: parse, the stateless checks, the
registry gate (an in-memory copy, reloaded when the store's registry version moves), the
signature, then one database transaction that decides CONFLICT / duplicate / stale /
accepted on the locked sessions (`decide_batch`, pure) and stores the result.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import orjson

from settlement.adapters.db.epochs import EpochStore
from settlement.adapters.db.registry import Registration
from settlement.adapters.db.rejections import LoggedRejection, SamplePolicy
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
from settlement.domain.registration import (
    NodeRegistrationRequest,
    check_label,
    parse_request,
    verify_request,
)
from settlement.domain.wire import parse_wire
from settlement.errors import (
    InputError,
    InvalidRegistration,
    MalformedReceipt,
    NotFound,
    RegistryError,
)

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

    def _log_epoch(self, r: Receipt) -> int:
        if r.issued_at < self.clock.genesis:
            return 0
        bucket = self.clock.bucket(r.issued_at)
        return bucket if bucket <= _INT64_MAX else 0

    def ingest(self, items: Sequence[Any], now: int) -> IngestResult:
        """Verdicts of every item, in order; returns only after the batch is committed."""
        gate = self.registries().gate
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
            if verdict.accepted:
                # issuedAt >= genesis here (else TOO_OLD), so it has a bucket.
                survivors.append((index, r, bucket(r.issued_at)))
                continue
            reason = verdict.reason.value
            results[index] = ItemVerdict(index, REJECTED, reason, verdict.detail)
            logged.append(
                LoggedRejection(
                    reason,
                    r.node if type(r) is DeliveryReceipt else b"",
                    self._log_epoch(r),
                    verdict.detail,
                    item,
                )
            )
        stateful = self.store.ingest_batch(survivors, decide_batch, now, logged, self.sampling)
        for (index, _, _), v in zip(survivors, stateful, strict=True):
            if type(v) is Rejected:
                results[index] = ItemVerdict(index, REJECTED, v.reason.value, v.detail)
            else:
                results[index] = ItemVerdict(index, v.verdict, None, None)
        final: list[ItemVerdict] = results  # type: ignore[assignment] - every slot is set
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


# --- registries -------------------------------------------------------------------------


def _bytes(value: bytes | str, size: int, what: str) -> bytes:
    if isinstance(value, str):
        if len(value) == 2 + 2 * size and value[:2] in ("0x", "0X"):
            try:
                return bytes.fromhex(value[2:])
            except ValueError:
                pass
        raise RegistryError(f"{what} must be 0x + {2 * size} hex digits, got {value!r:.80}")
    if type(value) is bytes and len(value) == size:
        return value
    raise RegistryError(f"{what} must be {size} bytes")


def _payee(value: bytes | str, what: str, settings: Settings | None) -> bytes:
    """An address that may be paid: never address(0) nor the distributor (PROTOCOL 4)."""
    address = _bytes(value, 20, what)
    if address == bytes(20):
        raise RegistryError(f"{what} must not be the zero address: nothing could be paid to it")
    if settings is not None and address == bytes.fromhex(settings.distributor[2:]):
        raise RegistryError(f"{what} must not be the RewardDistributor: it cannot claim")
    return address


def register_node(
    store: Store,
    address: bytes | str,
    label: str,
    active: bool = True,
    *,
    settings: Settings | None = None,
) -> bytes:
    """Add or update a node (pass `settings` so the distributor address is refused too)."""
    try:
        label = check_label(label)
    except InvalidRegistration as error:
        raise RegistryError(str(error)) from None
    node = _payee(address, "node address", settings)
    store.put_node(node, label, active)
    return node


def set_node_active(store: Store, address: bytes | str, active: bool) -> None:
    node = _bytes(address, 20, "node address")
    if not store.set_node_active(node, active):
        raise NotFound(f"node 0x{node.hex()} is not registered: register it first")


def add_content(
    store: Store,
    content_id: bytes | str,
    creator: bytes | str,
    *,
    settings: Settings | None = None,
) -> bytes:
    cid = _bytes(content_id, 32, "content id")
    store.put_content(cid, _payee(creator, "creator address", settings))
    return cid


def remove_content(store: Store, content_id: bytes | str) -> None:
    cid = _bytes(content_id, 32, "content id")
    if not store.remove_content(cid):
        raise NotFound(f"content 0x{cid.hex()} is not registered")


def add_viewer(store: Store, address: bytes | str, *, settings: Settings | None = None) -> bytes:
    viewer = _payee(address, "viewer address", settings)
    store.add_viewer(viewer)
    return viewer


def remove_viewer(store: Store, address: bytes | str) -> None:
    viewer = _bytes(address, 20, "viewer address")
    if not store.remove_viewer(viewer):
        raise NotFound(f"viewer 0x{viewer.hex()} is not in the allowlist")


def load_registries(
    store: Store, doc: Mapping[str, Any] | str | Path, *, settings: Settings | None = None
) -> dict[str, int]:
    """Import a registries document (the simulator's registries.json shape) in one transaction:
    {"nodes": [{"address", "label", "active"}], "content": [{"contentId", "creator"}],
    "viewers": ["0x.."]}. Returns the number of entries of each kind.
    """
    if not isinstance(doc, Mapping):
        try:
            doc = orjson.loads(Path(doc).read_bytes())
        except (OSError, orjson.JSONDecodeError) as error:
            raise InputError(f"cannot read registries from {doc}: {error}") from None
        if not isinstance(doc, Mapping):
            raise InputError("a registries file holds one JSON object")
    try:
        nodes = [
            (
                _payee(n["address"], "node address", settings),
                check_label(n.get("label", "node")),
                bool(n.get("active", True)),
            )
            for n in doc.get("nodes", [])
        ]
        content = [
            (
                _bytes(c["contentId"], 32, "content id"),
                _payee(c["creator"], "creator address", settings),
            )
            for c in doc.get("content", [])
        ]
        viewers = [_payee(v, "viewer address", settings) for v in doc.get("viewers", [])]
    except (KeyError, TypeError, InvalidRegistration) as error:
        raise RegistryError(f"invalid registries document: {error}") from None
    store.load_registries(nodes, content, viewers)
    return {"nodes": len(nodes), "content": len(content), "viewers": len(viewers)}


def request_node_registration(
    store: Store,
    settings: Settings,
    signed_request: Mapping[str, Any] | NodeRegistrationRequest,
    now: int,
) -> Registration:
    """Store a node's signed registration request; in open mode it is approved at once.

    Raises InvalidRegistration when the request is malformed, stale, not signed by its
    node, or not newer than the node's last request (a signed request is used once).
    """
    request = (
        signed_request
        if isinstance(signed_request, NodeRegistrationRequest)
        else parse_request(signed_request)
    )
    verify_request(
        request,
        Domain.from_settings(settings),
        now,
        clock_skew=settings.clock_skew,
        max_age=settings.registration_max_age,
    )
    try:
        node = _payee(request.node, "node address", settings)
    except RegistryError as error:
        raise InvalidRegistration(str(error)) from None
    reg = store.add_registration(
        node,
        request.label,
        request.issued_at,
        request.signature,
        now,
        approve=settings.registry_mode == "open",
    )
    if reg is None:
        raise InvalidRegistration(
            f"node 0x{node.hex()} already sent a request issued at or after {request.issued_at}: "
            "sign a new request with a later issuedAt"
        )
    return reg


def approve_node_registration(store: Store, request_id: int, now: int) -> Registration:
    return _decide_registration(store, request_id, True, now)


def reject_node_registration(store: Store, request_id: int, now: int) -> Registration:
    return _decide_registration(store, request_id, False, now)


def _decide_registration(store: Store, request_id: int, approve: bool, now: int) -> Registration:
    reg = store.decide_registration(request_id, approve, now)
    if reg is None:
        existing = store.registration(request_id)
        if existing is None:
            raise NotFound(f"no node registration request {request_id}")
        raise RegistryError(f"request {request_id} is already {existing.status}")
    return reg


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

"""The explorer's read side: nodes (bytes credited, receipts included and rejected, rewards,
registration), leaderboards, an epoch's summary and an account's history, for the public pages
(settlement/web) and their JSON API. Reads only; amounts are integers in base units."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Final

import orjson
from eth_utils import to_checksum_address

from settlement.adapters.db import submitter as sdb
from settlement.adapters.db.epochs import EpochStore
from settlement.adapters.db.explorer import ExplorerReads, NextCloseRows
from settlement.adapters.db.store import Store
from settlement.config import Settings
from settlement.domain.rewards import CLASSES, ClassAmounts, RewardParams, allocate, emitted_pools
from settlement.errors import InputError, NotFound
from settlement.services import epochs as epochs_service

DECIMALS: Final = 18  # W2E has 18 decimals: 1 W2E = 10**18 base units
UNIT: Final = 10**DECIMALS
MAX_LIMIT: Final = 1000  # rows of a leaderboard or epochs of a node page, at most
REGISTRATION_STATES: Final = ("none", "pending", "approved", "rejected")


def format_w2e(amount: int, decimals: int = DECIMALS) -> str:
    """Base units as W2E, exactly (integer math): thousands separated, trailing zeros of the
    fraction dropped; 1_500_000_000_000_000_000 -> "1.5"."""
    if type(amount) is not int:
        raise TypeError(f"an amount is an integer of base units, got {amount!r}")
    sign = "-" if amount < 0 else ""
    whole, frac = divmod(abs(amount), 10**decimals)
    text = f"{sign}{whole:,}"
    digits = str(frac).rjust(decimals, "0").rstrip("0")
    return f"{text}.{digits}" if digits else text


def checksum(address: bytes) -> str:
    return str(to_checksum_address("0x" + address.hex()))


def parse_address(text: str) -> bytes:
    """A 0x-prefixed 20-byte hex address (any case) -> its bytes; InputError otherwise."""
    t = text.strip()
    if len(t) != 42 or not t.startswith(("0x", "0X")):
        raise InputError(f"{text!r} is not an address: give 0x and 40 hex digits")
    try:
        return bytes.fromhex(t[2:])
    except ValueError:
        raise InputError(f"{text!r} is not an address: give 0x and 40 hex digits") from None


# --- bytes credited to nodes, per closed epoch ----------------------------------------------


@dataclass(frozen=True, slots=True)
class EpochDeliveries:
    """What one close credited to nodes: bytes (node weights, after the per-viewer cap of
    PROTOCOL 5) and the delivery keys it included, by node."""

    bytes_by_node: dict[bytes, int]
    keys_by_node: dict[bytes, int]


def epoch_deliveries(
    reads: ExplorerReads, epoch: int, max_bytes_per_viewer: int
) -> EpochDeliveries:
    """The node weights of a closed epoch, re-derived from its stored watermark moves: each
    key's bytes above its watermark, summed per (viewer, node); a viewer above the cap has it
    split over its nodes with `allocate`, as the close did. The node pool was allocated by
    these weights, so they are what each node's reward is proportional to."""
    per_viewer: dict[bytes, dict[bytes, int]] = defaultdict(lambda: defaultdict(int))
    keys: dict[bytes, int] = defaultdict(int)
    for move in reads.delivery_moves(epoch):
        keys[move.node] += 1
        if move.delta_bytes > 0:
            per_viewer[move.viewer][move.node] += move.delta_bytes
    credited: dict[bytes, int] = defaultdict(int)
    for per_node in per_viewer.values():
        split: dict[bytes, int] = dict(per_node)
        if sum(split.values()) > max_bytes_per_viewer:
            split = allocate(max_bytes_per_viewer, split)
        for node, b in split.items():
            credited[node] += b
    return EpochDeliveries(dict(credited), dict(keys))


class DeliveryCache:
    """Each closed epoch's `EpochDeliveries`, computed once: a closed epoch does not change.
    (Retention later prunes old sessions' watermark rows; what was computed stays.) Bounded
    to the `max_epochs` used last."""

    def __init__(self, max_epochs: int = 256) -> None:
        self.max_epochs = max_epochs
        self._lock = threading.Lock()
        self._epochs: dict[int, EpochDeliveries] = {}

    def get(self, reads: ExplorerReads, epoch: int, cap: int) -> EpochDeliveries:
        with self._lock:
            found = self._epochs.pop(epoch, None)
            if found is not None:
                self._epochs[epoch] = found
                return found
        computed = epoch_deliveries(reads, epoch, cap)
        with self._lock:
            self._epochs[epoch] = computed
            while len(self._epochs) > self.max_epochs:
                del self._epochs[next(iter(self._epochs))]
        return computed


def _cap_of(manifest: dict[str, Any]) -> int:
    return int(manifest["parameters"]["maxBytesPerViewer"])


# --- a node -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NodeEpoch:
    epoch: int
    bytes_credited: int
    receipts_included: int  # delivery keys of the node the close included (one receipt each)
    rejected: dict[str, int]
    reward: int  # the node-class allocation, base units


@dataclass(frozen=True, slots=True)
class NodeView:
    address: bytes
    registered: bool
    active: bool
    label: str | None
    registration_state: str  # one of REGISTRATION_STATES
    requested_at: int | None
    decided_at: int | None
    epochs: list[NodeEpoch]  # closed epochs, newest first
    rejected_total: dict[str, int]  # every epoch, open ones and epoch 0 (no epoch) too
    earned: int  # node-class allocations of every closed epoch, base units
    earned_other: dict[str, int] = field(default_factory=dict)  # viewer, creator classes

    def to_json(self) -> dict[str, Any]:
        return {
            "address": checksum(self.address),
            "registered": self.registered,
            "active": self.active,
            "label": self.label,
            "registration": {
                "state": self.registration_state,
                "requested_at": self.requested_at,
                "decided_at": self.decided_at,
            },
            "epochs": [
                {
                    "epoch": e.epoch,
                    "bytes_credited": str(e.bytes_credited),
                    "receipts_included": e.receipts_included,
                    "rejected": dict(sorted(e.rejected.items())),
                    "reward": str(e.reward),
                }
                for e in self.epochs
            ],
            "rejected_total": dict(sorted(self.rejected_total.items())),
            "earned": str(self.earned),
        }


def node_view(
    store: Store,
    address: bytes,
    limit: int = 50,
    before: int | None = None,
    cache: DeliveryCache | None = None,
) -> NodeView:
    """A node's page: registry and registration state, and per closed epoch (newest first,
    `limit` of them, below `before` when given) its bytes credited, receipts included and
    rejected by reason, and reward. Rejections of a node not in the registry are counted
    under no address (the log keeps one row for all of them), so an unregistered address
    shows none."""
    if not 1 <= limit <= MAX_LIMIT:
        raise InputError(f"limit must be 1..{MAX_LIMIT}, got {limit}")
    reads = ExplorerReads(store)
    cache = DeliveryCache() if cache is None else cache
    registry = reads.node(address)
    registration = reads.latest_registration(address)
    rejected_by_epoch: dict[int, dict[str, int]] = defaultdict(dict)
    rejected_total: dict[str, int] = defaultdict(int)
    for reason, epoch, count in reads.rejections_of(address):
        rejected_by_epoch[epoch][reason] = rejected_by_epoch[epoch].get(reason, 0) + count
        rejected_total[reason] += count
    rewards: dict[int, int] = defaultdict(int)
    earned: dict[str, int] = dict.fromkeys(CLASSES, 0)
    for epoch, cls, amount in reads.allocations_of(address):
        earned[cls] += amount
        if cls == "node":
            rewards[epoch] += amount
    epochs = []
    for stored in EpochStore(store).list(limit, before):
        manifest = _manifest(stored.manifest)
        credit = cache.get(reads, stored.epoch, _cap_of(manifest))
        epochs.append(
            NodeEpoch(
                stored.epoch,
                credit.bytes_by_node.get(address, 0),
                credit.keys_by_node.get(address, 0),
                dict(rejected_by_epoch.get(stored.epoch, {})),
                rewards.get(stored.epoch, 0),
            )
        )
    return NodeView(
        address=address,
        registered=registry is not None,
        active=registry is not None and registry[1],
        label=registry[0] if registry is not None else None,
        registration_state="none" if registration is None else registration.status,
        requested_at=None if registration is None else registration.requested_at,
        decided_at=None if registration is None else registration.decided_at,
        epochs=epochs,
        rejected_total=dict(rejected_total),
        earned=earned["node"],
        earned_other={k: v for k, v in earned.items() if k != "node"},
    )


def _manifest(raw: bytes) -> dict[str, Any]:
    obj: dict[str, Any] = orjson.loads(raw)
    return obj


# --- leaderboards -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ranked:
    rank: int
    account: bytes
    amount: int


@dataclass(frozen=True, slots=True)
class Leaderboard:
    cls: str
    epoch: int | None  # None: cumulative over every closed epoch
    accounts: int  # accounts with a positive amount in the class (and epoch)
    total: int  # their amounts' sum, base units
    entries: list[Ranked]

    def to_json(self) -> dict[str, Any]:
        return {
            "class": self.cls,
            "epoch": self.epoch,
            "accounts": self.accounts,
            "total": str(self.total),
            "entries": [
                {"rank": r.rank, "address": checksum(r.account), "amount": str(r.amount)}
                for r in self.entries
            ],
        }


def leaderboard(store: Store, cls: str, epoch: int | None = None, limit: int = 10) -> Leaderboard:
    """Top earners of a class (node, viewer, creator): in one closed epoch, or cumulative
    over all; by amount, ties by address ascending. NotFound when `epoch` is not closed."""
    if cls not in CLASSES:
        raise InputError(f"class must be one of {', '.join(CLASSES)}, got {cls!r}")
    if not 1 <= limit <= MAX_LIMIT:
        raise InputError(f"limit must be 1..{MAX_LIMIT}, got {limit}")
    reads = ExplorerReads(store)
    if epoch is not None:
        if EpochStore(store).get(epoch) is None:
            raise NotFound(f"epoch {epoch} is not closed")
        amounts = reads.epoch_class_amounts(epoch, cls)
    else:
        at = CLASSES.index(cls)
        amounts = [(a, v[at]) for a, v in reads.latest_balances().items()]
    positive = sorted(((a, v) for a, v in amounts if v > 0), key=lambda x: (-x[1], x[0]))
    return Leaderboard(
        cls,
        epoch,
        len(positive),
        sum(v for _, v in positive),
        [Ranked(i + 1, a, v) for i, (a, v) in enumerate(positive[:limit])],
    )


# --- an epoch ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OnChain:
    """What the submitter recorded for a proposal whose root covers the epoch."""

    status: str  # prepared | sent | mined (pending on chain) | accepted | revoked | ...
    kind: str
    root: str
    first_epoch: int
    epoch: int
    valid_at: int | None
    tx_hash: str | None
    note: str | None


@dataclass(frozen=True, slots=True)
class DataFile:
    name: str
    rows: int
    size: int
    path: str | None  # below the data dir (GET /v1/data/PATH); None: not on this disk


@dataclass(frozen=True, slots=True)
class EpochSummary:
    epoch: int
    root: str
    data_hash: str
    cumulative_total: int
    proposes: bool
    start: int
    end: int
    cutoff: int
    pools: dict[str, dict[str, int]]  # class -> emitted, carriedIn, allocated, carriedOut
    counts: dict[str, int]
    floor: str
    prev_manifest_hash: str
    files: list[DataFile]
    proposals: list[OnChain]  # newest first

    @property
    def manifest_path(self) -> str:
        return f"epoch-{self.epoch:08d}/manifest.json"


def _proposals(store: Store) -> list[sdb.Proposal]:
    return sdb.SubmitterStore(store).all()


def epoch_summaries(
    store: Store, settings: Settings, limit: int = 100, before: int | None = None
) -> list[EpochSummary]:
    proposals = _proposals(store)
    return [
        _summary(c, proposals)
        for c in epochs_service.list_epochs(store, settings, limit=limit, before=before)
    ]


def epoch_summary(store: Store, settings: Settings, epoch: int) -> EpochSummary:
    return _summary(epochs_service.get_epoch(store, settings, epoch), _proposals(store))


def _summary(closed: Any, proposals: list[sdb.Proposal]) -> EpochSummary:
    m = closed.manifest_obj
    on_disk = {p.name.split(".", 1)[0]: p.name for p in _listing(closed.directory)}
    files = [
        DataFile(
            f["name"],
            int(f["rows"]),
            int(f["size"]),
            f"epoch-{closed.epoch:08d}/{on_disk[f['sha256']]}" if f["sha256"] in on_disk else None,
        )
        for f in m["files"]
    ]
    covering = [
        OnChain(p.status, p.kind, p.root, p.first_epoch, p.epoch, p.valid_at, p.tx_hash, p.note)
        for p in reversed(proposals)
        if p.kind == sdb.ROOT and p.first_epoch <= closed.epoch <= p.epoch
    ]
    return EpochSummary(
        epoch=closed.epoch,
        root=closed.root,
        data_hash=closed.data_hash,
        cumulative_total=closed.cumulative_total,
        proposes=closed.proposes,
        start=int(m["start"]),
        end=int(m["end"]),
        cutoff=int(m["cutoff"]),
        pools={k: {f: int(x) for f, x in v.items()} for k, v in m["pools"].items()},
        counts={k: int(v) for k, v in m["counts"].items()},
        floor=str(m["floor"]),
        prev_manifest_hash=str(m["prevManifestHash"]),
        files=files,
        proposals=covering,
    )


def _listing(directory: Any) -> list[Any]:
    try:
        return [p for p in directory.iterdir() if p.is_file()]
    except OSError:
        return []


# --- an account ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AccountHistory:
    """What an account earned, by class and by closed epoch (newest first)."""

    earned: dict[str, int]
    by_epoch: list[tuple[int, dict[str, int]]]


def account_history(store: Store, account: bytes) -> AccountHistory:
    earned = dict.fromkeys(CLASSES, 0)
    by_epoch: dict[int, dict[str, int]] = {}
    for epoch, cls, amount in ExplorerReads(store).allocations_of(account):
        earned[cls] += amount
        by_epoch.setdefault(epoch, dict.fromkeys(CLASSES, 0))[cls] += amount
    return AccountHistory(earned, sorted(by_epoch.items(), reverse=True))


def closed_epoch_numbers(store: Store, limit: int = MAX_LIMIT) -> list[int]:
    """The closed epochs' numbers, newest first."""
    return [s.epoch for s in EpochStore(store).list(limit)]


# --- the open epoch: an estimate ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Estimate:
    """What the next close (of `epoch`) would pay, by class, were it to run now on what is
    stored, under today's settings. An estimate: receipts still to come, a quarantine or a
    registry change before the close move it."""

    epoch: int
    by_class: dict[str, int]  # classes with a positive amount only


def next_close_weights(
    rows: NextCloseRows,
    *,
    now: int,
    segment_seconds: int,
    max_bytes_per_viewer: int,
    max_watch_seconds: int,
) -> dict[str, dict[bytes, int]]:
    """Node, viewer and creator weights of the next close from its stored rows: PROTOCOL 4-5
    key by key, as domain.credit does over columns (best candidate per key, inclusion above
    the watermark, segments after the close, the watch clip, the per-viewer caps)."""
    content = {(v, s): c for v, s, c, q in rows.sessions if q is None or q >= now}
    best_d: dict[tuple[bytes, bytes, bytes], tuple[int, int]] = {}
    for v, s, n, _, b, g in rows.deliveries:
        if (v, s) in content and (b, g) > best_d.get((v, s, n), (-1, -1)):
            best_d[(v, s, n)] = (b, g)
    segments: dict[tuple[bytes, bytes], int] = defaultdict(int)
    credited_sessions: set[tuple[bytes, bytes]] = set()
    bytes_by_viewer: dict[bytes, dict[bytes, int]] = defaultdict(lambda: defaultdict(int))
    for (v, s, n), (cb, cs) in best_d.items():
        wb, ws = rows.delivery_marks.get((v, s, n), (0, 0))
        included = cb >= wb and cs >= ws and (cb > wb or cs > ws)
        segments[(v, s)] += cs if included else ws
        if included:
            credited_sessions.add((v, s))
            if cb > wb:
                bytes_by_viewer[v][n] += cb - wb
    best_v: dict[tuple[bytes, bytes], int] = {}
    for v, s, _, w in rows.views:
        if (v, s) in content and w > best_v.get((v, s), -1):
            best_v[(v, s)] = w
    for session, w in best_v.items():
        if w > rows.view_marks.get(session, (0, 0))[0]:
            credited_sessions.add(session)
    watch_by_viewer: dict[bytes, dict[tuple[bytes, bytes], int]] = defaultdict(dict)
    for v, s in credited_sessions:
        mark_watch, mark_credited = rows.view_marks.get((v, s), (0, 0))
        watch = best_v.get((v, s), mark_watch)
        clipped = min(watch, segment_seconds * segments.get((v, s), 0))
        if clipped > mark_credited:
            watch_by_viewer[v][(content[(v, s)], s)] = clipped - mark_credited
    weights: dict[str, dict[bytes, int]] = {cls: defaultdict(int) for cls in CLASSES}
    for per_node in bytes_by_viewer.values():
        split: dict[bytes, int] = dict(per_node)
        if sum(split.values()) > max_bytes_per_viewer:
            split = allocate(max_bytes_per_viewer, split)
        for node, b in split.items():
            weights["node"][node] += b
    for viewer, per_session in watch_by_viewer.items():
        if sum(per_session.values()) > max_watch_seconds:
            per_session = allocate(max_watch_seconds, per_session)
        for (content_id, _), seconds in per_session.items():
            weights["viewer"][viewer] += seconds
            creator = rows.creators.get(content_id)
            if creator is not None and creator != viewer:
                weights["creator"][creator] += seconds
    return {cls: {a: x for a, x in w.items() if x} for cls, w in weights.items()}


def open_epoch_estimate(
    store: Store, settings: Settings, account: bytes, now: int | None = None
) -> Estimate:
    """What the close of the epoch after the last closed one would pay `account`, by class,
    from the receipts stored so far (`Estimate`)."""
    now = int(time.time()) if now is None else now
    epochs = EpochStore(store)
    last = epochs.last_closed()
    stored = epochs.get(last) if last else None
    carried = stored.carried if stored is not None else ClassAmounts(0, 0, 0)
    rows = ExplorerReads(store).next_close_rows(last + 1)
    weights = next_close_weights(
        rows,
        now=now,
        segment_seconds=settings.segment_seconds,
        max_bytes_per_viewer=settings.max_bytes_per_viewer,
        max_watch_seconds=settings.max_watch_seconds_per_epoch,
    )
    emitted = emitted_pools(
        RewardParams(
            emission=settings.emission, bps_node=settings.bps_node, bps_viewer=settings.bps_viewer
        )
    )
    by_class = {}
    for cls in CLASSES:
        w = weights[cls]
        if account in w:
            amount = allocate(emitted.get(cls) + carried.get(cls), w)[account]
            if amount:
                by_class[cls] = amount
    return Estimate(last + 1, by_class)

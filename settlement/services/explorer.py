"""The explorer's read side: nodes (bytes credited, receipts included and rejected, rewards,
registration), leaderboards, an epoch's summary and an account's history, for the public pages
(settlement/web) and their JSON API. Reads only; amounts are integers in base units."""

from __future__ import annotations

import dataclasses
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Final

import orjson
from eth_utils import to_checksum_address

from settlement.adapters.db import submitter as sdb
from settlement.adapters.db import verdicts as vdb
from settlement.adapters.db.epochs import EpochStore
from settlement.adapters.db.explorer import ExplorerReads, Moved
from settlement.adapters.db.store import Store
from settlement.config import Settings
from settlement.domain.rewards import CLASSES, allocate
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


def epoch_deliveries(moved: dict[tuple[bytes, bytes], Moved], cap: int) -> EpochDeliveries:
    """The node weights of a closed epoch from what its close moved, by (viewer, node): the
    bytes above the watermarks, a viewer above the cap `cap` split over its nodes with
    `allocate`, as the close did (PROTOCOL 5). The node pool was allocated by these weights,
    so each node's reward is proportional to them."""
    per_viewer: dict[bytes, dict[bytes, int]] = defaultdict(dict)
    keys: dict[bytes, int] = defaultdict(int)
    for (viewer, node), m in moved.items():
        keys[node] += m.keys
        if m.bytes > 0:
            per_viewer[viewer][node] = m.bytes
    credited: dict[bytes, int] = defaultdict(int)
    for per_node in per_viewer.values():
        split = per_node
        if sum(split.values()) > cap:
            split = allocate(cap, per_node)
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

    def get_many(self, reads: ExplorerReads, caps: dict[int, int]) -> dict[int, EpochDeliveries]:
        """The deliveries of each epoch in `caps` (epoch -> its maxBytesPerViewer); those not
        kept yet are computed together, in one pass over the watermark rows."""
        found: dict[int, EpochDeliveries] = {}
        with self._lock:
            for epoch in caps:
                kept = self._epochs.pop(epoch, None)
                if kept is not None:
                    self._epochs[epoch] = kept
                    found[epoch] = kept
        missing = [e for e in caps if e not in found]
        if missing:
            for epoch, moved in reads.delivery_moves(missing).items():
                found[epoch] = epoch_deliveries(moved, caps[epoch])
            with self._lock:
                for epoch in missing:
                    self._epochs[epoch] = found[epoch]
                while len(self._epochs) > self.max_epochs:
                    del self._epochs[next(iter(self._epochs))]
        return found


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
    closed = EpochStore(store).list(limit, before)
    credits = cache.get_many(reads, {s.epoch: _cap_of(_manifest(s.manifest)) for s in closed})
    epochs = []
    for stored in closed:
        credit = credits[stored.epoch]
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


class LeaderboardCache:
    """Leaderboards computed once per (class, epoch) and last closed epoch: they change only
    when an epoch closes. Each holds its top MAX_LIMIT rows (a database sort costs the same
    for 10 rows as for 1,000); bounded to the `max_boards` used last."""

    def __init__(self, max_boards: int = 64) -> None:
        self.max_boards = max_boards
        self._lock = threading.Lock()
        self._boards: dict[tuple[str, int | None, int], Leaderboard] = {}

    def get(self, key: tuple[str, int | None, int]) -> Leaderboard | None:
        with self._lock:
            board = self._boards.pop(key, None)
            if board is not None:
                self._boards[key] = board
            return board

    def put(self, key: tuple[str, int | None, int], board: Leaderboard) -> None:
        with self._lock:
            self._boards[key] = board
            while len(self._boards) > self.max_boards:
                del self._boards[next(iter(self._boards))]


def leaderboard(
    store: Store,
    cls: str,
    epoch: int | None = None,
    limit: int = 10,
    cache: LeaderboardCache | None = None,
) -> Leaderboard:
    """Top earners of a class (node, viewer, creator): in one closed epoch, or cumulative
    over all; by amount, ties by address ascending. NotFound when `epoch` is not closed."""
    if cls not in CLASSES:
        raise InputError(f"class must be one of {', '.join(CLASSES)}, got {cls!r}")
    if not 1 <= limit <= MAX_LIMIT:
        raise InputError(f"limit must be 1..{MAX_LIMIT}, got {limit}")
    epochs = EpochStore(store)
    key = (cls, epoch, epochs.last_closed())
    board = cache.get(key) if cache is not None else None
    if board is None:
        board = _leaderboard(epochs, cls, epoch, MAX_LIMIT if cache is not None else limit)
        if cache is not None:
            cache.put(key, board)
    return dataclasses.replace(board, entries=board.entries[:limit])


def _leaderboard(epochs: EpochStore, cls: str, epoch: int | None, limit: int) -> Leaderboard:
    if epoch is not None:
        stored = epochs.get(epoch)
        if stored is None:
            raise NotFound(f"epoch {epoch} is not closed")
        manifests = [stored.manifest]
    else:
        manifests = [s.manifest for s in epochs.list(2**62)]
    top, accounts = ExplorerReads(epochs.store).top(cls, epoch, limit)
    # What the class was allocated is what its accounts got, to the unit (PROTOCOL 5: the
    # allocation of a pool with weights sums to the pool), so the total needs no scan.
    total = sum(int(_manifest(m)["pools"][cls]["allocated"]) for m in manifests)
    return Leaderboard(
        cls, epoch, accounts, total, [Ranked(i + 1, a, v) for i, (a, v) in enumerate(top)]
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
    # The watchtower's latest verdict on this epoch's root; None when it kept none on this
    # root (never one on another root of the epoch, e.g. a revoked or corrected one).
    audit: vdb.StoredVerdict | None = None

    @property
    def manifest_path(self) -> str:
        return f"epoch-{self.epoch:08d}/manifest.json"


def _proposals(store: Store) -> list[sdb.Proposal]:
    return sdb.SubmitterStore(store).all()


def epoch_summaries(
    store: Store, settings: Settings, limit: int = 100, before: int | None = None
) -> list[EpochSummary]:
    proposals = _proposals(store)
    closed = epochs_service.list_epochs(store, settings, limit=limit, before=before)
    verdicts = vdb.verdicts_for(store, [c.epoch for c in closed])
    return [_summary(c, proposals, verdicts.get(c.epoch, [])) for c in closed]


def epoch_summary(store: Store, settings: Settings, epoch: int) -> EpochSummary:
    closed = epochs_service.get_epoch(store, settings, epoch)
    verdicts = vdb.verdicts_for(store, [epoch]).get(epoch, [])
    return _summary(closed, _proposals(store), verdicts)


def audits(store: Store, roots: dict[int, str]) -> dict[int, vdb.StoredVerdict]:
    """The watchtower's latest verdict on each epoch's root (epoch -> root); epochs whose
    root it kept no verdict on are left out."""
    kept = vdb.verdicts_for(store, roots)
    found = {e: vdb.matching(kept.get(e, []), root) for e, root in roots.items()}
    return {e: v for e, v in found.items() if v is not None}


def _summary(
    closed: Any, proposals: list[sdb.Proposal], verdicts: list[vdb.StoredVerdict]
) -> EpochSummary:
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
        audit=vdb.matching(verdicts, closed.root),
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

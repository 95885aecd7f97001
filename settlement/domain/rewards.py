"""Reward rules of PROTOCOL sections 4 and 5: watermarks, deltas, caps, pools, allocation.

Pure and exact: integers in, integers out, no clock and no I/O. What the close and the
auditor both run: per-key credit of PROTOCOL 4 over columns (`domain.credit`, numpy), then
`settle_weights` here for the caps, pools and allocation. `credit_row` / `settle_rows` state
the same per-key rules one session at a time: the readable reference that tests hold the
columnar credit to (same allocations, pools, watermarks and root)."""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar

BPS = 10_000
CLASSES = ("node", "viewer", "creator")

K = TypeVar("K", bound=Hashable)


def allocate(pool: int, weights: Mapping[K, int]) -> dict[K, int]:
    """Split `pool` base units by `weights` with the largest-remainder rule of PROTOCOL 5.

    `a_i = floor(P*w_i/W)`; the `P - sum(a_i)` leftover units go one each to the largest
    remainders `P*w_i mod W`, ties by ascending key. Keys must be mutually comparable:
    20-byte addresses (bytes of one length compare as unsigned integers) or tuples of them.
    Zero weights get zero; the sum is exactly `pool` whenever some weight is positive,
    and 0 (the pool stays with the caller) when none is.
    """
    if type(pool) is not int or pool < 0:
        raise ValueError(f"pool must be a non-negative integer, got {pool!r}")
    total = 0
    for key, w in weights.items():
        if type(w) is not int or w < 0:
            raise ValueError(f"weight of {key!r} must be a non-negative integer, got {w!r}")
        total += w
    out: dict[K, int] = {}
    if total == 0:
        return dict.fromkeys(weights, 0)
    remainders: list[tuple[int, Any]] = []
    given = 0
    for key, w in weights.items():
        q, r = divmod(pool * w, total)
        out[key] = q
        given += q
        if r:
            remainders.append((-r, key))
    leftover = pool - given
    if leftover:
        # leftover < number of positive remainders, so a partial sort is enough.
        remainders.sort()
        for _, key in remainders[:leftover]:
            out[key] += 1
    return out


@dataclass(frozen=True, slots=True)
class RewardParams:
    """Every setting that affects rewards (published in each manifest)."""

    emission: int
    bps_node: int = 6000
    bps_viewer: int = 3000
    segment_seconds: int = 4
    max_bytes_per_viewer: int = 2**64 - 1
    max_watch_seconds_per_epoch: int = 2**32 - 1

    def __post_init__(self) -> None:
        for name in (
            "emission",
            "bps_node",
            "bps_viewer",
            "segment_seconds",
            "max_bytes_per_viewer",
            "max_watch_seconds_per_epoch",
        ):
            value = getattr(self, name)
            if type(value) is not int or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
        if self.bps_node + self.bps_viewer > BPS:
            raise ValueError(f"bps_node + bps_viewer must be <= {BPS}")
        if self.segment_seconds < 1:
            raise ValueError("segment_seconds must be at least 1")


@dataclass(frozen=True, slots=True)
class ClassAmounts:
    node: int = 0
    viewer: int = 0
    creator: int = 0

    def get(self, cls: str) -> int:
        return int(getattr(self, cls))

    def total(self) -> int:
        return self.node + self.viewer + self.creator


def emitted_pools(params: RewardParams) -> ClassAmounts:
    """One epoch's emission split: node and viewer rounded down, creator takes the rest."""
    node = params.emission * params.bps_node // BPS
    viewer = params.emission * params.bps_viewer // BPS
    return ClassAmounts(node=node, viewer=viewer, creator=params.emission - node - viewer)


# One delivery key of a session as the close sees it:
# (node, candidate bytes, candidate segments, watermark bytes, watermark segments).
DeliveryKeyRow = tuple[bytes, int, int, int, int]
# One non-quarantined session, columnar and cheap to build for a million sessions:
# (viewer, sessionId, contentId, delivery keys, view candidate or None, view watermark (raw
# watchSeconds), credited watch seconds).
SessionRow = tuple[bytes, bytes, bytes, list[DeliveryKeyRow], "int | None", int, int]


@dataclass(frozen=True, slots=True)
class SessionInput:
    """One non-quarantined session as the close sees it.

    `delivery_watermarks` / `view_watermark`: the counters of each key's last included
    candidate (missing = 0); the view watermark is the raw `watchSeconds`, not clipped.
    `credited`: the watch seconds credited so far (clipped; PROTOCOL 5).
    `delivery_candidates` / `view_candidate`: per key, the best stored receipt among the
    buckets `<= e` (None / missing when the key has none).
    Counters of a delivery key are `(bytesServed, segmentsServed)`.
    """

    viewer: bytes
    session_id: bytes
    content_id: bytes
    delivery_watermarks: Mapping[bytes, tuple[int, int]] = field(default_factory=dict)
    delivery_candidates: Mapping[bytes, tuple[int, int]] = field(default_factory=dict)
    view_watermark: int = 0
    view_candidate: int | None = None
    credited: int = 0

    def as_row(self) -> SessionRow:
        """The columnar form `settle_rows` takes (a watermark without a candidate counts
        for the delivered segments, with a candidate equal to it: not included)."""
        keys: list[DeliveryKeyRow] = []
        for node, (cb, cs) in self.delivery_candidates.items():
            wb, ws = self.delivery_watermarks.get(node, (0, 0))
            keys.append((node, cb, cs, wb, ws))
        for node, (wb, ws) in self.delivery_watermarks.items():
            if node not in self.delivery_candidates:
                keys.append((node, wb, ws, wb, ws))
        return (
            self.viewer,
            self.session_id,
            self.content_id,
            keys,
            self.view_candidate,
            self.view_watermark,
            self.credited,
        )


class SessionCredit(NamedTuple):
    """What one credited session got this epoch (published, and fed to the next close).

    A tuple: the close builds one per credited session, a million per epoch at scale.
    """

    viewer: bytes
    session_id: bytes
    content_id: bytes
    # node -> (delta bytes, delta segments) for the included delivery keys
    delivery_deltas: dict[bytes, tuple[int, int]]
    # node -> new watermark, for the included delivery keys only
    delivery_watermarks: dict[bytes, tuple[int, int]]
    view_included: bool
    view_watermark: int  # after this close: the raw watchSeconds of the last included view
    credited: int  # after this close: the clipped watch seconds credited so far
    watch_credit: int  # seconds before the per-viewer cap
    # Every delivery key of the session with its previous watermark, and the previous view
    # watermark and credited value (published, zeros included).
    previous_delivery: tuple[tuple[bytes, int, int], ...] = ()
    previous_view_watermark: int = 0
    previous_credited: int = 0


@dataclass(frozen=True, slots=True)
class PoolReport:
    emitted: ClassAmounts
    carried_in: ClassAmounts
    allocated: ClassAmounts
    carried_out: ClassAmounts


@dataclass(slots=True)
class EpochRewards:
    """The reward side of a close; the close adds receipts, tree and files around it."""

    sessions: list[SessionCredit]  # empty when the accumulator was told not to keep them
    node_weights: dict[bytes, int]
    viewer_weights: dict[bytes, int]
    creator_weights: dict[bytes, int]
    # credited watch seconds per session after the viewer cap: (viewer, sessionId) -> s,
    # for the viewers that went through the cap rule (all of them via EpochAccumulator)
    session_watch: dict[tuple[bytes, bytes], int]
    allocations: dict[str, dict[bytes, int]]  # class -> account -> base units
    pools: PoolReport
    balances: dict[bytes, int]  # cumulative, every account with a positive balance

    def changed_balances(self) -> bool:
        return self.pools.allocated.total() > 0


def credit_row(row: SessionRow, segment_seconds: int) -> SessionCredit | None:
    """Deltas and new watermarks of one session (PROTOCOL 4), or None if no key is included.

    A delivery key is included iff its candidate is above its watermark (both counters >=,
    one >); its watermark then moves to the candidate componentwise (never down). The view
    key likewise, by its raw watchSeconds: whether a key is included depends on published
    watermarks alone. The watch credit is the clipped watch time above `credited`, a value
    of its own (PROTOCOL 4-5): a session watched past its delivered segments is included
    once, and credited more when later deliveries lift the clip.
    """
    viewer, session_id, content_id, keys, view_candidate, view_mark, credited = row
    deltas: dict[bytes, tuple[int, int]] = {}
    marks: dict[bytes, tuple[int, int]] = {}
    segments_cum = 0
    for node, cb, cs, wb, ws in keys:
        if cb >= wb and cs >= ws and (cb > wb or cs > ws):
            deltas[node] = (cb - wb, cs - ws)
            marks[node] = (cb, cs)
            segments_cum += cs
        else:
            segments_cum += ws
    view_included = view_candidate is not None and view_candidate > view_mark
    if not deltas and not view_included:
        return None
    watch_cum = view_mark if view_candidate is None else view_candidate
    clipped = min(watch_cum, segment_seconds * segments_cum)
    return SessionCredit(
        viewer,
        session_id,
        content_id,
        deltas,
        marks,
        view_included,
        view_candidate if view_candidate is not None and view_included else view_mark,
        credited if credited > clipped else clipped,
        clipped - credited if clipped > credited else 0,
        tuple((k[0], k[3], k[4]) for k in keys),
        view_mark,
        credited,
    )


def credit_session(session: SessionInput, segment_seconds: int) -> SessionCredit | None:
    """`credit_row` of one `SessionInput`."""
    return credit_row(session.as_row(), segment_seconds)


def settle_epoch(
    sessions: Iterable[SessionInput],
    creators: Mapping[bytes, bytes],
    previous_balances: Mapping[bytes, int],
    carried_in: ClassAmounts,
    params: RewardParams,
) -> EpochRewards:
    """`settle_rows` over `SessionInput` objects (small epochs, tests, the auditor's REPL)."""
    return settle_rows(
        (s.as_row() for s in sessions), creators, previous_balances, carried_in, params
    )


def settle_rows(
    rows: Iterable[SessionRow],
    creators: Mapping[bytes, bytes],
    previous_balances: Mapping[bytes, int],
    carried_in: ClassAmounts,
    params: RewardParams,
) -> EpochRewards:
    """Rewards of one epoch from its inputs, exactly as PROTOCOL 4-5 word them.

    `rows`: every non-quarantined session with a candidate (quarantined ones are left out
    by the caller: they earn nothing), each session once. `creators`: the registry
    snapshot, content id -> creator address. The result does not depend on the order of
    `rows`. The close streams its sessions through `EpochAccumulator` instead (the same
    code, without keeping every `SessionCredit`).
    """
    acc = EpochAccumulator(params.segment_seconds, keep_sessions=True)
    for row in rows:
        acc.add(row)
    return acc.finish(creators, previous_balances, carried_in, params)


class EpochAccumulator:
    """Credits sessions one at a time (PROTOCOL 4), then caps, pools and allocates (5).

    `add` returns each session's credit, so a caller streaming a million sessions can write
    its watermarks and published rows as it goes and keep only the per-viewer sums here.
    """

    __slots__ = ("_bytes_by_viewer", "_watch_by_viewer", "credits", "keep", "segment_seconds")

    def __init__(self, segment_seconds: int, *, keep_sessions: bool = False) -> None:
        self.segment_seconds = segment_seconds
        self.keep = keep_sessions
        self.credits: list[SessionCredit] = []
        # viewer -> node -> credited bytes (before the per-viewer cap)
        self._bytes_by_viewer: dict[bytes, dict[bytes, int]] = {}
        # viewer -> (contentId, sessionId) -> credited seconds (before the cap)
        self._watch_by_viewer: dict[bytes, dict[tuple[bytes, bytes], int]] = {}

    def add(self, row: SessionRow) -> SessionCredit | None:
        c = credit_row(row, self.segment_seconds)
        if c is None:
            return None
        if self.keep:
            self.credits.append(c)
        viewer = c.viewer
        if c.delivery_deltas:
            per_node = self._bytes_by_viewer.get(viewer)
            if per_node is None:
                per_node = self._bytes_by_viewer[viewer] = {}
            for node, (db, _ds) in c.delivery_deltas.items():
                if db:
                    per_node[node] = per_node.get(node, 0) + db
        if c.watch_credit:
            per_session = self._watch_by_viewer.get(viewer)
            if per_session is None:
                per_session = self._watch_by_viewer[viewer] = {}
            key = (c.content_id, c.session_id)
            if key in per_session:
                raise ValueError(f"session 0x{c.session_id.hex()} of 0x{viewer.hex()} given twice")
            per_session[key] = c.watch_credit
        return c

    def finish(
        self,
        creators: Mapping[bytes, bytes],
        previous_balances: Mapping[bytes, int],
        carried_in: ClassAmounts,
        params: RewardParams,
    ) -> EpochRewards:
        # Every viewer goes through the cap rule (it leaves viewers under the caps as they are).
        return settle_weights(
            EpochWeights(capped_bytes=self._bytes_by_viewer, capped_watch=self._watch_by_viewer),
            creators,
            previous_balances,
            carried_in,
            params,
            sessions=self.credits,
        )


@dataclass(slots=True)
class EpochWeights:
    """An epoch's credit, summed: what the pools are split by (PROTOCOL 5).

    `node`, `viewer`, `creator`: weights of viewers known to be within both caps, final.
    `capped_bytes` (viewer -> node -> bytes) and `capped_watch` (viewer -> (contentId,
    sessionId) -> seconds): viewers that may be above a cap, in full; `settle_weights` caps
    them and adds them in. The columnar close sums the many viewers under the caps itself
    and hands over only the few above them; `EpochAccumulator` hands over every viewer.
    """

    node: dict[bytes, int] = field(default_factory=dict)
    viewer: dict[bytes, int] = field(default_factory=dict)
    creator: dict[bytes, int] = field(default_factory=dict)
    capped_bytes: dict[bytes, dict[bytes, int]] = field(default_factory=dict)
    capped_watch: dict[bytes, dict[tuple[bytes, bytes], int]] = field(default_factory=dict)


def settle_weights(
    weights: EpochWeights,
    creators: Mapping[bytes, bytes],
    previous_balances: Mapping[bytes, int],
    carried_in: ClassAmounts,
    params: RewardParams,
    *,
    sessions: list[SessionCredit] | None = None,
) -> EpochRewards:
    """Per-viewer caps, creator shares, pools, allocation and balances (PROTOCOL 5)."""
    node_weights = dict(weights.node)
    cap_bytes = params.max_bytes_per_viewer
    for per_node in weights.capped_bytes.values():
        if sum(per_node.values()) > cap_bytes:
            per_node = allocate(cap_bytes, per_node)
        for node, b in per_node.items():
            if b:
                node_weights[node] = node_weights.get(node, 0) + b

    viewer_weights = dict(weights.viewer)
    creator_weights = dict(weights.creator)
    session_watch: dict[tuple[bytes, bytes], int] = {}
    cap_watch = params.max_watch_seconds_per_epoch
    for viewer, per_session in weights.capped_watch.items():
        if sum(per_session.values()) > cap_watch:
            per_session = allocate(cap_watch, per_session)
        total = 0
        for (content_id, session_id), seconds in per_session.items():
            if not seconds:
                continue
            total += seconds
            session_watch[(viewer, session_id)] = seconds
            creator = creators.get(content_id)
            if creator is not None and creator != viewer:
                creator_weights[creator] = creator_weights.get(creator, 0) + seconds
        if total:
            viewer_weights[viewer] = viewer_weights.get(viewer, 0) + total

    emitted = emitted_pools(params)
    by_class = {"node": node_weights, "viewer": viewer_weights, "creator": creator_weights}
    allocations: dict[str, dict[bytes, int]] = {}
    allocated: dict[str, int] = {}
    carried_out: dict[str, int] = {}
    for cls in CLASSES:
        pool = emitted.get(cls) + carried_in.get(cls)
        w = {a: x for a, x in by_class[cls].items() if x}
        if w:
            shares = allocate(pool, w)
            allocations[cls] = {a: v for a, v in shares.items() if v}
            allocated[cls] = pool
            carried_out[cls] = 0
        else:
            allocations[cls] = {}
            allocated[cls] = 0
            carried_out[cls] = pool

    balances = {a: v for a, v in previous_balances.items() if v}
    for cls in CLASSES:
        for account, amount in allocations[cls].items():
            balances[account] = balances.get(account, 0) + amount

    return EpochRewards(
        sessions=sessions if sessions is not None else [],
        node_weights=node_weights,
        viewer_weights=viewer_weights,
        creator_weights=creator_weights,
        session_watch=session_watch,
        allocations=allocations,
        pools=PoolReport(
            emitted=emitted,
            carried_in=carried_in,
            allocated=ClassAmounts(**allocated),
            carried_out=ClassAmounts(**carried_out),
        ),
        balances=balances,
    )

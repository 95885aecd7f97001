"""Reward rules of PROTOCOL sections 4 and 5: watermarks, deltas, caps, pools, allocation.

Pure and exact: integers in, integers out, no clock and no I/O. The epoch close and the
auditor both call `settle_epoch`; nothing else computes rewards.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

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


@dataclass(frozen=True, slots=True)
class SessionInput:
    """One non-quarantined session as the close sees it.

    `delivery_watermarks` / `view_watermark`: what earlier closes credited (missing = 0).
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


@dataclass(frozen=True, slots=True)
class SessionCredit:
    """What one credited session got this epoch (published, and fed to the next close)."""

    viewer: bytes
    session_id: bytes
    content_id: bytes
    # node -> (delta bytes, delta segments) for the included delivery keys
    delivery_deltas: dict[bytes, tuple[int, int]]
    # node -> new watermark, for the included delivery keys only
    delivery_watermarks: dict[bytes, tuple[int, int]]
    view_included: bool
    view_watermark: int  # after this close (the clipped watch time)
    watch_credit: int  # seconds before the per-viewer cap


@dataclass(frozen=True, slots=True)
class PoolReport:
    emitted: ClassAmounts
    carried_in: ClassAmounts
    allocated: ClassAmounts
    carried_out: ClassAmounts


@dataclass(slots=True)
class EpochRewards:
    """The reward side of a close; the close adds receipts, tree and files around it."""

    sessions: list[SessionCredit]
    node_weights: dict[bytes, int]
    viewer_weights: dict[bytes, int]
    creator_weights: dict[bytes, int]
    # credited watch seconds per session after the viewer cap: (viewer, sessionId) -> s
    session_watch: dict[tuple[bytes, bytes], int]
    allocations: dict[str, dict[bytes, int]]  # class -> account -> base units
    pools: PoolReport
    balances: dict[bytes, int]  # cumulative, every account with a positive balance

    def changed_balances(self) -> bool:
        return self.pools.allocated.total() > 0


def _above(candidate: tuple[int, int], mark: tuple[int, int]) -> bool:
    return (
        candidate[0] >= mark[0]
        and candidate[1] >= mark[1]
        and (candidate[0] > mark[0] or candidate[1] > mark[1])
    )


def credit_session(session: SessionInput, segment_seconds: int) -> SessionCredit | None:
    """Deltas and new watermarks of one session (PROTOCOL 4), or None if no key is included."""
    deltas: dict[bytes, tuple[int, int]] = {}
    marks: dict[bytes, tuple[int, int]] = {}
    for node, cand in session.delivery_candidates.items():
        mark = session.delivery_watermarks.get(node, (0, 0))
        if _above(cand, mark):
            new = (max(cand[0], mark[0]), max(cand[1], mark[1]))
            deltas[node] = (new[0] - mark[0], new[1] - mark[1])
            marks[node] = new
    view_mark = session.view_watermark
    view_included = session.view_candidate is not None and session.view_candidate > view_mark
    if not deltas and not view_included:
        return None
    segments_cum = 0
    for node, mark in session.delivery_watermarks.items():
        if node not in marks:
            segments_cum += mark[1]
    for mark in marks.values():
        segments_cum += mark[1]
    watch_cum = session.view_candidate if session.view_candidate is not None else view_mark
    clipped = min(watch_cum, segment_seconds * segments_cum)
    credit = max(0, clipped - view_mark)
    return SessionCredit(
        viewer=session.viewer,
        session_id=session.session_id,
        content_id=session.content_id,
        delivery_deltas=deltas,
        delivery_watermarks=marks,
        view_included=view_included,
        view_watermark=max(view_mark, clipped),
        watch_credit=credit,
    )


def settle_epoch(
    sessions: Iterable[SessionInput],
    creators: Mapping[bytes, bytes],
    previous_balances: Mapping[bytes, int],
    carried_in: ClassAmounts,
    params: RewardParams,
) -> EpochRewards:
    """Rewards of one epoch from its inputs, exactly as PROTOCOL 4-5 word them.

    `sessions`: every non-quarantined session with a candidate (quarantined ones are left
    out by the caller: they earn nothing). `creators`: the registry snapshot, content id
    -> creator address. The result does not depend on the order of `sessions`.
    """
    credits: list[SessionCredit] = []
    # viewer -> node -> credited bytes (before the per-viewer cap)
    bytes_by_viewer: dict[bytes, dict[bytes, int]] = {}
    # viewer -> (contentId, sessionId) -> credited seconds (before the cap)
    watch_by_viewer: dict[bytes, dict[tuple[bytes, bytes], int]] = {}
    for s in sessions:
        c = credit_session(s, params.segment_seconds)
        if c is None:
            continue
        credits.append(c)
        if c.delivery_deltas:
            per_node = bytes_by_viewer.setdefault(c.viewer, {})
            for node, (db, _ds) in c.delivery_deltas.items():
                if db:
                    per_node[node] = per_node.get(node, 0) + db
        if c.watch_credit:
            watch_by_viewer.setdefault(c.viewer, {})[(c.content_id, c.session_id)] = c.watch_credit

    node_weights: dict[bytes, int] = {}
    for per_node in bytes_by_viewer.values():
        if sum(per_node.values()) > params.max_bytes_per_viewer:
            per_node = allocate(params.max_bytes_per_viewer, per_node)
        for node, b in per_node.items():
            if b:
                node_weights[node] = node_weights.get(node, 0) + b

    viewer_weights: dict[bytes, int] = {}
    creator_weights: dict[bytes, int] = {}
    session_watch: dict[tuple[bytes, bytes], int] = {}
    for viewer, per_session in watch_by_viewer.items():
        if sum(per_session.values()) > params.max_watch_seconds_per_epoch:
            per_session = allocate(params.max_watch_seconds_per_epoch, per_session)
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
            viewer_weights[viewer] = total

    emitted = emitted_pools(params)
    weights = {"node": node_weights, "viewer": viewer_weights, "creator": creator_weights}
    allocations: dict[str, dict[bytes, int]] = {}
    allocated: dict[str, int] = {}
    carried_out: dict[str, int] = {}
    for cls in CLASSES:
        pool = emitted.get(cls) + carried_in.get(cls)
        w = weights[cls]
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
        sessions=credits,
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

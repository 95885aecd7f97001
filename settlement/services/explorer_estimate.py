"""The explorer's estimate of the open epoch: what the next close would pay each account,
PROTOCOL 4-5 run key by key on the stored rows it will read (the sessions touched since the
last close), under today's settings. Reads only; amounts are integers in base units."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from dataclasses import dataclass

from settlement.adapters.db.epochs import EpochStore
from settlement.adapters.db.explorer import ExplorerReads, NextCloseRows
from settlement.adapters.db.store import Store
from settlement.config import Settings
from settlement.domain.rewards import CLASSES, ClassAmounts, RewardParams, allocate, emitted_pools


@dataclass(frozen=True, slots=True)
class Estimate:
    """What the next close (of `epoch`) would pay, by class, were it to run now on what is
    stored, under today's settings. An estimate: receipts still to come, a quarantine or a
    registry change before the close move it."""

    epoch: int
    by_class: dict[str, int]  # classes with a positive amount only
    computed_at: int = 0  # unix seconds the stored receipts were read


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


@dataclass(frozen=True, slots=True)
class NextClose:
    """Every account's estimated pay of the next close, by class, as of `computed_at`."""

    epoch: int
    computed_at: int
    by_class: dict[str, dict[bytes, int]]


def next_close(store: Store, settings: Settings, now: int) -> NextClose:
    """What the close of the epoch after the last closed one would pay every account, from
    the receipts stored so far, under today's settings."""
    epochs = EpochStore(store)
    last = epochs.last_closed()
    stored = epochs.get(last) if last else None
    carried = stored.carried if stored is not None else ClassAmounts(0, 0, 0)
    weights = next_close_weights(
        ExplorerReads(store).next_close_rows(last + 1),
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
    return NextClose(
        last + 1,
        now,
        {
            cls: allocate(emitted.get(cls) + carried.get(cls), weights[cls]) if weights[cls] else {}
            for cls in CLASSES
        },
    )


class EstimateCache:
    """The next close's estimate for every account, kept `ttl` seconds (and dropped when an
    epoch closes): an account page then costs a lookup, not a pass over the open epoch's
    receipts."""

    def __init__(self, ttl: float = 60.0) -> None:
        self.ttl = ttl
        self._lock = threading.Lock()
        self._kept: tuple[int, float, NextClose] | None = None  # last closed, monotonic, value

    def get(self, store: Store, settings: Settings, now: int) -> NextClose:
        last = EpochStore(store).last_closed()
        with self._lock:
            kept = self._kept
        if kept is not None and kept[0] == last and time.monotonic() - kept[1] < self.ttl:
            return kept[2]
        fresh = next_close(store, settings, now)
        with self._lock:
            self._kept = (last, time.monotonic(), fresh)
        return fresh


def open_epoch_estimate(
    store: Store,
    settings: Settings,
    account: bytes,
    now: int | None = None,
    cache: EstimateCache | None = None,
) -> Estimate:
    """What the close of the epoch after the last closed one would pay `account`, by class,
    from the receipts stored so far (`Estimate`); through `cache` when given."""
    now = int(time.time()) if now is None else now
    found = (
        cache.get(store, settings, now) if cache is not None else next_close(store, settings, now)
    )
    by_class = {
        cls: amounts[account]
        for cls, amounts in found.by_class.items()
        if amounts.get(account, 0) > 0
    }
    return Estimate(found.epoch, by_class, found.computed_at)

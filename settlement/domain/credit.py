"""PROTOCOL 4's credit of one close, key by key, over columns (numpy).

The close reads its stored rows into columns (`Cols`), and `credit_epoch` works on all of
them at once: each key's candidate (its best row among the buckets `<= e`), its watermark,
whether it is included, each session's delivered segments and watch clip. `CloseCredit`
then gives the per-viewer, per-node and per-creator weights the caps and pools need
(`rewards.settle_weights` splits them), the watermark rows the close writes and the rows
it publishes, in their files' order. Pure: arrays in, arrays out; the close and the
auditor run this same code, and tests hold it to `rewards.settle_rows`, the rules stated
one session at a time.

The columns and their keyed operations (keys as `S` values, exact group sums, lookups) are
in `domain.columns`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import numpy as np

from settlement.domain.columns import (
    U64,
    Cols,
    as_bytes,
    best_per_key,
    group_sum,
    key,
    lookup,
    max_per_key,
    starts_of,
)

_MAX64 = 2**64 - 1  # also the quarantined_at of a session that is not quarantined


@dataclass(slots=True)
class DeliveryKeys:
    """The candidate of every delivery key of a live session, in key order."""

    row: np.ndarray  # the candidate's row in the deliveries table
    session: np.ndarray  # its session's row in the sessions table
    viewer: np.ndarray
    node: np.ndarray
    bytes_served: np.ndarray  # the candidate's counters
    segments: np.ndarray
    mark_bytes: np.ndarray  # the key's watermark before this close
    mark_segments: np.ndarray
    included: np.ndarray
    session_included: np.ndarray  # its session has an included key (of either kind)


@dataclass(slots=True)
class ViewKeys:
    """The view candidate of every live session with a view receipt, in key order."""

    row: np.ndarray  # the candidate's row in the views table
    session: np.ndarray
    mark_watch: np.ndarray  # the view watermark before this close (raw watchSeconds)
    included: np.ndarray


@dataclass(slots=True)
class CreditedSessions:
    """The sessions with an included key, in key order: what they are credited."""

    viewer: np.ndarray
    session_id: np.ndarray
    content_id: np.ndarray
    mark_watch: np.ndarray  # the view watermark before this close (raw watchSeconds)
    mark_credited: np.ndarray  # the seconds credited before this close
    view_included: np.ndarray  # the view key is included
    watch_after: np.ndarray  # the view watermark after this close
    clipped: np.ndarray  # watch time clipped by the delivered segments (PROTOCOL 4)
    credit: np.ndarray  # the seconds this close credits: clipped above mark_credited

    def __len__(self) -> int:
        return len(self.viewer)


@dataclass(slots=True)
class CloseCredit:
    """One close's credit: its delivery keys, view keys and credited sessions. The stored
    rows' wide columns stay in the tables read (`deliveries`, `views`, `sessions`)."""

    delivery: DeliveryKeys
    view: ViewKeys
    credited: CreditedSessions
    deliveries: Cols
    views: Cols
    sessions: Cols

    def drop_published(self) -> None:
        """Let go of the stored columns only the published files need (the wide ones:
        signatures, times, ids): a close that has handed them to the process writing the
        files keeps just what the weights and watermarks read."""
        self.deliveries = Cols()
        self.views = Cols()
        self.sessions = Cols(session_id=self.sessions["session_id"])

    # -- the weights ----------------------------------------------------------------------

    def weights(
        self, max_bytes_per_viewer: int, max_watch_seconds: int, creators: Mapping[bytes, bytes]
    ) -> CreditWeights:
        """Node, viewer and creator weights of the viewers under each cap; the viewers above
        it in detail (bytes by node, seconds by (contentId, sessionId)) for the cap rule."""
        # The two sides are independent: a caller may run them in two threads (numpy sorts
        # and gathers without the GIL), as the close does.
        node, capped_bytes = self.byte_weights(max_bytes_per_viewer)
        viewer, creator, capped_watch = self.watch_weights(max_watch_seconds, creators)
        return CreditWeights(node, viewer, creator, capped_bytes, capped_watch)

    def byte_weights(
        self, max_bytes_per_viewer: int
    ) -> tuple[dict[bytes, int], dict[bytes, dict[bytes, int]]]:
        """Node weights of the viewers under the bytes cap; the others' bytes by node."""
        # Positions, then only the columns each sum needs: the tables are a million rows.
        node: dict[bytes, int] = {}
        capped_bytes: dict[bytes, dict[bytes, int]] = {}
        d = self.delivery
        delta = d.bytes_served - d.mark_bytes  # wraps where not included: masked next
        at = np.flatnonzero(d.included & (d.bytes_served > d.mark_bytes))
        delta = delta[at]
        if len(at):
            viewers = d.viewer[at]
            first = starts_of(key(viewers))
            over = _above(group_sum(delta, first), max_bytes_per_viewer)[np.cumsum(first) - 1]
            node = _sums(d.node[at[~over]], delta[~over])
            if over.any():
                top = at[over]
                for (v, n), b in _sums2(d.viewer[top], d.node[top], delta[over]):
                    capped_bytes.setdefault(v, {})[n] = b
            del viewers, first, over
        return node, capped_bytes

    def watch_weights(
        self, max_watch_seconds: int, creators: Mapping[bytes, bytes]
    ) -> tuple[dict[bytes, int], dict[bytes, int], dict[bytes, dict[tuple[bytes, bytes], int]]]:
        """Viewer and creator weights of the viewers under the watch cap; the others'
        seconds by (contentId, sessionId)."""
        viewer: dict[bytes, int] = {}
        creator: dict[bytes, int] = {}
        capped_watch: dict[bytes, dict[tuple[bytes, bytes], int]] = {}
        c = self.credited
        at = np.flatnonzero(c.credit > 0)
        if len(at):
            viewers = c.viewer[at]
            credit = c.credit[at]
            first = starts_of(key(viewers))
            per_viewer = group_sum(credit, first)
            over_v = _above(per_viewer, max_watch_seconds)
            viewer = {
                a: int(t)
                for a, t, o in zip(as_bytes(viewers[first]), per_viewer, over_v, strict=True)
                if not o
            }
            over = over_v[np.cumsum(first) - 1]
            under = at[~over]
            # The creator of each session's content, where the snapshot has one other than the
            # viewer: PROTOCOL 5 gives the others' seconds no weight.
            who, found = _creator_of(c.content_id[under], creators)
            paid = found & ~(who == viewers[~over]).all(axis=1)
            creator = _sums(who[paid], credit[~over][paid])
            if over.any():
                top = at[over]
                for v, cid, sid, x in zip(
                    as_bytes(c.viewer[top]),
                    as_bytes(c.content_id[top]),
                    as_bytes(c.session_id[top]),
                    c.credit[top].tolist(),
                    strict=True,
                ):
                    capped_watch.setdefault(v, {})[(cid, sid)] = x
        return viewer, creator, capped_watch

    # -- what the close writes and publishes ----------------------------------------------

    def delivery_watermarks(self) -> Rows:
        """The delivery keys this close moves, to their candidate (viewer, session_id, node,
        bytes_served, segments)."""
        d = self.delivery
        return self._delivery_keys(d.included, d.bytes_served, d.segments)

    def view_watermarks(self) -> Rows:
        """The sessions whose view watermark or credited seconds move, with both values after
        this close (viewer, session_id, watch_seconds: the raw watermark, credited)."""
        c = self.credited
        grows = c.clipped > c.mark_credited
        at = np.flatnonzero(c.view_included | grows)

        def gather(part: slice) -> Cols:
            rows = at[part]
            return Cols(
                viewer=c.viewer[rows],
                session_id=c.session_id[rows],
                watch_seconds=c.watch_after[rows],
                credited=np.where(grows[rows], c.clipped[rows], c.mark_credited[rows]),
            )

        return Rows(len(at), gather)

    def published_deliveries(self) -> Rows:
        """The included delivery receipts: the stored columns and their session's."""
        d = self.delivery
        return self._receipts(d.included, d.row, d.session, self.deliveries)

    def published_views(self) -> Rows:
        """The included view receipts: the stored columns and their session's."""
        v = self.view
        return self._receipts(v.included, v.row, v.session, self.views)

    def _receipts(
        self, included: np.ndarray, row: np.ndarray, session: np.ndarray, table: Cols
    ) -> Rows:
        at = np.flatnonzero(included)
        rows, sess = row[at], session[at]
        sessions = self.sessions

        def gather(part: slice) -> Cols:
            s = sess[part]
            return table.take(rows[part]).with_(
                content_id=sessions["content_id"][s], started_at=sessions["started_at"][s]
            )

        return Rows(len(at), gather)

    def published_delivery_marks(self) -> Rows:
        """The previous watermark of every delivery key of a session with an included key,
        zeros included (PROTOCOL 6): viewer, session_id, node, bytes_served, segments."""
        d = self.delivery
        return self._delivery_keys(d.session_included, d.mark_bytes, d.mark_segments)

    def _delivery_keys(
        self, mask: np.ndarray, bytes_served: np.ndarray, segments: np.ndarray
    ) -> Rows:
        """The delivery keys where `mask`: viewer, session_id, node and the two counters."""
        d = self.delivery
        at = np.flatnonzero(mask)
        session_id = self.sessions["session_id"]

        def gather(part: slice) -> Cols:
            rows = at[part]
            return Cols(
                viewer=d.viewer[rows],
                session_id=session_id[d.session[rows]],
                node=d.node[rows],
                bytes_served=bytes_served[rows],
                segments=segments[rows],
            )

        return Rows(len(at), gather)

    def published_view_marks(self) -> Rows:
        """The previous view watermark and credited seconds of every session with an
        included key, zeros included (PROTOCOL 6): viewer, session_id, watch_seconds,
        credited."""
        c = self.credited

        def gather(part: slice) -> Cols:
            return Cols(
                viewer=c.viewer[part],
                session_id=c.session_id[part],
                watch_seconds=c.mark_watch[part],
                credited=c.mark_credited[part],
            )

        return Rows(len(c), gather)


@dataclass(frozen=True, slots=True)
class Rows:
    """The rows of a published file, gathered a slice at a time (so that a million rows'
    signatures are never all copied at once)."""

    n: int
    gather: Callable[[slice], Cols]

    def chunks(self, size: int) -> Iterator[Cols]:
        for lo in range(0, self.n, size):
            yield self.gather(slice(lo, lo + size))

    def all(self) -> Cols:
        return self.gather(slice(None))


@dataclass(slots=True)
class CreditWeights:
    node: dict[bytes, int]
    viewer: dict[bytes, int]
    creator: dict[bytes, int]
    capped_bytes: dict[bytes, dict[bytes, int]]
    capped_watch: dict[bytes, dict[tuple[bytes, bytes], int]]


def _above(sums: np.ndarray, cap: int) -> np.ndarray:
    if sums.dtype == object:
        return np.array([s > cap for s in sums], bool)
    return sums > U64(min(cap, _MAX64)) if cap < _MAX64 else np.zeros(len(sums), bool)


def _creator_of(
    content_ids: np.ndarray, creators: Mapping[bytes, bytes]
) -> tuple[np.ndarray, np.ndarray]:
    """(creator as (n, 20) uint8, found) of each content id in the registry snapshot."""
    width = content_ids.shape[1]
    known = sorted((c, k) for c, k in creators.items() if len(c) == width and len(k) == 20)
    if not known:
        return np.zeros((len(content_ids), 20), np.uint8), np.zeros(len(content_ids), bool)
    ids = np.frombuffer(b"".join(c for c, _ in known), np.uint8).reshape(-1, width)
    who = np.frombuffer(b"".join(k for _, k in known), np.uint8).reshape(-1, 20)
    at, found = lookup(key(ids), key(content_ids))
    return who[at], found


def _sums(keys: np.ndarray, values: np.ndarray) -> dict[bytes, int]:
    """{key bytes: exact sum of `values`} over an (n, width) key matrix."""
    if len(values) == 0:
        return {}
    order = np.argsort(key(keys), kind="stable")
    k = keys[order]
    first = starts_of(key(k))
    totals = group_sum(values[order], first)
    return dict(zip(as_bytes(k[first]), (int(t) for t in totals), strict=True))


def _sums2(
    a: np.ndarray, b: np.ndarray, values: np.ndarray
) -> list[tuple[tuple[bytes, bytes], int]]:
    width = a.shape[1]
    joined = _sums(np.hstack((a, b)), values)
    return [((k[:width], k[width:]), s) for k, s in joined.items()]


def credit_epoch(
    deliveries: Cols,
    views: Cols,
    sessions: Cols,
    delivery_marks: Cols,
    view_marks: Cols,
    *,
    now: int,
    segment_seconds: int,
) -> CloseCredit:
    """PROTOCOL 4 over the stored rows a close reads.

    `deliveries` / `views`: the stored best rows of buckets `<= e` (viewer, session_id,
    [node,] bucket, bytes_served and segments / watch_seconds, issued_at, signature);
    `sessions`: viewer, session_id, content_id, started_at, quarantined_at (2**64-1: not
    quarantined); `*_marks`: rows of earlier closes' watermarks (several per key allowed:
    watermarks never move down, the current one is the maximum), the view marks with the
    raw watch_seconds and the credited seconds, each its own maximum. Sessions not in
    `sessions`, or quarantined before `now`, credit nothing.

    The steps below are public so that the close can run the sessions, the delivery side
    and the view side in threads of their own as their tables arrive; this is the same
    work in one thread.
    """
    live = live_sessions(sessions, now)
    d_side = delivery_candidates(delivery_keys(deliveries, delivery_marks), deliveries, live[1])
    v_side = view_candidates(view_keys(views, view_marks), views, live[1])
    return assemble(deliveries, views, sessions, live, d_side, v_side, segment_seconds)


def assemble(
    deliveries: Cols,
    views: Cols,
    sessions: Cols,
    live: tuple[np.ndarray, np.ndarray],
    d_side: tuple[np.ndarray, ...],
    v_side: tuple[np.ndarray, ...],
    segment_seconds: int,
) -> CloseCredit:
    """The close's credit from the steps' results: per session, delivered segments after
    this close and the watch clip; the rows of `CloseCredit`."""
    s_rows, _ = live
    d_rows, at, d_wb, d_ws, cb, cs, d_inc = d_side
    v_rows, v_at, v_vw, v_cr, vc_rows, v_inc = v_side
    # Per session (index into s_rows): delivered segments after this close, and the clip.
    n = len(s_rows)
    s_inc = np.zeros(n, bool)  # the session has an included key
    segs: np.ndarray = np.zeros(n, U64)
    if len(d_rows):
        first = starts_of(at)
        s_inc[at[d_inc]] = True
        per = group_sum(np.where(d_inc, cs, d_ws), first)
        if per.dtype == object:
            segs = segs.astype(object)
        segs[at[first]] = per
    has_view = np.zeros(n, bool)
    view_inc = np.zeros(n, bool)
    vc = np.zeros(n, U64)
    vw = np.zeros(n, U64)
    cr = np.zeros(n, U64)
    has_view[v_at] = True
    view_inc[v_at] = v_inc
    vc[v_at] = vc_rows
    vw[v_at] = v_vw
    cr[v_at] = v_cr
    s_inc[v_at[v_inc]] = True
    # watch_cum: the view candidate, else the view watermark (0: the session has no view row).
    watch = np.where(has_view, vc, vw)
    c_at = np.flatnonzero(s_inc)
    clipped = _clip(watch[c_at], segs[c_at], segment_seconds)
    c_vw, c_cr, c_vinc = vw[c_at], cr[c_at], view_inc[c_at]
    c_rows = s_rows[c_at]
    credited = CreditedSessions(
        viewer=sessions["viewer"][c_rows],
        session_id=sessions["session_id"][c_rows],
        content_id=sessions["content_id"][c_rows],
        mark_watch=c_vw,
        mark_credited=c_cr,
        view_included=c_vinc,
        watch_after=np.where(c_vinc, vc[c_at], c_vw),
        clipped=clipped,
        credit=np.where(clipped > c_cr, clipped - c_cr, U64(0)),
    )
    delivery = DeliveryKeys(
        row=d_rows,
        session=s_rows[at],
        viewer=deliveries["viewer"][d_rows],
        node=deliveries["node"][d_rows],
        bytes_served=cb,
        segments=cs,
        mark_bytes=d_wb,
        mark_segments=d_ws,
        included=d_inc,
        session_included=s_inc[at],
    )
    view = ViewKeys(row=v_rows, session=s_rows[v_at], mark_watch=v_vw, included=v_inc)
    return CloseCredit(delivery, view, credited, deliveries, views, sessions)


def live_sessions(sessions: Cols, now: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows of the sessions not quarantined before `now`, their keys), in key order."""
    live_s = np.flatnonzero(sessions["quarantined_at"] >= U64(min(now, _MAX64)))
    skeys = key(sessions["viewer"][live_s], sessions["session_id"][live_s])
    s_order = np.argsort(skeys, kind="stable")
    return live_s[s_order], skeys[s_order]


def delivery_keys(deliveries: Cols, marks: Cols) -> tuple[np.ndarray, ...]:
    """The first half of `delivery_candidates`, before the live sessions are needed: the
    best row of each delivery key (the highest counters, a tie to the earliest bucket), its
    key, and the watermark keys with their maxima."""
    dkeys = key(deliveries["viewer"], deliveries["session_id"], deliveries["node"])
    best = best_per_key(
        dkeys, (deliveries["bucket"], ~deliveries["segments"], ~deliveries["bytes_served"])
    )
    dkeys = dkeys[best]
    mkeys, wb, ws = max_per_key(
        key(marks["viewer"], marks["session_id"], marks["node"]),
        marks["bytes_served"],
        marks["segments"],
    )
    return best, dkeys, mkeys, wb, ws


def delivery_candidates(
    keyed: tuple[np.ndarray, ...], deliveries: Cols, skeys: np.ndarray
) -> tuple[np.ndarray, ...]:
    """Per delivery key of a live session (`skeys`: the live sessions' keys, sorted), in key
    order: its candidate's row, its session (index into the live sessions), watermark,
    counters and whether it is included. The wide columns (signature...) stay where they
    are: the row points at them."""
    best, dkeys, mkeys, wb, ws = keyed
    at, found = lookup(skeys, _prefix(dkeys, 52))
    rows, dkeys, at = best[found], dkeys[found], at[found]
    del best, found
    w, has = lookup(mkeys, dkeys)
    del dkeys, mkeys
    d_wb = np.where(has, wb[w] if len(wb) else U64(0), U64(0))
    d_ws = np.where(has, ws[w] if len(ws) else U64(0), U64(0))
    cb, cs = deliveries["bytes_served"][rows], deliveries["segments"][rows]
    inc = (cb >= d_wb) & (cs >= d_ws) & ((cb > d_wb) | (cs > d_ws))
    return rows, at, d_wb, d_ws, cb, cs, inc


def view_keys(views: Cols, marks: Cols) -> tuple[np.ndarray, ...]:
    """The first half of `view_candidates`: the best row of each view key (the most
    seconds, a tie to the earliest bucket), its key, the watermark keys and their maxima."""
    vkeys = key(views["viewer"], views["session_id"])
    best = best_per_key(vkeys, (views["bucket"], ~views["watch_seconds"]))
    vkeys = vkeys[best]
    mkeys, vwm, crm = max_per_key(
        key(marks["viewer"], marks["session_id"]), marks["watch_seconds"], marks["credited"]
    )
    return best, vkeys, mkeys, vwm, crm


def view_candidates(
    keyed: tuple[np.ndarray, ...], views: Cols, skeys: np.ndarray
) -> tuple[np.ndarray, ...]:
    """Per live session with a view receipt, in key order: its candidate's row, its session,
    view watermark (raw watch seconds), credited seconds, the candidate's watch seconds and
    whether it is included."""
    best, vkeys, mkeys, vwm, crm = keyed
    at, found = lookup(skeys, vkeys)
    rows, vkeys, at = best[found], vkeys[found], at[found]
    w, has = lookup(mkeys, vkeys)
    del vkeys, mkeys
    vw = np.where(has, vwm[w] if len(vwm) else U64(0), U64(0))
    cr = np.where(has, crm[w] if len(crm) else U64(0), U64(0))
    vc = views["watch_seconds"][rows]
    return rows, at, vw, cr, vc, vc > vw


def _prefix(keys: np.ndarray, width: int) -> np.ndarray:
    """The first `width` bytes of each `S` key, as keys."""
    n = len(keys)
    return key(keys.view(np.uint8).reshape(n, keys.dtype.itemsize)[:, :width])


def _clip(watch: np.ndarray, segs: np.ndarray, segment_seconds: int) -> np.ndarray:
    """min(watch, segment_seconds * segs), exact (uint64 watch seconds)."""
    if segs.dtype == object:
        return np.array(
            [min(int(w), segment_seconds * int(g)) for w, g in zip(watch, segs, strict=True)],
            dtype=U64,
        )
    if segment_seconds == 0:
        return np.zeros(len(watch), U64)
    seg = U64(segment_seconds)
    # Where segs * seg would pass the watch time (or 64 bits), the watch time is the minimum.
    over = segs > watch // seg
    return np.where(over, watch, segs * seg)

"""The explorer's reads: SQL over tables other rooms write (watermarks, allocations, balances,
rejection counts, registrations), for the public pages and their JSON API. Read-only."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from settlement.adapters.db.store import Store
from settlement.adapters.db.tables import dec
from settlement.domain.registration import Registration


@dataclass(frozen=True, slots=True)
class KeyMove:
    """A delivery key moved by the close of `epoch`: its bytes above the watermark before."""

    epoch: int
    viewer: bytes
    node: bytes
    delta_bytes: int


class ExplorerReads:
    """Reads over one store's tables, each in its own read transaction."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def _run(self, fn: Any) -> Any:
        return self.store._run(fn, write=False)

    def _q(self, sql: str) -> str:
        return self.store._q(sql)

    # -- deliveries -------------------------------------------------------------------------

    def delivery_moves(self, epoch: int) -> Iterator[KeyMove]:
        """The delivery keys the close of `epoch` moved, from the stored watermark rows (one
        per key and close that included it): each key's bytes above its row before. Sessions
        pruned by retention have no rows left."""

        def fn(cur: Any) -> list[tuple[Any, ...]]:
            # The watermark table has no index (see tables.py): one pass over it, the keys of
            # this epoch joined to their earlier rows.
            cur.execute(
                self._q(
                    "SELECT w.viewer, w.session_id, w.node, w.epoch, w.bytes_served "
                    "FROM delivery_watermark w JOIN (SELECT DISTINCT viewer, session_id, node "
                    "FROM delivery_watermark WHERE epoch = %s) m ON w.viewer = m.viewer AND "
                    "w.session_id = m.session_id AND w.node = m.node WHERE w.epoch <= %s "
                    "ORDER BY w.viewer, w.session_id, w.node, w.epoch"
                ),
                (epoch, epoch),
            )
            return list(cur.fetchall())

        previous: tuple[bytes, bytes, bytes] | None = None
        mark = 0
        for viewer, session_id, node, e, stored in self._run(fn):
            k = (bytes(viewer), bytes(session_id), bytes(node))
            served = dec(stored)
            if k != previous:
                previous, mark = k, 0
            if e == epoch:
                yield KeyMove(epoch, k[0], k[2], max(served - mark, 0))
            mark = max(mark, served)

    # -- money ------------------------------------------------------------------------------

    def allocations_of(self, account: bytes) -> list[tuple[int, str, int]]:
        """(epoch, class, amount) of every allocation to `account`, newest epoch first."""

        def fn(cur: Any) -> list[tuple[int, str, int]]:
            cur.execute(
                self._q(
                    'SELECT epoch, "class", amount FROM allocation WHERE account = %s '
                    'ORDER BY epoch DESC, "class"'
                ),
                (account,),
            )
            return [(int(e), str(k), int(a)) for e, k, a in cur.fetchall()]

        return list(self._run(fn))

    def epoch_class_amounts(self, epoch: int, cls: str) -> list[tuple[bytes, int]]:
        """(account, amount) of one class's allocations in one epoch."""

        def fn(cur: Any) -> list[tuple[bytes, int]]:
            cur.execute(
                self._q('SELECT account, amount FROM allocation WHERE epoch = %s AND "class" = %s'),
                (epoch, cls),
            )
            return [(bytes(a), int(v)) for a, v in cur.fetchall()]

        return list(self._run(fn))

    def latest_balances(self) -> dict[bytes, tuple[int, int, int]]:
        """account -> cumulative (node, viewer, creator) after the last close that paid it."""

        def fn(cur: Any) -> dict[bytes, tuple[int, int, int]]:
            cur.execute("SELECT account, epoch, node, viewer, creator FROM balance")
            best: dict[bytes, tuple[int, tuple[int, int, int]]] = {}
            for account, epoch, n, v, c in cur.fetchall():
                a = bytes(account)
                if a not in best or best[a][0] < epoch:
                    best[a] = (int(epoch), (int(n), int(v), int(c)))
            return {a: amounts for a, (_, amounts) in best.items()}

        return dict(self._run(fn))

    # -- rejections and registration --------------------------------------------------------

    def rejections_of(self, node: bytes) -> list[tuple[str, int, int]]:
        """(reason, epoch, count) of the rejection log's counts under `node` (epoch 0: no
        epoch, the receipt was outside the time window)."""

        def fn(cur: Any) -> list[tuple[str, int, int]]:
            cur.execute(
                self._q("SELECT reason, epoch, count FROM rejection_count WHERE node = %s"),
                (node,),
            )
            return [(str(r), int(e), int(c)) for r, e, c in cur.fetchall()]

        return list(self._run(fn))

    def node(self, address: bytes) -> tuple[str, bool] | None:
        """(label, active) of a registered node; None when it is not in the registry."""

        def fn(cur: Any) -> tuple[str, bool] | None:
            cur.execute(
                self._q("SELECT label, active FROM registry_node WHERE address = %s"), (address,)
            )
            row = cur.fetchone()
            return None if row is None else (str(row[0]), bool(row[1]))

        result: tuple[str, bool] | None = self._run(fn)
        return result

    def latest_registration(self, node: bytes) -> Registration | None:
        """The node's newest signed registration request and its decision, if any."""

        def fn(cur: Any) -> Registration | None:
            cur.execute(
                self._q(
                    "SELECT id, node, label, issued_at, signature, status, requested_at, "
                    "decided_at FROM node_registration WHERE node = %s ORDER BY id DESC LIMIT 1"
                ),
                (node,),
            )
            row = cur.fetchone()
            if row is None:
                return None
            i, n, label, issued, sig, status, requested, decided = row
            return Registration(
                int(i),
                bytes(n),
                str(label),
                dec(issued),
                bytes(sig),
                str(status),
                dec(requested),
                None if decided is None else dec(decided),
            )

        result: Registration | None = self._run(fn)
        return result

    # -- what the next close will read ------------------------------------------------------

    def next_close_rows(self, epoch: int) -> NextCloseRows:
        """The stored rows the close of `epoch` will credit from, as far as stored now: the
        sessions touched since the last close (session_touch, buckets <= epoch; no other
        session has a key above its watermarks), their best receipts of buckets <= epoch,
        their watermarks (maxima) and the content registry. One read transaction."""
        touched = "(SELECT DISTINCT viewer, session_id FROM session_touch WHERE bucket <= %s) t"
        on = "x.viewer = t.viewer AND x.session_id = t.session_id"

        def fn(cur: Any) -> NextCloseRows:
            def rows(sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
                cur.execute(self._q(sql), params)
                return list(cur.fetchall())

            sessions = [
                (bytes(v), bytes(s), bytes(c), None if q is None else dec(q))
                for v, s, c, q in rows(
                    "SELECT x.viewer, x.session_id, x.content_id, x.quarantined_at FROM "
                    f"receipt_session x JOIN {touched} ON {on}",
                    (epoch,),
                )
            ]
            deliveries = [
                (bytes(v), bytes(s), bytes(n), int(b), dec(by), int(sg))
                for v, s, n, b, by, sg in rows(
                    "SELECT x.viewer, x.session_id, x.node, x.bucket, x.bytes_served, "
                    f"x.segments_served FROM delivery_best x JOIN {touched} ON {on} "
                    "WHERE x.bucket <= %s",
                    (epoch, epoch),
                )
            ]
            views = [
                (bytes(v), bytes(s), int(b), int(w))
                for v, s, b, w in rows(
                    "SELECT x.viewer, x.session_id, x.bucket, x.watch_seconds FROM view_best x "
                    f"JOIN {touched} ON {on} WHERE x.bucket <= %s",
                    (epoch, epoch),
                )
            ]
            delivery_marks = {
                (bytes(v), bytes(s), bytes(n)): (dec(by), int(sg))
                for v, s, n, by, sg in rows(
                    "SELECT x.viewer, x.session_id, x.node, MAX(x.bytes_served), "
                    f"MAX(x.segments_served) FROM delivery_watermark x JOIN {touched} ON {on} "
                    "GROUP BY x.viewer, x.session_id, x.node",
                    (epoch,),
                )
            }
            view_marks = {
                (bytes(v), bytes(s)): (int(w), int(c))
                for v, s, w, c in rows(
                    "SELECT x.viewer, x.session_id, MAX(x.watch_seconds), MAX(x.credited) "
                    f"FROM view_watermark x JOIN {touched} ON {on} "
                    "GROUP BY x.viewer, x.session_id",
                    (epoch,),
                )
            }
            cur.execute("SELECT content_id, creator FROM registry_content")
            creators = {bytes(c): bytes(a) for c, a in cur.fetchall()}
            return NextCloseRows(sessions, deliveries, views, delivery_marks, view_marks, creators)

        result: NextCloseRows = self._run(fn)
        return result


@dataclass(frozen=True, slots=True)
class NextCloseRows:
    sessions: list[tuple[bytes, bytes, bytes, int | None]]  # viewer, sid, content, quarantined
    deliveries: list[tuple[bytes, bytes, bytes, int, int, int]]  # v, sid, node, bucket, b, segs
    views: list[tuple[bytes, bytes, int, int]]  # viewer, sid, bucket, watch seconds
    delivery_marks: dict[tuple[bytes, bytes, bytes], tuple[int, int]]  # bytes, segments
    view_marks: dict[tuple[bytes, bytes], tuple[int, int]]  # watch seconds, credited
    creators: dict[bytes, bytes]  # contentId -> creator

"""The explorer's reads: SQL over tables other rooms write (watermarks, allocations, balances,
rejection counts, registrations), for the public pages and their JSON API. Read-only."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from settlement.adapters.db.store import Store
from settlement.adapters.db.tables import dec
from settlement.domain.registration import Registration


@dataclass(slots=True)
class Moved:
    """Delivery keys of one (viewer, node) a close included, and their bytes above the
    watermarks before it."""

    keys: int = 0
    bytes: int = 0


class ExplorerReads:
    """Reads over one store's tables, each in its own read transaction."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def _run(self, fn: Any) -> Any:
        return self.store._run(fn, write=False)

    def _q(self, sql: str) -> str:
        return self.store._q(sql)

    # -- deliveries -------------------------------------------------------------------------

    def delivery_moves(
        self, epochs: Collection[int]
    ) -> dict[int, dict[tuple[bytes, bytes], Moved]]:
        """What the closes of `epochs` moved, by epoch and (viewer, node): the delivery keys
        included and their bytes above the watermarks before. From the stored watermark rows
        (one per key and close that included it): each row's bytes minus the key's row before.
        One ordered pass over the rows up to the latest epoch asked, read in chunks; sessions
        pruned by retention have no rows left."""
        wanted = frozenset(epochs)
        out: dict[int, dict[tuple[bytes, bytes], Moved]] = {e: {} for e in wanted}
        if not wanted:
            return out

        def fn(cur: Any) -> None:
            cur.execute(
                self._q(
                    "SELECT viewer, session_id, node, epoch, bytes_served FROM delivery_watermark "
                    "WHERE epoch <= %s ORDER BY viewer, session_id, node, epoch"
                ),
                (max(wanted),),
            )
            previous: tuple[bytes, bytes, bytes] | None = None
            mark = 0
            while chunk := cur.fetchmany(10_000):
                for viewer, session_id, node, epoch, stored in chunk:
                    k = (bytes(viewer), bytes(session_id), bytes(node))
                    served = dec(stored)
                    if k != previous:
                        previous, mark = k, 0
                    if epoch in wanted:
                        moved = out[epoch].setdefault((k[0], k[2]), Moved())
                        moved.keys += 1
                        moved.bytes += max(served - mark, 0)
                    mark = max(mark, served)

        self._run(fn)
        return out

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

    def top(self, cls: str, epoch: int | None, limit: int) -> tuple[list[tuple[bytes, int]], int]:
        """The `limit` largest positive amounts of class `cls` (node, viewer or creator), ties
        by account ascending, and how many accounts have one: in one epoch's allocations, or
        (epoch None) in every account's latest balance. Sorted by the database: uint256 as
        decimal text without leading zeros orders as (length, text)."""
        if cls not in ("node", "viewer", "creator"):
            raise ValueError(f"no class {cls!r}")
        text = "x.amount" if epoch is not None else f"x.{cls}"
        if self.store.dialect == "postgresql":
            text += ' COLLATE "C"'
        if epoch is not None:
            where = "FROM allocation x WHERE x.epoch = %s AND x.\"class\" = %s AND x.amount <> '0'"
            params: tuple[Any, ...] = (epoch, cls)
        else:
            where = (
                "FROM balance x WHERE x.epoch = (SELECT MAX(y.epoch) FROM balance y "
                f"WHERE y.account = x.account) AND x.{cls} <> '0'"
            )
            params = ()

        def fn(cur: Any) -> tuple[list[tuple[bytes, int]], int]:
            cur.execute(
                self._q(
                    f"SELECT x.account, {text} {where} "
                    f"ORDER BY length({text}) DESC, {text} DESC, x.account LIMIT %s"
                ),
                (*params, limit),
            )
            rows = [(bytes(a), int(v)) for a, v in cur.fetchall()]
            cur.execute(self._q(f"SELECT COUNT(*) {where}"), params)
            return rows, int(cur.fetchone()[0])

        result: tuple[list[tuple[bytes, int]], int] = self._run(fn)
        return result

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

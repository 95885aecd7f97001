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

"""The registries and node registration requests: their queries, a part of every Store."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from settlement.adapters.db.access import AdminEntry
from settlement.adapters.db.tables import dec, enc
from settlement.domain.ingest import RegistrySnapshot
from settlement.domain.registration import Registration


class RegisteredNode(NamedTuple):
    address: bytes
    label: str
    active: bool


class RegistryQueries:
    """Store methods over the registry tables (SQL text through the Store's transactions)."""

    def _q(self, sql: str) -> str:
        raise NotImplementedError  # Store's

    def _run(self, fn: Callable[[Any], Any], write: bool = True) -> Any:
        raise NotImplementedError  # Store's

    def _audit(self, cur: Any, entry: AdminEntry | None) -> None:
        raise NotImplementedError  # AccessQueries'

    def _lock_node(self, cur: Any, node: bytes) -> None:
        """Serialize registration requests of one node (PostgreSQL; SQLite's writer is one)."""

    # -- registries ----------------------------------------------------------------------

    def _bump(self, cur: Any) -> None:
        cur.execute(
            "INSERT INTO registry_state (id, version) VALUES (1, 1) "
            "ON CONFLICT (id) DO UPDATE SET version = registry_state.version + 1"
        )

    def registry_version(self) -> int:
        def fn(cur: Any) -> int:
            cur.execute("SELECT version FROM registry_state WHERE id = 1")
            row = cur.fetchone()
            return 0 if row is None else row[0]

        return self._run(fn, write=False)

    def registry_snapshot(self) -> RegistrySnapshot:
        def fn(cur: Any) -> RegistrySnapshot:
            # The version first: a change committed while the tables are read makes the
            # snapshot newer than its version, so the next check reloads again (never older).
            cur.execute("SELECT version FROM registry_state WHERE id = 1")
            row = cur.fetchone()
            cur.execute("SELECT address, label, active FROM registry_node")
            nodes = {bytes(a): (label, bool(active)) for a, label, active in cur.fetchall()}
            cur.execute("SELECT content_id, creator FROM registry_content")
            content = {bytes(c): bytes(k) for c, k in cur.fetchall()}
            cur.execute("SELECT address FROM registry_viewer")
            viewers = frozenset(bytes(a) for (a,) in cur.fetchall())
            return RegistrySnapshot(0 if row is None else row[0], nodes, content, viewers)

        return self._run(fn, write=False)

    def nodes(self) -> list[RegisteredNode]:
        """Every registered node, by address."""
        snap = self.registry_snapshot()
        return sorted(RegisteredNode(a, label, active) for a, (label, active) in snap.nodes.items())

    # Every change below is an admin's: `audit` is written in its transaction, and a node an
    # admin set inactive is `held` (its own signed requests no longer re-activate it).

    _PUT_NODE = (
        "INSERT INTO registry_node (address, label, active, held) VALUES (%s, %s, %s, %s) "
        "ON CONFLICT (address) DO UPDATE SET label = excluded.label, "
        "active = excluded.active, held = excluded.held"
    )

    def put_node(
        self, address: bytes, label: str, active: bool, audit: AdminEntry | None = None
    ) -> None:
        def fn(cur: Any) -> None:
            cur.execute(self._q(self._PUT_NODE), (address, label, active, not active))
            self._bump(cur)
            self._audit(cur, audit)

        self._run(fn)

    def set_node_active(
        self, address: bytes, active: bool, audit: AdminEntry | None = None
    ) -> bool:
        """False when the node is not registered."""

        def fn(cur: Any) -> bool:
            cur.execute(
                self._q("UPDATE registry_node SET active = %s, held = %s WHERE address = %s"),
                (active, not active, address),
            )
            found = cur.rowcount > 0
            if found:
                self._bump(cur)
                self._audit(cur, audit)
            return found

        return self._run(fn)

    def node_held(self, address: bytes) -> bool:
        """True when an admin deactivated the node (only an admin lifts that)."""

        def fn(cur: Any) -> bool:
            cur.execute(self._q("SELECT held FROM registry_node WHERE address = %s"), (address,))
            row = cur.fetchone()
            return row is not None and bool(row[0])

        return bool(self._run(fn, write=False))

    def put_content(
        self, content_id: bytes, creator: bytes, audit: AdminEntry | None = None
    ) -> None:
        def fn(cur: Any) -> None:
            cur.execute(
                self._q(
                    "INSERT INTO registry_content (content_id, creator) VALUES (%s, %s) "
                    "ON CONFLICT (content_id) DO UPDATE SET creator = excluded.creator"
                ),
                (content_id, creator),
            )
            self._bump(cur)
            self._audit(cur, audit)

        self._run(fn)

    def remove_content(self, content_id: bytes, audit: AdminEntry | None = None) -> bool:
        return self._delete_one("registry_content", "content_id", content_id, audit)

    def add_viewer(self, address: bytes, audit: AdminEntry | None = None) -> None:
        def fn(cur: Any) -> None:
            cur.execute(
                self._q(
                    "INSERT INTO registry_viewer (address) VALUES (%s) "
                    "ON CONFLICT (address) DO NOTHING"
                ),
                (address,),
            )
            self._bump(cur)
            self._audit(cur, audit)

        self._run(fn)

    def remove_viewer(self, address: bytes, audit: AdminEntry | None = None) -> bool:
        return self._delete_one("registry_viewer", "address", address, audit)

    def _delete_one(
        self, table: str, column: str, key: bytes, audit: AdminEntry | None = None
    ) -> bool:
        def fn(cur: Any) -> bool:
            cur.execute(self._q(f"DELETE FROM {table} WHERE {column} = %s"), (key,))
            found = cur.rowcount > 0
            if found:
                self._bump(cur)
                self._audit(cur, audit)
            return found

        return self._run(fn)

    def load_registries(
        self,
        nodes: Iterable[tuple[bytes, str, bool]],
        content: Iterable[tuple[bytes, bytes]],
        viewers: Iterable[bytes],
        audit: AdminEntry | None = None,
    ) -> None:
        """Upsert many registry entries in one transaction (import of a registries file)."""
        nodes, content, viewers = list(nodes), list(content), [(v,) for v in viewers]

        def fn(cur: Any) -> None:
            if nodes:
                cur.executemany(
                    self._q(self._PUT_NODE), [(a, lb, act, not act) for a, lb, act in nodes]
                )
            if content:
                cur.executemany(
                    self._q(
                        "INSERT INTO registry_content (content_id, creator) VALUES (%s, %s) "
                        "ON CONFLICT (content_id) DO UPDATE SET creator = excluded.creator"
                    ),
                    content,
                )
            if viewers:
                cur.executemany(
                    self._q(
                        "INSERT INTO registry_viewer (address) VALUES (%s) "
                        "ON CONFLICT (address) DO NOTHING"
                    ),
                    viewers,
                )
            self._bump(cur)
            self._audit(cur, audit)

        self._run(fn)

    # -- node registration requests ------------------------------------------------------

    _REG_COLS = "id, node, label, issued_at, signature, status, requested_at, decided_at"

    def _registration(self, row: Any) -> Registration:
        i, node, label, issued, sig, status, requested, decided = row
        return Registration(
            i,
            bytes(node),
            label,
            dec(issued),
            bytes(sig),
            status,
            dec(requested),
            None if decided is None else dec(decided),
        )

    def add_registration(
        self,
        node: bytes,
        label: str,
        issued_at: int,
        signature: bytes,
        requested_at: int,
        *,
        approve: bool,
    ) -> Registration | None:
        """`file_registration`'s request, whether stored now or found already there."""
        filed = self.file_registration(
            node, label, issued_at, signature, requested_at, approve=approve
        )
        return None if filed is None else filed[0]

    def file_registration(
        self,
        node: bytes,
        label: str,
        issued_at: int,
        signature: bytes,
        requested_at: int,
        *,
        approve: bool,
    ) -> tuple[Registration, bool] | None:
        """Store a verified request, or find the one that already answers it: (request, True
        when stored by this call). With `approve` the node is registered in the same
        transaction, unless an admin deactivated it (held): then the request waits, pending,
        for an admin.

        Idempotent for the node operator: while the node has a pending request, that request
        is returned; while the node is active (not held) under the same label and its last
        request was approved, that one is. An active node under that label with no approved
        request (an admin registered it) gets this one stored approved, nothing else changed.

        None when none of that applies and the node already has a request issued at or after
        `issued_at`: a signed request is used once, so replaying an old one cannot re-activate
        a node. Two copies sent at once are stored once (the node's lock, and the unique index
        behind it).
        """

        def fn(cur: Any) -> tuple[Registration, bool] | None:
            self._lock_node(cur, node)
            latest = self._last_registration(cur, node)
            if latest is not None and latest.status == "pending":
                return latest, False
            cur.execute(
                self._q("SELECT label, active, held FROM registry_node WHERE address = %s"),
                (node,),
            )
            registered = cur.fetchone()
            active_here = (
                registered is not None
                and registered[0] == label
                and bool(registered[1])
                and not registered[2]
            )
            if active_here and latest is not None and latest.status == "approved":
                return latest, False
            if latest is not None and latest.issued_at >= issued_at:
                return None
            held = registered is not None and bool(registered[2])
            approved = active_here or (approve and not held)
            status = "approved" if approved else "pending"
            decided = enc(requested_at) if approved else None
            cur.execute(
                self._q(
                    "INSERT INTO node_registration (node, label, issued_at, signature, status, "
                    "requested_at, decided_at) VALUES (%s, %s, %s, %s, %s, %s, %s) "
                    "ON CONFLICT (node, issued_at) DO NOTHING "
                    f"RETURNING {self._REG_COLS}"
                ),
                (node, label, enc(issued_at), signature, status, enc(requested_at), decided),
            )
            row = cur.fetchone()
            if row is None:
                return None
            if approved and not active_here:
                self._approve(cur, node, label)
            return self._registration(row), True

        result: tuple[Registration, bool] | None = self._run(fn)
        return result

    def _approve(self, cur: Any, node: bytes, label: str) -> None:
        cur.execute(self._q(self._PUT_NODE), (node, label, True, False))
        self._bump(cur)

    def registration(self, request_id: int) -> Registration | None:
        def fn(cur: Any) -> Registration | None:
            cur.execute(
                self._q(f"SELECT {self._REG_COLS} FROM node_registration WHERE id = %s"),
                (request_id,),
            )
            row = cur.fetchone()
            return None if row is None else self._registration(row)

        return self._run(fn, write=False)

    def last_registration(self, node: bytes) -> Registration | None:
        """The node's request with the highest issuedAt, if it sent any."""

        return self._run(lambda cur: self._last_registration(cur, node), write=False)

    def _last_registration(self, cur: Any, node: bytes) -> Registration | None:
        cur.execute(
            self._q(
                f"SELECT {self._REG_COLS} FROM node_registration WHERE node = %s "
                "ORDER BY issued_at DESC LIMIT 1"
            ),
            (node,),
        )
        row = cur.fetchone()
        return None if row is None else self._registration(row)

    def registrations(self, status: str | None = None) -> list[Registration]:
        def fn(cur: Any) -> list[Registration]:
            if status is None:
                cur.execute(f"SELECT {self._REG_COLS} FROM node_registration ORDER BY id")
            else:
                cur.execute(
                    self._q(
                        f"SELECT {self._REG_COLS} FROM node_registration WHERE status = %s ORDER BY id"
                    ),
                    (status,),
                )
            return [self._registration(r) for r in cur.fetchall()]

        return self._run(fn, write=False)

    def decide_registration(
        self, request_id: int, approve: bool, decided_at: int, audit: AdminEntry | None = None
    ) -> Registration | None:
        """Approve or reject a pending request; None when no pending request has that id."""

        def fn(cur: Any) -> Registration | None:
            cur.execute(
                self._q(
                    "UPDATE node_registration SET status = %s, decided_at = %s "
                    f"WHERE id = %s AND status = 'pending' RETURNING {self._REG_COLS}"
                ),
                ("approved" if approve else "rejected", enc(decided_at), request_id),
            )
            row = cur.fetchone()
            if row is None:
                return None
            reg = self._registration(row)
            if approve:
                self._approve(cur, reg.node, reg.label)
            self._audit(cur, audit)
            return reg

        return self._run(fn)

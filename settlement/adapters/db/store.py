"""The store: SQLModel tables, Alembic migrations and the set-based write path of ingest.

SQLite (WAL) is the embedded default, PostgreSQL the production store; both sit behind
`Store`. The verdict rules are not here: `ingest_batch` takes them as a function and runs
them inside the batch's transaction, on the locked sessions' stored rows.

Every uint64 (times, bytes served) is stored as a signed 64-bit integer offset by 2**63:
exact over the full range, and ordered like the value, so SQL comparisons still work.
Read such columns through this module's reads, or with `dec` (stored + 2**63).
"""

from __future__ import annotations

import sqlite3
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Final

import orjson
import psycopg
import sqlalchemy as sa
from sqlalchemy import BigInteger, Boolean, Column, Index, Integer, LargeBinary, Text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel

from settlement.domain.ingest import (
    BatchState,
    Best,
    Decide,
    DeliveryKey,
    RegistrySnapshot,
    SessionKey,
    SessionState,
    StatefulVerdict,
    Survivor,
)
from settlement.domain.receipts import DeliveryReceipt, Receipt, Rejected, ViewReceipt, to_wire
from settlement.errors import SchemaOutdated, StoreError

U64_OFFSET: Final = 2**63
MIGRATIONS_DIR: Final = Path(__file__).with_name("migrations")
NO_NODE: Final = b""  # node column of a view receipt's rejection-log row


def enc(value: int) -> int:
    """uint64 -> the signed 64-bit integer stored for it (order-preserving)."""
    return value - U64_OFFSET


def dec(value: int) -> int:
    """The stored signed 64-bit integer -> its uint64."""
    return value + U64_OFFSET


class U64(TypeDecorator):
    """uint64 in a BIGINT (both stores' integers are signed 64-bit): value - 2**63."""

    impl = BigInteger
    cache_ok = True

    def process_bind_param(self, value: int | None, dialect: Any) -> int | None:
        return None if value is None else enc(value)

    def process_result_value(self, value: int | None, dialect: Any) -> int | None:
        return None if value is None else dec(value)


# --- tables ---------------------------------------------------------------------------
# Columns are declared with sa_column so both dialects get exactly these types; the one
# Alembic revision creates the same, and a test compares them.


def pk_bytes() -> Any:
    """A bytes primary-key column (addresses, ids); shared by every adapter's tables."""
    return Field(sa_column=Column(LargeBinary, primary_key=True, autoincrement=False))


def pk_int() -> Any:
    """A bigint primary-key column the caller numbers (epochs, buckets), no autoincrement."""
    return Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))


def bytes_column(name: str) -> Column:
    """A required bytes column of a plain (keyless) sa.Table."""
    return Column(name, LargeBinary, nullable=False)


class ReceiptSession(SQLModel, table=True):
    """A session (viewer, sessionId): its one contentId and startedAt, and its quarantine."""

    __tablename__ = "receipt_session"
    viewer: bytes = pk_bytes()
    session_id: bytes = pk_bytes()
    content_id: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    started_at: int = Field(sa_column=Column(U64, nullable=False))
    # Highest bucket any stored receipt of the session is in (retention waits for its close).
    last_bucket: int = Field(sa_column=Column(BigInteger, nullable=False))
    # When the first conflict was stored (uint64 unix seconds); NULL: not quarantined.
    quarantined_at: int | None = Field(default=None, sa_column=Column(U64, nullable=True))

    __table_args__ = (Index("ix_receipt_session_started_at", "started_at"),)


class DeliveryBest(SQLModel, table=True):
    """Best delivery receipt per key (viewer, sessionId, node) and bucket (PROTOCOL 4)."""

    __tablename__ = "delivery_best"
    viewer: bytes = pk_bytes()
    session_id: bytes = pk_bytes()
    node: bytes = pk_bytes()
    bucket: int = pk_int()
    bytes_served: int = Field(sa_column=Column(U64, nullable=False))
    segments_served: int = Field(sa_column=Column(BigInteger, nullable=False))
    issued_at: int = Field(sa_column=Column(U64, nullable=False))
    signature: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class ViewBest(SQLModel, table=True):
    """Best view receipt per key (viewer, sessionId) and bucket."""

    __tablename__ = "view_best"
    viewer: bytes = pk_bytes()
    session_id: bytes = pk_bytes()
    bucket: int = pk_int()
    watch_seconds: int = Field(sa_column=Column(BigInteger, nullable=False))
    issued_at: int = Field(sa_column=Column(U64, nullable=False))
    signature: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class Quarantine(SQLModel, table=True):
    """Evidence of a quarantined session: the two conflicting signed receipts (wire JSON)."""

    __tablename__ = "quarantine"
    viewer: bytes = pk_bytes()
    session_id: bytes = pk_bytes()
    stored_at: int = Field(sa_column=Column(U64, nullable=False))
    detail: str = Field(sa_column=Column(Text, nullable=False))
    evidence_stored: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    evidence_received: str = Field(sa_column=Column(Text, nullable=False))


class RegistryNode(SQLModel, table=True):
    __tablename__ = "registry_node"
    address: bytes = pk_bytes()
    label: str = Field(sa_column=Column(Text, nullable=False))
    active: bool = Field(sa_column=Column(Boolean, nullable=False))


class RegistryContent(SQLModel, table=True):
    __tablename__ = "registry_content"
    content_id: bytes = pk_bytes()
    creator: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class RegistryViewer(SQLModel, table=True):
    __tablename__ = "registry_viewer"
    address: bytes = pk_bytes()


class RegistryState(SQLModel, table=True):
    """One row: a counter bumped by every registry change, so ingest reloads only then."""

    __tablename__ = "registry_state"
    id: int = Field(sa_column=Column(Integer, primary_key=True, autoincrement=False))
    version: int = Field(sa_column=Column(BigInteger, nullable=False))


class NodeRegistration(SQLModel, table=True):
    """A node operator's signed registration request and the platform's decision."""

    __tablename__ = "node_registration"
    id: int | None = Field(default=None, sa_column=Column(Integer, primary_key=True))
    node: bytes = Field(sa_column=Column(LargeBinary, nullable=False, index=True))
    label: str = Field(sa_column=Column(Text, nullable=False))
    issued_at: int = Field(sa_column=Column(U64, nullable=False))
    signature: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    status: str = Field(sa_column=Column(Text, nullable=False))  # pending|approved|rejected
    requested_at: int = Field(sa_column=Column(U64, nullable=False))
    decided_at: int | None = Field(default=None, sa_column=Column(U64, nullable=True))


class RejectionCount(SQLModel, table=True):
    """Every verdict but `accepted`, counted by (reason, node, epoch): always, never sampled.

    `reason` is a PROTOCOL reason code, or `duplicate` / `stale`; `node` is empty for view
    receipts and unparsable items; `epoch` is the receipt's bucket, 0 when it has none.
    """

    __tablename__ = "rejection_count"
    reason: str = Field(sa_column=Column(Text, primary_key=True))
    node: bytes = pk_bytes()
    epoch: int = pk_int()
    count: int = Field(sa_column=Column(BigInteger, nullable=False))


class RejectionSample(SQLModel, table=True):
    """Raw rejected items, a ring buffer of `rejection_sample_cap` slots per reason."""

    __tablename__ = "rejection_sample"
    reason: str = Field(sa_column=Column(Text, primary_key=True))
    slot: int = Field(sa_column=Column(Integer, primary_key=True, autoincrement=False))
    stored_at: int = Field(sa_column=Column(U64, nullable=False))
    node: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    epoch: int = Field(sa_column=Column(BigInteger, nullable=False))
    detail: str = Field(sa_column=Column(Text, nullable=False))
    raw: str = Field(sa_column=Column(Text, nullable=False))


class RejectionCursor(SQLModel, table=True):
    """Samples written so far per reason; the next slot is `written % cap`."""

    __tablename__ = "rejection_cursor"
    reason: str = Field(sa_column=Column(Text, primary_key=True))
    written: int = Field(sa_column=Column(BigInteger, nullable=False))


# A close reads only the sessions touched since the closes before it (see epoch_db.SetClose):
# every batch appends a row per (session, bucket) whose best receipts it changed, in its own
# transaction, and the close that consumes them deletes the rows its snapshot saw. Rows a
# close could not see stay for the next one, so a receipt committed while a close runs is
# never passed over. Append-only without an index: ingest pays one cheap insert a batch.
SESSION_TOUCH: Final = sa.Table(
    "session_touch",
    SQLModel.metadata,
    bytes_column("viewer"),
    bytes_column("session_id"),
    Column("bucket", BigInteger, nullable=False),
)

METADATA: Final = SQLModel.metadata
TABLES: Final = (
    ReceiptSession,
    DeliveryBest,
    ViewBest,
    Quarantine,
    RegistryNode,
    RegistryContent,
    RegistryViewer,
    RegistryState,
    NodeRegistration,
    RejectionCount,
    RejectionSample,
    RejectionCursor,
)
TABLE_NAMES: Final = (*(t.__tablename__ for t in TABLES), SESSION_TOUCH.name)


# --- the state a batch decides on -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class LoggedRejection:
    """One item for the rejection log: counted always, its raw form sampled."""

    reason: str
    node: bytes
    epoch: int
    detail: str
    raw: Any  # the wire item as received; None for duplicate / stale (never sampled)


@dataclass(frozen=True, slots=True)
class SamplePolicy:
    cap: int  # slots per reason
    per_batch: int  # samples per reason per batch
    max_bytes: int  # raw text cut to this length


@dataclass(frozen=True, slots=True)
class Registration:
    id: int
    node: bytes
    label: str
    issued_at: int
    signature: bytes
    status: str
    requested_at: int
    decided_at: int | None


@dataclass(frozen=True, slots=True)
class StoredReceipt:
    """A best receipt as the epoch close reads it: the full signed receipt and its bucket."""

    bucket: int
    receipt: Receipt


@dataclass(frozen=True, slots=True)
class QuarantineRecord:
    viewer: bytes
    session_id: bytes
    stored_at: int
    detail: str
    evidence_stored: dict[str, Any] | None  # wire object of the stored receipt it met
    evidence_received: dict[str, Any]  # wire object of the receipt that conflicted


@dataclass(frozen=True, slots=True)
class Sample:
    reason: str
    slot: int
    stored_at: int
    node: bytes
    epoch: int
    detail: str
    raw: str


def _raw_default(value: Any) -> Any:
    token = getattr(value, "token", None)  # a number token the strict parser kept verbatim
    if token is not None:
        return token
    inner = getattr(value, "value", None)  # an array item that is no object
    if inner is not None:
        return inner
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "replace")
    return repr(value)


def raw_text(item: Any, max_bytes: int) -> str:
    """A rejected item as text for the sample log, at most `max_bytes` UTF-8 bytes."""
    if isinstance(item, str):
        text = item
    elif isinstance(item, bytes | bytearray | memoryview):
        text = bytes(item).decode("utf-8", "replace")
    else:
        try:
            text = orjson.dumps(item, default=_raw_default).decode()
        except TypeError:  # orjson.JSONEncodeError: ints above 64 bits, cycles, ...
            text = repr(item)
    data = text.encode("utf-8", "replace")
    if len(data) <= max_bytes:
        return text
    return data[:max_bytes].decode("utf-8", "ignore")


# --- the store ------------------------------------------------------------------------

_RETRIES: Final = 8  # deadlocks between workers are rare and retried with fresh state


class Store:
    """One interface over SQLite and PostgreSQL: registries, ingest, epoch reads, logs, retention.

    Thread-safe: every call takes a pooled connection for one transaction.
    """

    dialect: str = ""
    _P: str = "%s"  # the driver's placeholder

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self._closed = False

    # -- plumbing ------------------------------------------------------------------------

    def _q(self, sql: str) -> str:
        return sql if self._P == "%s" else sql.replace("%s", self._P)

    def _begin(self, cur: Any, write: bool) -> None:
        raise NotImplementedError

    @contextmanager
    def _tx(self, write: bool = True) -> Iterator[Any]:
        """One transaction on a pooled connection: commit on success, roll back on error."""
        if self._closed:
            raise StoreError("the store is closed")
        try:
            conn = self.engine.raw_connection()
        except sa.exc.OperationalError as error:
            raise StoreError(f"cannot connect to the database: {error.orig}") from None
        try:
            cur = conn.cursor()
            try:
                self._begin(cur, write)
                yield cur
                conn.commit()
            except BaseException:
                conn.rollback()
                raise
            finally:
                cur.close()
        except (sqlite3.OperationalError, psycopg.OperationalError) as error:
            if self._retryable(error):
                raise
            raise StoreError(f"database error: {error}") from None
        finally:
            conn.close()

    def _retryable(self, error: BaseException) -> bool:
        return False

    def _run(self, fn: Callable[[Any], Any], write: bool = True) -> Any:
        """fn(cursor) in a transaction, again with fresh state after a deadlock."""
        for attempt in range(_RETRIES):
            try:
                with self._tx(write) as cur:
                    return fn(cur)
            except (sqlite3.OperationalError, psycopg.OperationalError) as error:
                if not self._retryable(error) or attempt == _RETRIES - 1:
                    raise StoreError(f"database error after {attempt + 1} tries: {error}") from None
        raise AssertionError("unreachable")

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

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

    def put_node(self, address: bytes, label: str, active: bool) -> None:
        def fn(cur: Any) -> None:
            cur.execute(
                self._q(
                    "INSERT INTO registry_node (address, label, active) VALUES (%s, %s, %s) "
                    "ON CONFLICT (address) DO UPDATE SET label = excluded.label, "
                    "active = excluded.active"
                ),
                (address, label, active),
            )
            self._bump(cur)

        self._run(fn)

    def set_node_active(self, address: bytes, active: bool) -> bool:
        """False when the node is not registered."""

        def fn(cur: Any) -> bool:
            cur.execute(
                self._q("UPDATE registry_node SET active = %s WHERE address = %s"),
                (active, address),
            )
            found = cur.rowcount > 0
            if found:
                self._bump(cur)
            return found

        return self._run(fn)

    def put_content(self, content_id: bytes, creator: bytes) -> None:
        def fn(cur: Any) -> None:
            cur.execute(
                self._q(
                    "INSERT INTO registry_content (content_id, creator) VALUES (%s, %s) "
                    "ON CONFLICT (content_id) DO UPDATE SET creator = excluded.creator"
                ),
                (content_id, creator),
            )
            self._bump(cur)

        self._run(fn)

    def remove_content(self, content_id: bytes) -> bool:
        return self._delete_one("registry_content", "content_id", content_id)

    def add_viewer(self, address: bytes) -> None:
        def fn(cur: Any) -> None:
            cur.execute(
                self._q(
                    "INSERT INTO registry_viewer (address) VALUES (%s) "
                    "ON CONFLICT (address) DO NOTHING"
                ),
                (address,),
            )
            self._bump(cur)

        self._run(fn)

    def remove_viewer(self, address: bytes) -> bool:
        return self._delete_one("registry_viewer", "address", address)

    def _delete_one(self, table: str, column: str, key: bytes) -> bool:
        def fn(cur: Any) -> bool:
            cur.execute(self._q(f"DELETE FROM {table} WHERE {column} = %s"), (key,))
            found = cur.rowcount > 0
            if found:
                self._bump(cur)
            return found

        return self._run(fn)

    def load_registries(
        self,
        nodes: Iterable[tuple[bytes, str, bool]],
        content: Iterable[tuple[bytes, bytes]],
        viewers: Iterable[bytes],
    ) -> None:
        """Upsert many registry entries in one transaction (import of a registries file)."""
        nodes, content, viewers = list(nodes), list(content), [(v,) for v in viewers]

        def fn(cur: Any) -> None:
            if nodes:
                cur.executemany(
                    self._q(
                        "INSERT INTO registry_node (address, label, active) VALUES (%s, %s, %s) "
                        "ON CONFLICT (address) DO UPDATE SET label = excluded.label, "
                        "active = excluded.active"
                    ),
                    nodes,
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
        """Store a verified request; with `approve` the node is registered in the same transaction.

        None when the node already has a request issued at or after `issued_at`: a signed
        request is used once, so replaying an old one cannot re-activate a node.
        """

        def fn(cur: Any) -> Registration | None:
            cur.execute(
                self._q("SELECT MAX(issued_at) FROM node_registration WHERE node = %s"), (node,)
            )
            (latest,) = cur.fetchone()
            if latest is not None and dec(latest) >= issued_at:
                return None
            status = "approved" if approve else "pending"
            decided = enc(requested_at) if approve else None
            cur.execute(
                self._q(
                    "INSERT INTO node_registration (node, label, issued_at, signature, status, "
                    "requested_at, decided_at) VALUES (%s, %s, %s, %s, %s, %s, %s) "
                    f"RETURNING {self._REG_COLS}"
                ),
                (node, label, enc(issued_at), signature, status, enc(requested_at), decided),
            )
            row = cur.fetchone()
            if approve:
                self._approve(cur, node, label)
            return self._registration(row)

        return self._run(fn)

    def _approve(self, cur: Any, node: bytes, label: str) -> None:
        cur.execute(
            self._q(
                "INSERT INTO registry_node (address, label, active) VALUES (%s, %s, %s) "
                "ON CONFLICT (address) DO UPDATE SET label = excluded.label, active = excluded.active"
            ),
            (node, label, True),
        )
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
        self, request_id: int, approve: bool, decided_at: int
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
            return reg

        return self._run(fn)

    # -- ingest --------------------------------------------------------------------------

    def ingest_batch(
        self,
        survivors: Sequence[Survivor],
        decide: Decide,
        now: int,
        rejections: Sequence[LoggedRejection],
        sampling: SamplePolicy,
    ) -> list[StatefulVerdict]:
        """Decide the survivors' stateful verdicts on their locked sessions and store the result.

        One transaction: lock the batch's sessions, read their rows, `decide` in batch order,
        write sessions, best receipts, quarantine evidence and the rejection log (the items in
        `rejections` plus every non-accepted verdict `decide` gives). Returns when committed.
        """
        if not survivors and not rejections:
            return []
        skeys = sorted({(r.viewer, r.session_id) for _, r, _ in survivors})

        def fn(cur: Any) -> list[StatefulVerdict]:
            with self._pipeline(cur):
                state = (
                    self._lock_and_read(cur, survivors, skeys)
                    if skeys
                    else BatchState({}, {}, {}, set(), set(), [])
                )
                verdicts = decide(survivors, state, now)
                self._write_state(cur, state)
                logged = list(rejections)
                for (_, r, bucket), verdict in zip(survivors, verdicts, strict=True):
                    if not verdict.accepted:
                        # A rejection is logged by its reason code and sampled with its
                        # receipt; a duplicate or stale one by its verdict, never sampled.
                        rejected = type(verdict) is Rejected
                        logged.append(
                            LoggedRejection(
                                verdict.reason.value if rejected else verdict.verdict,
                                r.node if type(r) is DeliveryReceipt else NO_NODE,
                                bucket,
                                verdict.detail if rejected else "",
                                to_wire(r) if rejected else None,
                            )
                        )
                self._log(cur, logged, now, sampling)
                self._commit_queued(cur)
            return verdicts

        return self._run(fn)

    def _pipeline(self, cur: Any) -> Any:
        """Context in which statements are queued rather than waited for (PostgreSQL)."""
        return nullcontext()

    def _commit_queued(self, cur: Any) -> None:
        """Queue the COMMIT with the batch's writes (PostgreSQL); else `_tx` commits."""

    def _first_of_sessions(
        self, survivors: Sequence[Survivor]
    ) -> dict[SessionKey, tuple[bytes, int, int]]:
        """(content_id, started_at, bucket) of each session's first survivor in batch order."""
        first: dict[SessionKey, tuple[bytes, int, int]] = {}
        for _, r, bucket in survivors:
            first.setdefault((r.viewer, r.session_id), (r.content_id, r.started_at, bucket))
        return first

    def _lock_and_read(
        self, cur: Any, survivors: Sequence[Survivor], skeys: list[SessionKey]
    ) -> BatchState:
        raise NotImplementedError

    def _write_state(self, cur: Any, state: BatchState, upsert_sessions: bool = False) -> None:
        raise NotImplementedError

    @staticmethod
    def _rows_to_state(
        sessions: dict[SessionKey, SessionState],
        delivery_rows: Iterable[Any],
        view_rows: Iterable[Any],
    ) -> BatchState:
        delivery: dict[DeliveryKey, dict[int, Best]] = {}
        for viewer, sid, node, bucket, b, s, issued, sig in delivery_rows:
            key = (bytes(viewer), bytes(sid), bytes(node))
            delivery.setdefault(key, {})[bucket] = (dec(b), s, dec(issued), bytes(sig))
        view: dict[SessionKey, dict[int, Best]] = {}
        for viewer, sid, bucket, w, issued, sig in view_rows:
            view.setdefault((bytes(viewer), bytes(sid)), {})[bucket] = (
                w,
                0,
                dec(issued),
                bytes(sig),
            )
        return BatchState(sessions, delivery, view, set(), set(), [])

    @staticmethod
    def _delivery_rows(state: BatchState) -> list[tuple]:
        rows = []
        for key, bucket in sorted(state.delivery_dirty):
            b, s, issued, sig = state.delivery[key][bucket]
            rows.append((*key, bucket, enc(b), s, enc(issued), sig))
        return rows

    @staticmethod
    def _view_rows(state: BatchState) -> list[tuple]:
        rows = []
        for key, bucket in sorted(state.view_dirty):
            w, _, issued, sig = state.view[key][bucket]
            rows.append((*key, bucket, w, enc(issued), sig))
        return rows

    @staticmethod
    def _touch_rows(state: BatchState) -> list[tuple[bytes, bytes, int]]:
        """(viewer, sessionId, bucket) of every session and bucket whose best receipts the
        batch changed: the close of that bucket, or the next one, reads the session."""
        touched = {(v, s, b) for (v, s, _), b in state.delivery_dirty}
        touched.update((v, s, b) for (v, s), b in state.view_dirty)
        return sorted(touched)

    def _log(
        self, cur: Any, logged: Sequence[LoggedRejection], now: int, sampling: SamplePolicy
    ) -> None:
        if not logged:
            return
        counts = Counter((x.reason, x.node, x.epoch) for x in logged)
        # Sorted: two workers bumping the same rows lock them in one order (no deadlock).
        self._add_counts(cur, [(*k, n) for k, n in sorted(counts.items())])
        if sampling.cap <= 0 or sampling.per_batch <= 0:
            return
        picked: dict[str, list[LoggedRejection]] = {}
        for x in logged:
            if x.raw is not None:
                part = picked.setdefault(x.reason, [])
                if len(part) < min(sampling.per_batch, sampling.cap):
                    part.append(x)
        if not picked:
            return
        reasons = sorted(picked)
        written = self._advance_cursors(cur, [(r, len(picked[r])) for r in reasons])
        rows = []
        stamp = enc(now)
        for reason in reasons:
            part = picked[reason]
            start = written[reason] - len(part)
            rows.extend(
                (
                    reason,
                    (start + j) % sampling.cap,
                    stamp,
                    x.node,
                    x.epoch,
                    x.detail,
                    raw_text(x.raw, sampling.max_bytes),
                )
                for j, x in enumerate(part)
            )
        self._put_samples(cur, rows)

    _COUNT_UPSERT = (
        " ON CONFLICT (reason, node, epoch) DO UPDATE SET "
        "count = rejection_count.count + excluded.count"
    )
    _CURSOR_UPSERT = (
        " ON CONFLICT (reason) DO UPDATE SET written = rejection_cursor.written + "
        "excluded.written RETURNING reason, written"
    )
    _SAMPLE_UPSERT = (
        " ON CONFLICT (reason, slot) DO UPDATE SET stored_at = excluded.stored_at, "
        "node = excluded.node, epoch = excluded.epoch, detail = excluded.detail, raw = excluded.raw"
    )

    def _add_counts(self, cur: Any, rows: list[tuple[str, bytes, int, int]]) -> None:
        cur.executemany(
            self._q(
                "INSERT INTO rejection_count (reason, node, epoch, count) VALUES (%s, %s, %s, %s)"
            )
            + self._COUNT_UPSERT,
            rows,
        )

    def _advance_cursors(self, cur: Any, rows: list[tuple[str, int]]) -> dict[str, int]:
        """Reserve ring slots: add each reason's sample count, return its new total."""
        out = {}
        for row in rows:
            cur.execute(
                self._q("INSERT INTO rejection_cursor (reason, written) VALUES (%s, %s)")
                + self._CURSOR_UPSERT,
                row,
            )
            reason, written = cur.fetchone()
            out[reason] = written
        return out

    def _put_samples(self, cur: Any, rows: list[tuple]) -> None:
        cur.executemany(
            self._q(
                "INSERT INTO rejection_sample (reason, slot, stored_at, node, epoch, detail, raw) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s)"
            )
            + self._SAMPLE_UPSERT,
            rows,
        )

    def bulk_load_best(self, receipts: Sequence[Receipt], buckets: Sequence[int]) -> int:
        """The store ceiling: write receipts as best rows by the fastest bulk path, no verdicts.

        For benchmarks only: no locking, no rules, no log. Later receipts of the same key and
        bucket overwrite earlier ones in memory first. Returns the rows written.
        """
        sessions: dict[SessionKey, SessionState] = {}
        state = BatchState(sessions, {}, {}, set(), set(), [])
        for r, bucket in zip(receipts, buckets, strict=True):
            skey = (r.viewer, r.session_id)
            if skey not in sessions:
                sessions[skey] = SessionState(r.content_id, r.started_at, bucket, None, True)
            if type(r) is DeliveryReceipt:
                key = (r.viewer, r.session_id, r.node)
                state.delivery.setdefault(key, {})[bucket] = (
                    r.bytes_served,
                    r.segments_served,
                    r.issued_at,
                    r.signature,
                )
                state.delivery_dirty.add((key, bucket))
            else:
                state.view.setdefault(skey, {})[bucket] = (
                    r.watch_seconds,
                    0,
                    r.issued_at,
                    r.signature,
                )
                state.view_dirty.add((skey, bucket))

        def fn(cur: Any) -> int:
            with self._pipeline(cur):
                self._write_state(cur, state, upsert_sessions=True)
                self._commit_queued(cur)
            return len(state.delivery_dirty) + len(state.view_dirty)

        return self._run(fn)

    # -- reads for epochs and operators --------------------------------------------------

    def best_receipts(self, max_bucket: int | None = None) -> list[StoredReceipt]:
        """Every stored best receipt (of buckets <= max_bucket), as full signed receipts.

        Sorted by kind (delivery first), viewer, sessionId, node, bucket.
        """
        cond = "" if max_bucket is None else " WHERE d.bucket <= %s"
        vcond = "" if max_bucket is None else " WHERE v.bucket <= %s"
        params = () if max_bucket is None else (max_bucket,)

        def fn(cur: Any) -> list[StoredReceipt]:
            out: list[StoredReceipt] = []
            cur.execute(
                self._q(
                    "SELECT d.viewer, d.session_id, d.node, s.content_id, s.started_at, "
                    "d.bytes_served, d.segments_served, d.issued_at, d.signature, d.bucket "
                    "FROM delivery_best d JOIN receipt_session s "
                    "ON s.viewer = d.viewer AND s.session_id = d.session_id"
                    + cond
                    + " ORDER BY d.viewer, d.session_id, d.node, d.bucket"
                ),
                params,
            )
            for v, sid, node, cid, st, b, seg, iss, sig, bucket in cur.fetchall():
                out.append(
                    StoredReceipt(
                        bucket,
                        DeliveryReceipt(
                            bytes(sid),
                            bytes(v),
                            bytes(node),
                            bytes(cid),
                            dec(st),
                            dec(b),
                            seg,
                            dec(iss),
                            bytes(sig),
                        ),
                    )
                )
            cur.execute(
                self._q(
                    "SELECT v.viewer, v.session_id, s.content_id, s.started_at, "
                    "v.watch_seconds, v.issued_at, v.signature, v.bucket "
                    "FROM view_best v JOIN receipt_session s "
                    "ON s.viewer = v.viewer AND s.session_id = v.session_id"
                    + vcond
                    + " ORDER BY v.viewer, v.session_id, v.bucket"
                ),
                params,
            )
            for v, sid, cid, st, w, iss, sig, bucket in cur.fetchall():
                out.append(
                    StoredReceipt(
                        bucket,
                        ViewReceipt(
                            bytes(sid), bytes(v), bytes(cid), dec(st), w, dec(iss), bytes(sig)
                        ),
                    )
                )
            return out

        return self._run(fn, write=False)

    def quarantined(self, stored_before: int | None = None) -> list[QuarantineRecord]:
        """The quarantine set with evidence; `stored_before`: only conflicts stored before then."""

        def fn(cur: Any) -> list[QuarantineRecord]:
            sql = (
                "SELECT viewer, session_id, stored_at, detail, evidence_stored, evidence_received "
                "FROM quarantine"
            )
            params: tuple = ()
            if stored_before is not None:
                sql += " WHERE stored_at < %s"
                params = (enc(stored_before),)
            cur.execute(self._q(sql + " ORDER BY viewer, session_id"), params)
            return [
                QuarantineRecord(
                    bytes(v),
                    bytes(s),
                    dec(at),
                    detail,
                    None if a is None else orjson.loads(a),
                    orjson.loads(b),
                )
                for v, s, at, detail, a, b in cur.fetchall()
            ]

        return self._run(fn, write=False)

    def session(self, viewer: bytes, session_id: bytes) -> dict[str, Any] | None:
        def fn(cur: Any) -> dict[str, Any] | None:
            cur.execute(
                self._q(
                    "SELECT content_id, started_at, last_bucket, quarantined_at "
                    "FROM receipt_session WHERE viewer = %s AND session_id = %s"
                ),
                (viewer, session_id),
            )
            row = cur.fetchone()
            if row is None:
                return None
            cid, st, last, q = row
            return {
                "content_id": bytes(cid),
                "started_at": dec(st),
                "last_bucket": last,
                "quarantined_at": None if q is None else dec(q),
            }

        return self._run(fn, write=False)

    def rejection_counts(self) -> dict[tuple[str, bytes, int], int]:
        """(reason, node, epoch) -> count; node b"" for view receipts and unparsable items."""

        def fn(cur: Any) -> dict[tuple[str, bytes, int], int]:
            cur.execute("SELECT reason, node, epoch, count FROM rejection_count")
            return {(r, bytes(n), e): c for r, n, e, c in cur.fetchall()}

        return self._run(fn, write=False)

    def rejection_samples(self, reason: str | None = None) -> list[Sample]:
        def fn(cur: Any) -> list[Sample]:
            sql = "SELECT reason, slot, stored_at, node, epoch, detail, raw FROM rejection_sample"
            params: tuple = ()
            if reason is not None:
                sql += " WHERE reason = %s"
                params = (reason,)
            cur.execute(self._q(sql + " ORDER BY reason, slot"), params)
            return [
                Sample(r, slot, dec(at), bytes(n), e, d, raw)
                for r, slot, at, n, e, d, raw in cur.fetchall()
            ]

        return self._run(fn, write=False)

    def row_counts(self) -> dict[str, int]:
        def fn(cur: Any) -> dict[str, int]:
            out = {}
            for name in TABLE_NAMES:
                cur.execute(f"SELECT COUNT(*) FROM {name}")
                out[name] = cur.fetchone()[0]
            return out

        return self._run(fn, write=False)

    def nodes(self) -> list[tuple[bytes, str, bool]]:
        snap = self.registry_snapshot()
        return sorted((a, label, active) for a, (label, active) in snap.nodes.items())

    # -- retention -----------------------------------------------------------------------

    def prune(self, started_before: int, last_closed_epoch: int, conflicts_before: int) -> int:
        """Delete sessions that started before `started_before` and touched no bucket after
        `last_closed_epoch`, with their best receipts and watermarks; a quarantined one only
        once its conflict was stored before `conflicts_before` (so a close has
        published its evidence); none that a close has yet to read (a touch left: a batch
        committed after the last close's snapshot). Run it under the close lock
        (service.prune_sessions): a close must not read a session while it goes.

        Returns the number of sessions deleted.
        """
        if started_before <= 0:
            return 0
        cond = (
            "started_at < %s AND last_bucket <= %s AND "
            "(quarantined_at IS NULL OR quarantined_at < %s) AND " + self._UNTOUCHED
        )
        top = 2 * U64_OFFSET - 1
        params = (enc(min(started_before, top)), last_closed_epoch, enc(min(conflicts_before, top)))
        victims = f"SELECT viewer, session_id FROM receipt_session WHERE {cond}"

        def fn(cur: Any) -> int:
            # Lock them first: a batch of one of them still in flight (ingest locks its
            # sessions) commits before, and every statement below then sees its touch.
            self._lock_victims(cur, victims, params)
            # Its watermarks go too: no receipt of the session can be accepted again, so no
            # close reads them (a close's cost stays bounded by retention). It has no touch.
            for table in (
                "delivery_best",
                "view_best",
                "quarantine",
                "delivery_watermark",
                "view_watermark",
            ):
                cur.execute(
                    self._q(f"DELETE FROM {table} WHERE (viewer, session_id) IN ({victims})"),
                    params,
                )
            cur.execute(self._q(f"DELETE FROM receipt_session WHERE {cond}"), params)
            return cur.rowcount

        return self._run(fn)

    # A session with no touch left (see SESSION_TOUCH), as each dialect runs it fast.
    _UNTOUCHED: ClassVar[str]

    def _lock_victims(self, cur: Any, victims: str, params: tuple[Any, ...]) -> None:
        raise NotImplementedError


# --- SQLite ---------------------------------------------------------------------------

_SQLITE_CHUNK: Final = 400  # keys per IN (VALUES ...) list: far below SQLite's variable limit


class SqliteStore(Store):
    """Embedded store: one writer at a time (BEGIN IMMEDIATE), readers alongside (WAL)."""

    dialect = "sqlite"
    _P = "?"

    def _begin(self, cur: Any, write: bool) -> None:
        cur.execute("BEGIN IMMEDIATE" if write else "BEGIN")

    def _retryable(self, error: BaseException) -> bool:
        return False  # busy_timeout already waited; "database is locked" after it is an outage

    # NOT IN builds one temporary index of the touches; a correlated NOT EXISTS on the
    # unindexed table would scan it once per session.
    _UNTOUCHED = "(viewer, session_id) NOT IN (SELECT viewer, session_id FROM session_touch)"

    def _lock_victims(self, cur: Any, victims: str, params: tuple[Any, ...]) -> None:
        pass  # BEGIN IMMEDIATE holds the database's write lock: no batch is in flight

    def _select_keys(self, cur: Any, sql: str, skeys: list[SessionKey]) -> list[Any]:
        rows: list[Any] = []
        for i in range(0, len(skeys), _SQLITE_CHUNK):
            part = skeys[i : i + _SQLITE_CHUNK]
            values = ",".join(["(?,?)"] * len(part))
            cur.execute(sql.format(keys=values), [x for key in part for x in key])
            rows.extend(cur.fetchall())
        return rows

    def _lock_and_read(
        self, cur: Any, survivors: Sequence[Survivor], skeys: list[SessionKey]
    ) -> BatchState:
        # BEGIN IMMEDIATE already holds the database's write lock: the whole batch is serial.
        sessions: dict[SessionKey, SessionState] = {}
        for v, s, cid, st, last, q in self._select_keys(
            cur,
            "SELECT viewer, session_id, content_id, started_at, last_bucket, quarantined_at "
            "FROM receipt_session WHERE (viewer, session_id) IN (VALUES {keys})",
            skeys,
        ):
            sessions[(v, s)] = SessionState(
                cid, dec(st), last, None if q is None else dec(q), False
            )
        existing = [k for k in skeys if k in sessions]
        for skey, (cid, started, bucket) in self._first_of_sessions(survivors).items():
            if skey not in sessions:
                sessions[skey] = SessionState(cid, started, bucket, None, True)
        delivery = self._select_keys(
            cur,
            "SELECT viewer, session_id, node, bucket, bytes_served, segments_served, issued_at, "
            "signature FROM delivery_best WHERE (viewer, session_id) IN (VALUES {keys})",
            existing,
        )
        view = self._select_keys(
            cur,
            "SELECT viewer, session_id, bucket, watch_seconds, issued_at, signature "
            "FROM view_best WHERE (viewer, session_id) IN (VALUES {keys})",
            existing,
        )
        return self._rows_to_state(sessions, delivery, view)

    def _write_state(self, cur: Any, state: BatchState, upsert_sessions: bool = False) -> None:
        new, changed = [], []
        for (v, s), st in state.sessions.items():
            q = None if st.quarantined_at is None else enc(st.quarantined_at)
            if st.new:
                new.append((v, s, st.content_id, enc(st.started_at), st.last_bucket, q))
            elif st.dirty:
                changed.append((st.last_bucket, q, v, s))
        if new:
            cur.executemany(
                "INSERT INTO receipt_session (viewer, session_id, content_id, started_at, "
                "last_bucket, quarantined_at) VALUES (?, ?, ?, ?, ?, ?)"
                + (" ON CONFLICT (viewer, session_id) DO NOTHING" if upsert_sessions else ""),
                new,
            )
        if changed:
            cur.executemany(
                "UPDATE receipt_session SET last_bucket = ?, quarantined_at = ? "
                "WHERE viewer = ? AND session_id = ?",
                changed,
            )
        rows = self._delivery_rows(state)
        if rows:
            cur.executemany(
                "INSERT INTO delivery_best (viewer, session_id, node, bucket, bytes_served, "
                "segments_served, issued_at, signature) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (viewer, session_id, node, bucket) DO UPDATE SET "
                "bytes_served = excluded.bytes_served, segments_served = excluded.segments_served, "
                "issued_at = excluded.issued_at, signature = excluded.signature",
                rows,
            )
        rows = self._view_rows(state)
        if rows:
            cur.executemany(
                "INSERT INTO view_best (viewer, session_id, bucket, watch_seconds, issued_at, "
                "signature) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (viewer, session_id, bucket) DO UPDATE SET "
                "watch_seconds = excluded.watch_seconds, issued_at = excluded.issued_at, "
                "signature = excluded.signature",
                rows,
            )
        rows = self._touch_rows(state)
        if rows:
            cur.executemany(
                "INSERT INTO session_touch (viewer, session_id, bucket) VALUES (?, ?, ?)", rows
            )
        if state.quarantines:
            cur.executemany(
                "INSERT INTO quarantine (viewer, session_id, stored_at, detail, evidence_stored, "
                "evidence_received) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (viewer, session_id) DO NOTHING",
                [(v, s, enc(at), d, a, b) for v, s, at, d, a, b in state.quarantines],
            )


# --- PostgreSQL -----------------------------------------------------------------------

_PG_MIGRATION_LOCK: Final = 0x5732_4553_544F_5245  # pg_advisory_xact_lock key of migrations


class PostgresStore(Store):
    """Production store: sessions locked row by row in key order, set-based SQL over arrays."""

    dialect = "postgresql"

    def _begin(self, cur: Any, write: bool) -> None:
        pass  # psycopg opens the transaction with the first statement

    def _retryable(self, error: BaseException) -> bool:
        return isinstance(
            error, psycopg.errors.DeadlockDetected | psycopg.errors.SerializationFailure
        )

    # An anti-join (NOT IN would fall back to a rescan per session once the touches outgrow
    # work_mem).
    _UNTOUCHED = (
        "NOT EXISTS (SELECT 1 FROM session_touch t WHERE t.viewer = receipt_session.viewer "
        "AND t.session_id = receipt_session.session_id)"
    )

    def _lock_victims(self, cur: Any, victims: str, params: tuple[Any, ...]) -> None:
        cur.execute(
            f"SELECT COUNT(*) FROM ({victims} ORDER BY viewer, session_id FOR UPDATE) AS v", params
        )

    def _pipeline(self, cur: Any) -> Any:
        # Statements run one after another on the server whether or not the client waits
        # in between: queue them and wait only where a result is needed (4 round trips
        # a batch instead of one per statement).
        return cur.connection.pipeline()

    def _commit_queued(self, cur: Any) -> None:
        cur.connection.commit()

    def registry_version(self) -> int:
        # One statement, no transaction: the cheapest read there is, once per batch.
        if self._closed:
            raise StoreError("the store is closed")
        conn = self.engine.raw_connection()
        try:
            pg = conn.driver_connection
            pg.autocommit = True
            try:
                row = pg.execute("SELECT version FROM registry_state WHERE id = 1").fetchone()
            finally:
                pg.autocommit = False
        except psycopg.OperationalError as error:
            raise StoreError(f"database error: {error}") from None
        finally:
            conn.close()
        return 0 if row is None else row[0]

    def _lock_and_read(
        self, cur: Any, survivors: Sequence[Survivor], skeys: list[SessionKey]
    ) -> BatchState:
        first = self._first_of_sessions(survivors)
        cols: tuple[list, ...] = ([], [], [], [], [])
        for skey in skeys:  # sorted: every worker takes the row locks in one order
            cid, started, bucket = first[skey]
            for col, x in zip(cols, (*skey, cid, enc(started), bucket), strict=True):
                col.append(x)
        keys = (cols[0], cols[1])
        conn = cur.connection
        # All four statements go out together and run in order. Inserting a new session
        # locks it until commit: a worker inserting the same key waits there, then finds
        # the row (the stored contentId and startedAt win). FOR UPDATE locks the existing
        # ones; the reads after it see whatever the previous lock holder committed.
        cur.execute(
            "INSERT INTO receipt_session (viewer, session_id, content_id, started_at, last_bucket) "
            "SELECT * FROM unnest(%b::bytea[], %b::bytea[], %b::bytea[], %b::int8[], %b::int8[]) "
            "ORDER BY 1, 2 ON CONFLICT (viewer, session_id) DO NOTHING",
            cols,
        )
        with conn.cursor() as locked, conn.cursor() as dcur, conn.cursor() as vcur:
            locked.execute(
                "SELECT s.viewer, s.session_id, s.content_id, s.started_at, s.last_bucket, "
                "s.quarantined_at FROM receipt_session s "
                "JOIN unnest(%b::bytea[], %b::bytea[]) AS k(viewer, session_id) "
                "ON s.viewer = k.viewer AND s.session_id = k.session_id "
                "ORDER BY s.viewer, s.session_id FOR UPDATE OF s",
                keys,
            )
            dcur.execute(
                "SELECT d.viewer, d.session_id, d.node, d.bucket, d.bytes_served, "
                "d.segments_served, d.issued_at, d.signature FROM delivery_best d "
                "JOIN unnest(%b::bytea[], %b::bytea[]) AS k(viewer, session_id) "
                "ON d.viewer = k.viewer AND d.session_id = k.session_id",
                keys,
            )
            vcur.execute(
                "SELECT w.viewer, w.session_id, w.bucket, w.watch_seconds, w.issued_at, "
                "w.signature FROM view_best w "
                "JOIN unnest(%b::bytea[], %b::bytea[]) AS k(viewer, session_id) "
                "ON w.viewer = k.viewer AND w.session_id = k.session_id",
                keys,
            )
            session_rows = locked.fetchall()
            delivery = dcur.fetchall()
            view = vcur.fetchall()
        sessions: dict[SessionKey, SessionState] = {}
        for v, s, cid, st, last, q in session_rows:
            skey = (bytes(v), bytes(s))
            # Rows this batch just inserted are new=False too: they exist, only changes
            # (bucket, quarantine) are written back.
            sessions[skey] = SessionState(
                bytes(cid), dec(st), last, None if q is None else dec(q), False
            )
        if len(sessions) != len(skeys):
            # Pruned between the insert and the lock: start over, the insert will create it.
            raise psycopg.errors.SerializationFailure("a batch session was pruned meanwhile")
        return self._rows_to_state(sessions, delivery, view)

    def _write_state(self, cur: Any, state: BatchState, upsert_sessions: bool = False) -> None:
        new, changed = [], []
        for (v, s), st in sorted(state.sessions.items()):
            q = None if st.quarantined_at is None else enc(st.quarantined_at)
            if st.new:
                new.append((v, s, st.content_id, enc(st.started_at), st.last_bucket, q))
            elif st.dirty:
                changed.append((v, s, st.last_bucket, q))
        if new:
            cur.execute(
                "INSERT INTO receipt_session (viewer, session_id, content_id, started_at, "
                "last_bucket, quarantined_at) SELECT * FROM unnest(%b::bytea[], %b::bytea[], "
                "%b::bytea[], %b::int8[], %b::int8[], %b::int8[]) "
                "ON CONFLICT (viewer, session_id) DO NOTHING",
                _columns(new, 6),
                binary=True,
            )
        if changed:
            cur.execute(
                "UPDATE receipt_session s SET last_bucket = u.last_bucket, "
                "quarantined_at = u.quarantined_at FROM unnest(%b::bytea[], %b::bytea[], "
                "%b::int8[], %b::int8[]) AS u(viewer, session_id, last_bucket, quarantined_at) "
                "WHERE s.viewer = u.viewer AND s.session_id = u.session_id",
                _columns(changed, 4),
                binary=True,
            )
        rows = self._delivery_rows(state)
        if rows:
            cur.execute(
                "INSERT INTO delivery_best (viewer, session_id, node, bucket, bytes_served, "
                "segments_served, issued_at, signature) SELECT * FROM unnest(%b::bytea[], "
                "%b::bytea[], %b::bytea[], %b::int8[], %b::int8[], %b::int8[], %b::int8[], "
                "%b::bytea[]) ON CONFLICT (viewer, session_id, node, bucket) DO UPDATE SET "
                "bytes_served = excluded.bytes_served, segments_served = excluded.segments_served, "
                "issued_at = excluded.issued_at, signature = excluded.signature",
                _columns(rows, 8),
                binary=True,
            )
        rows = self._view_rows(state)
        if rows:
            cur.execute(
                "INSERT INTO view_best (viewer, session_id, bucket, watch_seconds, issued_at, "
                "signature) SELECT * FROM unnest(%b::bytea[], %b::bytea[], %b::int8[], "
                "%b::int8[], %b::int8[], %b::bytea[]) "
                "ON CONFLICT (viewer, session_id, bucket) DO UPDATE SET "
                "watch_seconds = excluded.watch_seconds, issued_at = excluded.issued_at, "
                "signature = excluded.signature",
                _columns(rows, 6),
                binary=True,
            )
        rows = self._touch_rows(state)
        if rows:
            cur.execute(
                "INSERT INTO session_touch (viewer, session_id, bucket) SELECT * FROM "
                "unnest(%b::bytea[], %b::bytea[], %b::int8[])",
                _columns(rows, 3),
                binary=True,
            )
        if state.quarantines:
            cur.executemany(
                "INSERT INTO quarantine (viewer, session_id, stored_at, detail, evidence_stored, "
                "evidence_received) VALUES (%s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (viewer, session_id) DO NOTHING",
                [(v, s, enc(at), d, a, b) for v, s, at, d, a, b in state.quarantines],
            )

    # The rejection log as one statement per table (executemany would cost a round trip a row).

    def _add_counts(self, cur: Any, rows: list[tuple[str, bytes, int, int]]) -> None:
        cur.execute(
            "INSERT INTO rejection_count (reason, node, epoch, count) SELECT * FROM "
            "unnest(%b::text[], %b::bytea[], %b::int8[], %b::int8[])" + self._COUNT_UPSERT,
            _columns(rows, 4),
        )

    def _advance_cursors(self, cur: Any, rows: list[tuple[str, int]]) -> dict[str, int]:
        with cur.connection.cursor() as returning:  # its own cursor: queued results stay apart
            returning.execute(
                "INSERT INTO rejection_cursor (reason, written) SELECT * FROM "
                "unnest(%b::text[], %b::int8[])" + self._CURSOR_UPSERT,
                _columns(rows, 2),
            )
            return dict(returning.fetchall())

    def _put_samples(self, cur: Any, rows: list[tuple]) -> None:
        cur.execute(
            "INSERT INTO rejection_sample (reason, slot, stored_at, node, epoch, detail, raw) "
            "SELECT * FROM unnest(%b::text[], %b::int4[], %b::int8[], %b::bytea[], %b::int8[], "
            "%b::text[], %b::text[])" + self._SAMPLE_UPSERT,
            _columns(rows, 7),
        )


def _columns(rows: list[tuple], width: int) -> list[list]:
    """Row tuples -> one list per column (the arrays that unnest() takes back apart)."""
    if not rows:
        return [[] for _ in range(width)]
    return [list(col) for col in zip(*rows, strict=True)]


# --- opening and migrations -----------------------------------------------------------


def _engine(url: str, pool_size: int, sqlite_synchronous: str) -> tuple[sa.Engine, str]:
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise StoreError(
            f"cannot read the database URL {url!r}: give sqlite:///PATH or postgresql://USER@HOST/DB"
        ) from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        path = parsed.database
        if not path or path == ":memory:":
            raise StoreError("an in-memory SQLite store loses everything: give sqlite:///PATH")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(
            parsed.set(drivername="sqlite+pysqlite"),
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=pool_size,
            max_overflow=pool_size,
        )

        @sa.event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            # Autocommit at the driver: transactions are begun explicitly, IMMEDIATE for
            # writes, so two writers queue on busy_timeout instead of failing to upgrade.
            dbapi_conn.isolation_level = None
            dbapi_conn.execute("PRAGMA journal_mode=WAL")
            dbapi_conn.execute(f"PRAGMA synchronous={sqlite_synchronous}")
            dbapi_conn.execute("PRAGMA busy_timeout=30000")

        @sa.event.listens_for(engine, "begin")
        def _on_begin(conn: Any) -> None:  # Core transactions (migrations): writers too
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine, "sqlite"
    if backend in ("postgresql", "postgres"):
        engine = sa.create_engine(
            parsed.set(drivername="postgresql+psycopg"),
            pool_size=pool_size,
            max_overflow=pool_size,
            pool_recycle=3600,
        )
        return engine, "postgresql"
    raise StoreError(f"unsupported database {backend!r}: use sqlite:///PATH or postgresql://...")


def compare_type(
    ctx: Any, inspected_column: Any, metadata_column: Any, inspected_type: Any, metadata_type: Any
) -> bool | None:
    """Alembic type comparison: U64 is a BIGINT underneath; every other type the default way."""
    if isinstance(metadata_type, U64):
        return not isinstance(inspected_type, BigInteger)
    return None


def alembic_config(connection: Any = None) -> Any:
    """Alembic's Config for the package's migrations (no alembic.ini needed)."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def migrate(engine: sa.Engine) -> None:
    """`alembic upgrade head` on this engine; concurrent callers wait for each other."""
    from alembic import command

    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_MIGRATION_LOCK})")
        command.upgrade(alembic_config(conn), "head")


def schema_revision(engine: sa.Engine) -> tuple[str | None, str]:
    """(revision the database is at, the code's head)."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    with engine.connect() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
    return current, head or ""


_open_lock = threading.Lock()


def open_store(
    url: str, *, create: bool = True, pool_size: int = 4, sqlite_synchronous: str = "FULL"
) -> Store:
    """Open `sqlite:///PATH` or `postgresql://...`; `create` migrates the schema to head.

    With create=False the schema must already be at head (SchemaOutdated otherwise). For
    a PostgreSQL schema other than public, put it in the URL:
    `postgresql://u@h/db?options=-csearch_path%3Dmy_schema`.
    """
    engine, dialect = _engine(url, pool_size, sqlite_synchronous)
    try:
        with _open_lock:
            if create:
                migrate(engine)
            current, head = schema_revision(engine)
    except sa.exc.OperationalError as error:
        engine.dispose()
        raise StoreError(f"cannot open the database {engine.url!r}: {error.orig}") from None
    if current != head:
        engine.dispose()
        raise SchemaOutdated(
            f"database schema is at {current or 'nothing'}, the code needs {head}: "
            "run `alembic upgrade head` (or open the store with create=True)"
        )
    return SqliteStore(engine) if dialect == "sqlite" else PostgresStore(engine)

"""The store: one interface over SQLite and PostgreSQL, its transactions and retries, the
set-based write path of ingest and the shared queries; `open_store` picks the dialect.

The verdict rules are not here: `ingest_batch` takes them as a function (domain/ingest.py)
and runs them inside the batch's transaction, on the locked sessions' stored rows.
One query style: SQL text through the DBAPI cursor of `_tx`; SQLAlchemy only makes the
engine and the schema (tables.py).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Final

import orjson
import psycopg
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from settlement.adapters.db.access import AccessQueries
from settlement.adapters.db.registry import RegistryQueries
from settlement.adapters.db.rejections import LoggedRejection, RejectionLog, SamplePolicy
from settlement.adapters.db.tables import (
    TABLE_NAMES,
    U64_OFFSET,
    dec,
    enc,
    migrate,
    schema_revision,
)
from settlement.domain.ingest import (
    BatchState,
    Best,
    Decide,
    DeliveryKey,
    SessionKey,
    SessionState,
    StatefulVerdict,
    Survivor,
)
from settlement.domain.receipts import DeliveryReceipt, Receipt, Rejected, ViewReceipt
from settlement.domain.wire import to_wire
from settlement.errors import SchemaOutdated, StoreError, redact, redact_url

NO_NODE: Final = b""  # node column of a view receipt's rejection-log row


# --- typed inputs and results ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoredReceipt:
    """A best receipt as the epoch close reads it: the full signed receipt and its bucket."""

    bucket: int
    receipt: Receipt


@dataclass(frozen=True, slots=True)
class StoredSession:
    """A session row as operators and tests read it."""

    content_id: bytes
    started_at: int
    last_bucket: int
    quarantined_at: int | None


@dataclass(frozen=True, slots=True)
class QuarantineRecord:
    viewer: bytes
    session_id: bytes
    stored_at: int
    detail: str
    evidence_stored: dict[str, Any] | None  # wire object of the stored receipt it met
    evidence_received: dict[str, Any]  # wire object of the receipt that conflicted


@dataclass(frozen=True, slots=True)
class TableRows:
    table: str
    rows: int


# --- the store ------------------------------------------------------------------------

_RETRIES: Final = 8  # deadlocks between workers are rare and retried with fresh state


class Store(AccessQueries, RegistryQueries, RejectionLog):
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
                    if verdict.accepted:
                        continue
                    # A rejection is logged by its reason code and sampled with its receipt;
                    # a duplicate or stale one by its verdict, never sampled.
                    if type(verdict) is Rejected:
                        reason, detail, raw = verdict.reason.value, verdict.detail, to_wire(r)
                    else:
                        reason, detail, raw = verdict.verdict, "", None
                    node = r.node if type(r) is DeliveryReceipt else NO_NODE
                    logged.append(LoggedRejection(reason, node, bucket, detail, raw))
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

    def session(self, viewer: bytes, session_id: bytes) -> StoredSession | None:
        def fn(cur: Any) -> StoredSession | None:
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
            return StoredSession(bytes(cid), dec(st), last, None if q is None else dec(q))

        return self._run(fn, write=False)

    def row_counts(self) -> list[TableRows]:
        """The rows of each ingest and registry table, in TABLE_NAMES order."""

        def fn(cur: Any) -> list[TableRows]:
            out = []
            for name in TABLE_NAMES:
                cur.execute(f"SELECT COUNT(*) FROM {name}")
                out.append(TableRows(name, cur.fetchone()[0]))
            return out

        return self._run(fn, write=False)

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


# --- opening ---------------------------------------------------------------------------


def _engine(url: str, pool_size: int, sqlite_synchronous: str) -> tuple[sa.Engine, str]:
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise StoreError(
            f"cannot read the database URL {redact_url(url)!r}: give sqlite:///PATH or "
            "postgresql://USER@HOST/DB"
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
    except sa.exc.DBAPIError as error:  # unreachable, refused, no right to create, ...
        engine.dispose()
        raise StoreError(
            redact(f"cannot open the database {redact_url(str(url))!r}: {error.orig}")
        ) from None
    if current != head:
        engine.dispose()
        raise SchemaOutdated(
            f"database schema is at {current or 'nothing'}, the code needs {head}: "
            "run `alembic upgrade head` (or open the store with create=True)"
        )
    if dialect == "sqlite":
        from settlement.adapters.db.sqlite import SqliteStore  # it imports this module

        return SqliteStore(engine)
    from settlement.adapters.db.postgres import PostgresStore

    return PostgresStore(engine)

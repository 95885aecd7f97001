"""The epoch tables and their SQL: closed epochs, allocations, balances, watermarks.

Insert-only: a close adds one epoch row, its allocations, a balance row per account it
paid and a watermark row per key it moved. The current watermark (balance) of a key
(account) is its row of the highest epoch; moving watermarks by UPDATE in place costs
about 14 times more at a million keys. Amounts are uint256: decimal text.

A close reads and writes in one transaction: the registry snapshot and balances through
`CloseReader`, the credit of every key set-based in `SetClose` (temporary tables, the same
SQL on SQLite and PostgreSQL), its rows through `EpochStore.write_close`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy import BigInteger, Boolean, Column, LargeBinary, Text
from sqlmodel import Field, SQLModel

from settlement.adapters.db import (
    U64,
    U64_OFFSET,
    Store,
    bytes_column,
    dec,
    enc,
    pk_bytes,
    pk_int,
)
from settlement.errors import StoreError


class EpochRow(SQLModel, table=True):
    """A closed epoch: its manifest bytes (the published one), root and carried pools."""

    __tablename__ = "epoch"
    epoch: int = pk_int()
    # The close's `now`: conflicts stored before it are in this close's quarantine set.
    close_started: int = Field(sa_column=Column(U64, nullable=False))
    root: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    data_hash: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    cumulative_total: str = Field(sa_column=Column(Text, nullable=False))
    # False: no balance changed, nothing to propose (PROTOCOL 5).
    proposes: bool = Field(sa_column=Column(Boolean, nullable=False))
    carried_node: str = Field(sa_column=Column(Text, nullable=False))
    carried_viewer: str = Field(sa_column=Column(Text, nullable=False))
    carried_creator: str = Field(sa_column=Column(Text, nullable=False))
    manifest: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class AllocationRow(SQLModel, table=True):
    """What one account got from one class's pool in one epoch."""

    __tablename__ = "allocation"
    epoch: int = pk_int()
    account: bytes = pk_bytes()
    cls: str = Field(sa_column=Column("class", Text, primary_key=True))
    amount: str = Field(sa_column=Column(Text, nullable=False))


class BalanceRow(SQLModel, table=True):
    """Cumulative earnings of an account by class after `epoch` (a row per epoch it earned)."""

    __tablename__ = "balance"
    account: bytes = pk_bytes()
    epoch: int = pk_int()
    node: str = Field(sa_column=Column(Text, nullable=False))
    viewer: str = Field(sa_column=Column(Text, nullable=False))
    creator: str = Field(sa_column=Column(Text, nullable=False))


# The watermark tables have no primary key and no index: a close appends every key it moved
# (1.4M rows at a million sessions) and a primary key's index made that insert take twice as
# long. Nothing looks a row up by key: the close reads them all in one sorted pass (the
# current watermark of a key is its maximum, as watermarks never move down), and retention
# deletes a pruned session's rows by a scan. A close writes each key once per epoch.
DELIVERY_WATERMARK: Final = sa.Table(
    "delivery_watermark",
    SQLModel.metadata,
    bytes_column("viewer"),
    bytes_column("session_id"),
    bytes_column("node"),
    Column("epoch", BigInteger, nullable=False),
    Column("bytes_served", U64, nullable=False),
    Column("segments_served", BigInteger, nullable=False),
)
# The clipped watch seconds of a session as moved by the close of `epoch`.
VIEW_WATERMARK: Final = sa.Table(
    "view_watermark",
    SQLModel.metadata,
    bytes_column("viewer"),
    bytes_column("session_id"),
    Column("epoch", BigInteger, nullable=False),
    Column("watch_seconds", BigInteger, nullable=False),
)

# Every table a close writes, by name.
EPOCH_TABLES: Final = (
    EpochRow.__tablename__,
    AllocationRow.__tablename__,
    BalanceRow.__tablename__,
    DELIVERY_WATERMARK.name,
    VIEW_WATERMARK.name,
)

# pg_advisory_lock key held for a whole close: two instances never close at once.
PG_CLOSE_LOCK: Final = 0x5732_4543_4C4F_5345


@dataclass(frozen=True, slots=True)
class StoredEpoch:
    epoch: int
    close_started: int
    root: bytes
    data_hash: bytes
    cumulative_total: int
    proposes: bool
    carried: tuple[int, int, int]  # node, viewer, creator
    manifest: bytes


_EPOCH_COLS = (
    "epoch, close_started, root, data_hash, cumulative_total, proposes, "
    "carried_node, carried_viewer, carried_creator, manifest"
)


def _stored_epoch(row: Any) -> StoredEpoch:
    e, started, root, dh, total, proposes, cn, cv, cc, manifest = row
    return StoredEpoch(
        e,
        dec(started),
        bytes(root),
        bytes(dh),
        int(total),
        bool(proposes),
        (int(cn), int(cv), int(cc)),
        bytes(manifest),
    )


@dataclass(slots=True)
class CloseResult:
    """What one close writes besides the watermarks (SetClose writes those in SQL)."""

    epoch: StoredEpoch
    allocations: list[tuple[bytes, str, int]]  # (account, class, amount)
    # accounts paid this epoch: (account, cumulative node, viewer, creator)
    balances: list[tuple[bytes, int, int, int]]


_LOCKS_GUARD = threading.Lock()
_ENGINE_LOCKS: dict[int, threading.Lock] = {}


class EpochStore:
    """The epoch side of a `Store`: same engine, same transactions discipline."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.engine: sa.Engine = store.engine
        self.dialect = store.dialect
        self._P = "%s" if self.dialect == "postgresql" else "?"
        # One close per engine in this process (with SQLite the only guard besides the
        # write transaction itself).
        with _LOCKS_GUARD:
            self._local = _ENGINE_LOCKS.setdefault(id(self.engine), threading.Lock())

    def _q(self, sql: str) -> str:
        return sql if self._P == "%s" else sql.replace("%s", "?")

    # -- connections -----------------------------------------------------------------------

    @contextmanager
    def connection(self, *, for_close: bool = False) -> Iterator[Any]:
        """A pooled connection. `for_close` on PostgreSQL: with room for the close's temporary
        tables in memory, and discarded afterwards rather than pooled. (temp_buffers can only
        be set before a session's first temporary table; only closes make them, and no
        connection that made one goes back to the pool.)"""
        try:
            conn = self.engine.raw_connection()
        except sa.exc.OperationalError as error:
            raise StoreError(f"cannot connect to the database: {error.orig}") from None
        fresh = for_close and self.dialect == "postgresql"
        try:
            if fresh:
                cur = conn.cursor()
                cur.execute("SET temp_buffers = '512MB'")
                conn.commit()
                cur.close()
            yield conn
        finally:
            if fresh:
                conn.invalidate()
            conn.close()

    @contextmanager
    def transaction(self, conn: Any, *, write: bool, snapshot: bool = False) -> Iterator[Any]:
        """A transaction on `conn`: SQLite BEGIN (IMMEDIATE when writing), PostgreSQL
        REPEATABLE READ when `snapshot` (every read sees one moment)."""
        cur = conn.cursor()
        try:
            if self.dialect == "sqlite":
                cur.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            elif snapshot:
                cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            yield cur
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
        finally:
            cur.close()

    def run(self, fn: Any, *, write: bool = False) -> Any:
        with self.connection() as conn, self.transaction(conn, write=write) as cur:
            return fn(cur)

    @contextmanager
    def close_lock(self, conn: Any, *, wait: bool = True) -> Iterator[bool]:
        """Hold the close lock: a PostgreSQL session advisory lock on `conn` (other
        instances wait, or get False with wait=False); in-process only on SQLite."""
        if self.dialect != "postgresql":
            got = self._local.acquire(blocking=wait)
            try:
                yield got
            finally:
                if got:
                    self._local.release()
            return
        cur = conn.cursor()
        try:
            if wait:
                cur.execute("SELECT pg_advisory_lock(%s)", (PG_CLOSE_LOCK,))
                got = True
            else:
                cur.execute("SELECT pg_try_advisory_lock(%s)", (PG_CLOSE_LOCK,))
                got = bool(cur.fetchone()[0])
            conn.commit()
            try:
                yield got
            finally:
                if got:
                    cur.execute("SELECT pg_advisory_unlock(%s)", (PG_CLOSE_LOCK,))
                    conn.commit()
        finally:
            cur.close()

    # -- reads -----------------------------------------------------------------------------

    def last_closed(self, cur: Any | None = None) -> int:
        def fn(c: Any) -> int:
            c.execute("SELECT MAX(epoch) FROM epoch")
            row = c.fetchone()
            return 0 if row is None or row[0] is None else int(row[0])

        return fn(cur) if cur is not None else self.run(fn)

    def get(self, epoch: int, cur: Any | None = None) -> StoredEpoch | None:
        def fn(c: Any) -> StoredEpoch | None:
            c.execute(self._q(f"SELECT {_EPOCH_COLS} FROM epoch WHERE epoch = %s"), (epoch,))
            row = c.fetchone()
            return None if row is None else _stored_epoch(row)

        return fn(cur) if cur is not None else self.run(fn)

    def list(self, limit: int = 100, before: int | None = None) -> list[StoredEpoch]:
        def fn(c: Any) -> list[StoredEpoch]:
            top = before if before is not None else 2**62
            c.execute(
                self._q(
                    f"SELECT {_EPOCH_COLS} FROM epoch WHERE epoch < %s ORDER BY epoch DESC LIMIT %s"
                ),
                (top, limit),
            )
            return [_stored_epoch(r) for r in c.fetchall()]

        return self.run(fn)

    def allocations(self, epoch: int) -> list[tuple[bytes, str, int]]:
        def fn(c: Any) -> list[tuple[bytes, str, int]]:
            c.execute(
                self._q(
                    'SELECT account, "class", amount FROM allocation WHERE epoch = %s '
                    'ORDER BY account, "class"'
                ),
                (epoch,),
            )
            return [(bytes(a), k, int(v)) for a, k, v in c.fetchall()]

        return self.run(fn)

    def balance(self, account: bytes, at_epoch: int | None = None) -> tuple[int, int, int, int]:
        """(epoch of the row, node, viewer, creator) cumulative after `at_epoch` (latest)."""

        def fn(c: Any) -> tuple[int, int, int, int]:
            top = at_epoch if at_epoch is not None else 2**62
            c.execute(
                self._q(
                    "SELECT epoch, node, viewer, creator FROM balance WHERE account = %s "
                    "AND epoch <= %s ORDER BY epoch DESC LIMIT 1"
                ),
                (account, top),
            )
            row = c.fetchone()
            if row is None:
                return (0, 0, 0, 0)
            return (int(row[0]), int(row[1]), int(row[2]), int(row[3]))

        return self.run(fn)

    def account_allocations(self, account: bytes) -> list[tuple[int, str, int]]:
        def fn(c: Any) -> list[tuple[int, str, int]]:
            c.execute(
                self._q(
                    'SELECT epoch, "class", amount FROM allocation WHERE account = %s '
                    'ORDER BY epoch, "class"'
                ),
                (account,),
            )
            return [(int(e), k, int(v)) for e, k, v in c.fetchall()]

        return self.run(fn)

    # -- the close -------------------------------------------------------------------------

    def reader(self, cur: Any) -> CloseReader:
        return CloseReader(self, cur)

    def prepare_close(
        self,
        epoch: int,
        allocations: list[tuple[bytes, str, int]],
        balances: list[tuple[bytes, int, int, int]],
    ) -> PreparedClose:
        """The allocation and balance rows `write_close` inserts, formatted for this dialect
        (no database access: a close builds them while the database is busy)."""
        n = epoch
        alloc_rows = [(n, a, k, str(v)) for a, k, v in allocations]
        balance_rows = [(a, n, str(x), str(y), str(z)) for a, x, y, z in balances]
        if self.dialect == "postgresql":
            return PreparedClose(self._copy_text(alloc_rows), self._copy_text(balance_rows))
        return PreparedClose(alloc_rows, balance_rows)

    def write_close(
        self, cur: Any, result: CloseResult, prepared: PreparedClose | None = None
    ) -> None:
        """Insert the epoch and everything it moved (the caller's transaction)."""
        e = result.epoch
        cur.execute(
            self._q(
                f"INSERT INTO epoch ({_EPOCH_COLS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            ),
            (
                e.epoch,
                enc(e.close_started),
                e.root,
                e.data_hash,
                str(e.cumulative_total),
                e.proposes,
                *(str(x) for x in e.carried),
                e.manifest,
            ),
        )
        if prepared is None:
            prepared = self.prepare_close(e.epoch, result.allocations, result.balances)
        if self.dialect == "postgresql":
            self._copy(cur, 'allocation (epoch, account, "class", amount)', prepared.allocations)
            self._copy(cur, "balance (account, epoch, node, viewer, creator)", prepared.balances)
            return
        cur.executemany(
            'INSERT INTO allocation (epoch, account, "class", amount) VALUES (?, ?, ?, ?)',
            prepared.allocations,
        )
        cur.executemany(
            "INSERT INTO balance (account, epoch, node, viewer, creator) VALUES (?, ?, ?, ?, ?)",
            prepared.balances,
        )

    @staticmethod
    def _copy_text(rows: list[tuple[Any, ...]]) -> list[bytes]:
        """Rows as COPY FROM STDIN text format in large chunks (bytes as \\x hex)."""

        def field(x: Any) -> str:
            return "\\\\x" + x.hex() if isinstance(x, bytes) else str(x)

        return [
            "".join("\t".join(map(field, r)) + "\n" for r in rows[i : i + 20_000]).encode()
            for i in range(0, len(rows), 20_000)
        ]

    @staticmethod
    def _copy(cur: Any, target: str, chunks: list[bytes]) -> None:
        """COPY FROM STDIN in text format, chunks from `_copy_text`."""
        with cur.copy(f"COPY {target} FROM STDIN") as copy:
            for chunk in chunks:
                copy.write(chunk)


@dataclass(slots=True)
class PreparedClose:
    """`write_close`'s rows: COPY text chunks on PostgreSQL, parameter tuples on SQLite."""

    allocations: list[Any]
    balances: list[Any]


class CloseReader:
    """The inputs of one close, read inside the close's snapshot transaction."""

    def __init__(self, epochs: EpochStore, cur: Any) -> None:
        self.epochs = epochs
        self.cur = cur
        self.dialect = epochs.dialect

    def registry(
        self,
    ) -> tuple[list[tuple[bytes, str, bool]], list[tuple[bytes, bytes]], list[bytes]]:
        """(nodes, content -> creator, viewers), each sorted by key."""
        cur = self.cur
        cur.execute("SELECT address, label, active FROM registry_node ORDER BY address")
        nodes = [(bytes(a), label, bool(active)) for a, label, active in cur.fetchall()]
        cur.execute("SELECT content_id, creator FROM registry_content ORDER BY content_id")
        content = [(bytes(c), bytes(k)) for c, k in cur.fetchall()]
        cur.execute("SELECT address FROM registry_viewer ORDER BY address")
        viewers = [bytes(a) for (a,) in cur.fetchall()]
        return nodes, content, viewers

    def balances(self, before_epoch: int) -> dict[bytes, tuple[int, int, int]]:
        """account -> cumulative (node, viewer, creator) after the closes before `before_epoch`."""
        cur = self.cur
        cur.execute(
            self.epochs._q(
                "SELECT account, node, viewer, creator FROM balance WHERE epoch < %s "
                "ORDER BY account, epoch"
            ),
            (before_epoch,),
        )
        out: dict[bytes, tuple[int, int, int]] = {}
        for a, x, y, z in cur.fetchall():
            out[bytes(a)] = (int(x), int(y), int(z))
        return out

    def quarantine(self, stored_before: int) -> list[tuple[Any, ...]]:
        """The quarantine set of a close starting at `stored_before`, with its evidence.

        The whole set, every epoch: a conflict committed after an earlier close's snapshot
        began, yet stored before its start, is in the next set rather than lost.
        """
        cur = self.cur
        cur.execute(
            self.epochs._q(
                "SELECT viewer, session_id, stored_at, detail, evidence_stored, evidence_received "
                "FROM quarantine WHERE stored_at < %s ORDER BY viewer, session_id"
            ),
            (enc(stored_before),),
        )
        return [(bytes(v), bytes(s), dec(at), d, a, b) for v, s, at, d, a, b in cur.fetchall()]


# --- the set-based close ----------------------------------------------------------------------
#
# PROTOCOL 4 (candidates, watermarks, inclusion, the watch clip) as SQL that runs unchanged on
# SQLite and PostgreSQL, so that the close of a million sessions never walks them in Python
# and an auditor runs this very SQL on the published rows loaded into SQLite. The caps, pools
# and allocation stay in rewards.settle_weights; tests hold this SQL to rewards.settle_rows.

_ZERO = "(-9223372036854775807 - 1)"  # enc(0); a bare -9223372036854775808 is a float in SQLite
_INT64_MAX: Final = 2**63 - 1


def _pg_u64(col: str) -> str:
    """A stored uint64 as decimal text: bigint arithmetic below 2**63, numeric above."""
    return (
        f"(CASE WHEN {col} < 0 THEN ({col} + 9223372036854775807 + 1)::text "
        f"ELSE ({col}::numeric + 9223372036854775808)::text END)"
    )


def _inc(cb: str, cs: str, wb: str, ws: str) -> str:
    """1 iff the candidate is above the watermark: both counters >=, one > (PROTOCOL 4)."""
    return f"CASE WHEN {cb} >= {wb} AND {cs} >= {ws} AND ({cb} > {wb} OR {cs} > {ws}) THEN 1 ELSE 0 END"


_TEMP_TABLES: Final = (
    "close_t",
    "close_ts",
    "close_td",
    "close_tv",
    "close_d",
    "close_v",
    "close_c",
    "close_vt",
    "close_wt",
)


@dataclass(slots=True)
class SetCloseTotals:
    node: dict[bytes, int]
    viewer: dict[bytes, int]
    creator: dict[bytes, int]
    capped_bytes: dict[bytes, dict[bytes, int]]
    capped_watch: dict[bytes, dict[tuple[bytes, bytes], int]]


def _int(x: Any) -> int:
    """An exact integer from either driver (PostgreSQL sums come as Decimal)."""
    if isinstance(x, float):  # SQLite went past 64 bits and fell back to a float
        raise StoreError("a 64-bit sum overflowed in SQLite: close this epoch on PostgreSQL")
    return int(x)


class SetClose:
    """The credit side of one close as temporary tables in the close's transaction."""

    def __init__(self, epochs: EpochStore, cur: Any, epoch: int, now: int, segment_seconds: int):
        self.epochs = epochs
        self.cur = cur
        self.epoch = epoch
        self.now = now
        self.seg = segment_seconds
        self.pg = epochs.dialect == "postgresql"
        self.timings: dict[str, float] = {}

    def _x(self, sql: str, params: tuple = ()) -> Any:
        self.cur.execute(self.epochs._q(sql), params)
        return self.cur

    def _temp(self, name: str, select: str, params: tuple = ()) -> None:
        t = time.perf_counter()
        self._x(f"DROP TABLE IF EXISTS {name}")
        on_commit = " ON COMMIT DROP" if self.pg else ""
        self._x(f"CREATE TEMP TABLE {name}{on_commit} AS {select}", params)
        self.timings[name] = time.perf_counter() - t

    def touched_only(self) -> bool:
        """Whether to read only the sessions touched up to bucket `epoch` since the closes
        before (session_touch), rather than every live session.

        Same result either way: a session no batch touched since the last close that read it
        has the same best receipts of buckets <= epoch as then, none above its watermarks
        (watermarks only move up to a candidate), so no key of it is included and it credits
        nothing. Touched sessions are looked up one by one (`_touched`), cheap when they are
        few (a close after a quiet epoch, or with days of live sessions kept for late
        receipts) and dearer than reading everything in order when they are all of them
        (one epoch's sessions alone, as in the settle bench): below half of the live
        sessions, then.
        """
        touched = self._x(
            "SELECT COUNT(*) FROM session_touch WHERE bucket <= %s", (self.epoch,)
        ).fetchone()[0]
        if self.pg:
            # The planner's estimate is enough to choose by, and free (a count is not, at
            # tens of millions of sessions); -1 means never analyzed.
            live = self._x(
                "SELECT reltuples FROM pg_class WHERE oid = to_regclass('receipt_session')"
            ).fetchone()[0]
            if live is None or live < 0:
                live = self._x("SELECT COUNT(*) FROM receipt_session").fetchone()[0]
        else:
            live = self._x("SELECT COUNT(*) FROM receipt_session").fetchone()[0]
        return 2 * touched < live

    def _touched(self, e: int) -> None:
        """close_t, the sessions touched up to bucket `e`, and their rows of receipt_session,
        delivery_best and view_best (close_ts, close_td, close_tv), found by primary key.

        Lookups, not scans: the stored tables hold every live session (days of them), the
        touched ones are an epoch's worth. Each copy is its own statement, a join of close_t
        with one table, where the planner has nothing to misjudge; nested loops are the only
        join left to it there (close_epoch turns them off for the statements that follow).
        """
        self._temp(
            "close_t",
            "SELECT DISTINCT viewer, session_id FROM session_touch WHERE bucket <= %s",
            (e,),
        )
        if self.pg:
            self._x("ANALYZE close_t")  # its size, for the plans below
            self._x("SET LOCAL enable_nestloop = on")
            self._x("SET LOCAL enable_hashjoin = off")
            self._x("SET LOCAL enable_mergejoin = off")
        join = "JOIN close_t t ON x.viewer = t.viewer AND x.session_id = t.session_id"
        self._temp("close_ts", f"SELECT x.* FROM receipt_session x {join}")
        self._temp("close_td", f"SELECT x.* FROM delivery_best x {join} WHERE x.bucket <= %s", (e,))
        self._temp("close_tv", f"SELECT x.* FROM view_best x {join} WHERE x.bucket <= %s", (e,))
        if self.pg:
            self._x("SET LOCAL enable_nestloop = off")  # as close_epoch has it
            self._x("SET LOCAL enable_hashjoin = DEFAULT")
            self._x("SET LOCAL enable_mergejoin = DEFAULT")
            for name in ("close_ts", "close_td", "close_tv"):
                self._x(f"ANALYZE {name}")

    def build(self, touched_only: bool | None = None) -> None:
        """The temporary tables. close_d, close_v and close_c are stored in key order: the
        watermark INSERTs, the exports, the joins and the aggregate that read them in that
        order then find their input presorted (about 2.8 s less than sorting them each
        time, at 1M sessions).

        `touched_only`: read only the sessions of session_touch (None: `touched_only()`
        decides; tests force each way and compare). Timings then include close_t's.
        """
        e, now_enc = self.epoch, enc(self.now)
        if touched_only is None:
            touched_only = self.touched_only()
        # Where the candidates and their sessions come from: the stored tables, or the rows
        # of the touched sessions copied out of them; and which watermarks are read.
        sessions, best_d, best_v, only = "receipt_session", "delivery_best", "view_best", ""
        if touched_only:
            self._touched(e)
            sessions, best_d, best_v = "close_ts", "close_td", "close_tv"
            only = "AND (viewer, session_id) IN (SELECT viewer, session_id FROM close_t)"
        if self.pg and not touched_only:
            # Merge joins for the candidates: the window's sort already orders them by key,
            # the sessions come in key order from their primary key's index, and the result
            # needs no sort of its own. The planner expects a handful of rows after the window
            # (it cannot see that every key has one best row) and would hash a million
            # receipts, then sort them again: 8.4 s against 4.6 s for close_d at 1M sessions.
            self._x("SET LOCAL enable_hashjoin = off")
        # Candidate of each delivery key among buckets <= e (highest counters; rows of one
        # key never cross, a tie keeps the earliest bucket), with the key's watermark (the
        # row of the latest earlier close that moved it), for sessions not quarantined.
        # Watermarks never move down (componentwise), so a key's watermark, the row of the
        # latest earlier close that moved it, is also its per-counter maximum.
        self._temp(
            "close_d",
            f"""SELECT k.viewer, k.session_id, k.node, k.bucket, k.cb, k.cs, k.issued_at,
                k.signature, s.content_id, s.started_at,
                COALESCE(w.wb, {_ZERO}) AS wb, COALESCE(w.ws, 0) AS ws,
                {_inc("k.cb", "k.cs", f"COALESCE(w.wb, {_ZERO})", "COALESCE(w.ws, 0)")} AS inc
            FROM (SELECT d.viewer, d.session_id, d.node, d.bucket, d.bytes_served AS cb,
                    d.segments_served AS cs, d.issued_at, d.signature,
                    ROW_NUMBER() OVER (PARTITION BY d.viewer, d.session_id, d.node
                        ORDER BY d.bytes_served DESC, d.segments_served DESC, d.bucket) AS rn
                  FROM {best_d} d WHERE d.bucket <= %s) k
            JOIN {sessions} s ON s.viewer = k.viewer AND s.session_id = k.session_id
            LEFT JOIN (SELECT viewer, session_id, node, MAX(bytes_served) AS wb,
                    MAX(segments_served) AS ws FROM delivery_watermark WHERE epoch < %s
                    {only} GROUP BY viewer, session_id, node) w
                ON w.viewer = k.viewer AND w.session_id = k.session_id AND w.node = k.node
            WHERE k.rn = 1 AND (s.quarantined_at IS NULL OR s.quarantined_at >= %s)
            ORDER BY k.viewer, k.session_id, k.node""",
            (e, e, now_enc),
        )
        self._temp(
            "close_v",
            f"""SELECT k.viewer, k.session_id, k.bucket, k.vc, k.issued_at, k.signature,
                s.content_id, s.started_at, COALESCE(w.vw, 0) AS vw,
                CASE WHEN k.vc > COALESCE(w.vw, 0) THEN 1 ELSE 0 END AS v_inc
            FROM (SELECT v.viewer, v.session_id, v.bucket, v.watch_seconds AS vc, v.issued_at,
                    v.signature,
                    ROW_NUMBER() OVER (PARTITION BY v.viewer, v.session_id
                        ORDER BY v.watch_seconds DESC, v.bucket) AS rn
                  FROM {best_v} v WHERE v.bucket <= %s) k
            JOIN {sessions} s ON s.viewer = k.viewer AND s.session_id = k.session_id
            LEFT JOIN (SELECT viewer, session_id, MAX(watch_seconds) AS vw FROM view_watermark
                    WHERE epoch < %s {only} GROUP BY viewer, session_id) w
                ON w.viewer = k.viewer AND w.session_id = k.session_id
            WHERE k.rn = 1 AND (s.quarantined_at IS NULL OR s.quarantined_at >= %s)
            ORDER BY k.viewer, k.session_id""",
            (e, e, now_enc),
        )
        if self.pg and not touched_only:
            self._x("SET LOCAL enable_hashjoin = DEFAULT")
        if self.pg:
            # Both inputs are stored in key order: a sorted aggregate finds them presorted
            # and gives close_c its order, where hashing would need a 400 MB table at 1M
            # sessions and a sort after it (0.75 s less here).
            self._x("SET LOCAL enable_hashagg = off")
        # Sessions with an included key: the delivered segments after this close, and the
        # watch clip: watch_cum = the view candidate, else the view watermark; clipped =
        # min(watch_cum, segment_seconds * segments); credit = max(0, clipped - watermark).
        seg = int(self.seg)
        self._temp(
            "close_c",
            f"""SELECT x.viewer, x.session_id, x.content_id, x.vw, x.clipped,
                CASE WHEN x.clipped > x.vw THEN x.clipped - x.vw ELSE 0 END AS credit
            FROM (SELECT viewer, session_id, content_id, vw,
                    CASE WHEN COALESCE(vc, vw) < {seg} * segs THEN COALESCE(vc, vw)
                         ELSE {seg} * segs END AS clipped
                  FROM (SELECT a.viewer, a.session_id, a.content_id,
                            CAST(SUM(a.segs) AS BIGINT) AS segs, MAX(a.vc) AS vc,
                            MAX(a.vw) AS vw
                        FROM (SELECT viewer, session_id, content_id, inc AS d_inc,
                                CASE WHEN inc = 1 THEN cs ELSE ws END AS segs,
                                CAST(NULL AS BIGINT) AS vc, 0 AS vw, 0 AS v_inc FROM close_d
                              UNION ALL
                              SELECT viewer, session_id, content_id, 0, 0, vc, vw, v_inc
                              FROM close_v) a
                        GROUP BY a.viewer, a.session_id, a.content_id
                        HAVING SUM(a.d_inc) > 0 OR MAX(a.v_inc) = 1) s) x
            ORDER BY x.viewer, x.session_id""",
        )
        if self.pg:
            self._x("SET LOCAL enable_hashagg = DEFAULT")
        self._temp(
            "close_vt",
            """SELECT viewer, SUM(cb - wb) AS t FROM close_d WHERE inc = 1 AND cb > wb
            GROUP BY viewer""",
        )
        self._temp(
            "close_wt",
            "SELECT viewer, SUM(credit) AS t FROM close_c WHERE credit > 0 GROUP BY viewer",
        )

    def totals(self, max_bytes_per_viewer: int, max_watch_seconds: int) -> SetCloseTotals:
        """Weights of viewers under both caps, summed here; the others in full for Python."""
        # Beyond int64 no SQLite sum can reach: those viewers go to Python, which re-checks.
        bcap = min(max_bytes_per_viewer, _INT64_MAX)
        wcap = min(max_watch_seconds, _INT64_MAX)
        none_capped = "SELECT COUNT(*) FROM {} WHERE t > %s"
        bytes_capped = self._x(none_capped.format("close_vt"), (bcap,)).fetchone()[0] > 0
        # With no viewer above the bytes cap the join with the per-viewer totals is moot.
        join = "JOIN close_vt t ON t.viewer = d.viewer AND t.t <= %s " if bytes_capped else ""
        node = {
            bytes(n): _int(b)
            for n, b in self._x(
                f"SELECT d.node, SUM(d.cb - d.wb) FROM close_d d {join}"
                "WHERE d.inc = 1 AND d.cb > d.wb GROUP BY d.node",
                (bcap,) if bytes_capped else (),
            ).fetchall()
        }
        capped_bytes: dict[bytes, dict[bytes, int]] = {}
        if bytes_capped:
            for v, n, b in self._x(
                "SELECT d.viewer, d.node, SUM(d.cb - d.wb) FROM close_d d JOIN close_vt t "
                "ON t.viewer = d.viewer WHERE d.inc = 1 AND d.cb > d.wb AND t.t > %s "
                "GROUP BY d.viewer, d.node",
                (bcap,),
            ).fetchall():
                capped_bytes.setdefault(bytes(v), {})[bytes(n)] = _int(b)
        viewer = {
            bytes(v): _int(t)
            for v, t in self._x("SELECT viewer, t FROM close_wt WHERE t <= %s", (wcap,)).fetchall()
        }
        watch_capped = self._x(none_capped.format("close_wt"), (wcap,)).fetchone()[0] > 0
        join = "JOIN close_wt t ON t.viewer = c.viewer AND t.t <= %s " if watch_capped else ""
        creator = {
            bytes(c): _int(t)
            for c, t in self._x(
                f"SELECT rc.creator, SUM(c.credit) FROM close_c c {join}"
                "JOIN registry_content rc ON rc.content_id = c.content_id "
                "WHERE c.credit > 0 AND rc.creator <> c.viewer GROUP BY rc.creator",
                (wcap,) if watch_capped else (),
            ).fetchall()
        }
        capped_watch: dict[bytes, dict[tuple[bytes, bytes], int]] = {}
        if watch_capped:
            for v, cid, sid, credit in self._x(
                "SELECT c.viewer, c.content_id, c.session_id, c.credit FROM close_c c "
                "JOIN close_wt t ON t.viewer = c.viewer WHERE t.t > %s AND c.credit > 0",
                (wcap,),
            ).fetchall():
                capped_watch.setdefault(bytes(v), {})[(bytes(cid), bytes(sid))] = _int(credit)
        return SetCloseTotals(node, viewer, creator, capped_bytes, capped_watch)

    def drop(self) -> None:
        """SQLite keeps temporary tables for the connection's life (PostgreSQL drops at commit)."""
        if not self.pg:
            for name in _TEMP_TABLES:
                self._x(f"DROP TABLE IF EXISTS {name}")

    def write_watermarks(self) -> None:
        """The keys this close moved, as rows of this epoch (insert-only); and the touches it
        consumed.

        No ORDER BY: the row order changes nothing stored, and close_d and close_c are
        written in key order (build), so a scan of them already appends the epoch's rows
        at the end of the primary key's index in order, without sorting them once more.
        """
        e = self.epoch
        self._x(
            "INSERT INTO delivery_watermark (viewer, session_id, node, epoch, bytes_served, "
            "segments_served) SELECT viewer, session_id, node, %s, cb, cs FROM close_d "
            "WHERE inc = 1",
            (e,),
        )
        self._x(
            "INSERT INTO view_watermark (viewer, session_id, epoch, watch_seconds) "
            "SELECT viewer, session_id, %s, clipped FROM close_c WHERE clipped > vw",
            (e,),
        )
        # Only the rows this close's snapshot saw go (PostgreSQL's REPEATABLE READ; SQLite's
        # close holds the write lock): a batch that commits meanwhile keeps its rows for the
        # next close, which reads its sessions then.
        self._x("DELETE FROM session_touch WHERE bucket <= %s", (e,))

    # -- published rows, in their files' order -------------------------------------------

    _PUBLISH: Final = {
        "delivery_receipts": (
            "SELECT viewer, session_id, node, content_id, started_at, cb, cs, issued_at, "
            "signature, bucket FROM close_d WHERE inc = 1 ORDER BY viewer, session_id, node"
        ),
        "view_receipts": (
            "SELECT viewer, session_id, content_id, started_at, vc, issued_at, signature, bucket "
            "FROM close_v WHERE v_inc = 1 ORDER BY viewer, session_id"
        ),
        "delivery_watermarks": (
            "SELECT d.viewer, d.session_id, d.node, d.wb, d.ws FROM close_d d JOIN close_c s "
            f"ON s.viewer = d.viewer AND s.session_id = d.session_id WHERE d.wb <> {_ZERO} "
            "OR d.ws <> 0 ORDER BY d.viewer, d.session_id, d.node"
        ),
        "view_watermarks": (
            "SELECT viewer, session_id, vw FROM close_c WHERE vw > 0 ORDER BY viewer, session_id"
        ),
    }
    # PostgreSQL formats the big files itself (COPY ... TO STDOUT), byte for byte as
    # publish.*_line do: hex lowercase, uint64 decoded, keys sorted.
    # (key, column, kind): h = bytes as 0x hex, u = stored uint64, "" = integer.
    _PG_LINES: Final = {
        "delivery_receipts": (
            ("bucket", "bucket", ""), ("bytesServed", "cb", "u"),
            ("contentId", "content_id", "h"), ("issuedAt", "issued_at", "u"),
            ("node", "node", "h"), ("segmentsServed", "cs", ""),
            ("sessionId", "session_id", "h"), ("signature", "signature", "h"),
            ("startedAt", "started_at", "u"), ("viewer", "viewer", "h"),
        ),
        "view_receipts": (
            ("bucket", "bucket", ""), ("contentId", "content_id", "h"),
            ("issuedAt", "issued_at", "u"), ("sessionId", "session_id", "h"),
            ("signature", "signature", "h"), ("startedAt", "started_at", "u"),
            ("viewer", "viewer", "h"), ("watchSeconds", "vc", ""),
        ),
        "delivery_watermarks": (
            ("bytesServed", "d.wb", "u"), ("node", "d.node", "h"),
            ("segmentsServed", "d.ws", ""), ("sessionId", "d.session_id", "h"),
            ("viewer", "d.viewer", "h"),
        ),
        "view_watermarks": (
            ("sessionId", "session_id", "h"), ("viewer", "viewer", "h"),
            ("watchSeconds", "vw", ""),
        ),
    }  # fmt: skip

    @staticmethod
    def _pg_line(fields: tuple[tuple[str, str, str], ...]) -> str:
        """Columns c0, c1, ... joined into the canonical line, as publish.*_line.

        With || and explicit casts rather than concat(), which looks up each argument's
        output function again on every row: 7.3 s against 6.5 s for the delivery receipts
        of a million sessions. (No column is NULL, which || would spread.)
        """
        parts: list[str] = []
        for i, (key, _, kind) in enumerate(fields):
            # The quote that closes the previous value opens this key's part.
            head = ("{" if i == 0 else '",') + f'"{key}":"' + ("0x" if kind == "h" else "")
            parts.append(f"'{head}'")
            col = f"c{i}"
            if kind == "h":
                parts.append(f"encode({col}, 'hex')")
            elif kind == "u":
                parts.append(_pg_u64(col))
            else:
                parts.append(f"{col}::text")
        parts.append("'\"}'")
        return " || ".join(parts)

    def publish_rows(self, name: str, batch: int = 50_000) -> Iterator[tuple[Any, ...]]:
        """Rows of a big file, uint64 columns decoded (SQLite and tests)."""
        sql = self._PUBLISH[name]
        cur = self._x(sql)
        u64 = {
            "delivery_receipts": (4, 5, 7),
            "view_receipts": (3, 5),
            "delivery_watermarks": (3,),
            "view_watermarks": (),
        }[name]
        while True:
            rows = cur.fetchmany(batch)
            if not rows:
                return
            for row in rows:
                row = [bytes(x) if isinstance(x, memoryview) else x for x in row]
                for i in u64:
                    row[i] = row[i] + U64_OFFSET
                yield tuple(row)

    def copy_lines(self, name: str) -> Iterator[bytes]:
        """PostgreSQL only: the file's lines as COPY chunks (one line per row, \\n-ended).

        The rows are sorted before the lines are built: the sort moves columns, not lines.
        """
        fields = self._PG_LINES[name]
        body, _, order = self._PUBLISH[name].partition(" ORDER BY ")
        _, _, source = body.partition(" FROM ")
        cols = ", ".join(f"{col} AS c{i}" for i, (_, col, _) in enumerate(fields))
        query = (
            f"SELECT {self._pg_line(fields)} FROM "
            f"(SELECT {cols} FROM {source} ORDER BY {order}) AS sorted_rows"
        )
        # The outer query only projects: it keeps the order of the sorted subquery (and the
        # test that SQLite and PostgreSQL publish the same bytes would see otherwise).
        with self.cur.copy(f"COPY ({query}) TO STDOUT") as copy:
            for chunk in copy:
                yield bytes(chunk)

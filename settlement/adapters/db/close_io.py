"""The close's one door to the database: its reads into columns (string_agg blocks over
three connections in one exported snapshot on PostgreSQL, rows on SQLite), its writes
(watermarks by binary COPY, allocations and balances by text COPY) and its planner settings.

Everything here is about moving rows fast; no rule is in it. `services.close` drives it and
credits what it reads with `domain.credit`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import sqlalchemy as sa

from settlement.adapters.db.epochs import EpochStore, copy_in, copy_text
from settlement.adapters.db.store import U64_OFFSET, enc
from settlement.domain.columns import Cols, as_bytes
from settlement.domain.credit import CloseCredit
from settlement.errors import StoreError

# A close's planner settings (PostgreSQL, its transaction's): its reads join on (viewer,
# sessionId) pairs, which the planner misjudges: it would rescan the watermark tables per
# touched session in nested loops (SetClose turns them on for primary key lookups only).
# 512MB: the hash of the touched sessions stays in memory. JIT compiling costs more than it
# saves here.
CLOSE_SETTINGS: Final = (
    "SET LOCAL work_mem = '512MB'",
    "SET LOCAL enable_nestloop = off",
    "SET LOCAL jit = off",
)


def begin_close(epochs: EpochStore, cur: Any) -> None:
    """The close's planner settings on its own transaction (PostgreSQL)."""
    if epochs.dialect == "postgresql":
        for setting in CLOSE_SETTINGS:
            cur.execute(setting)


@contextmanager
def snapshot_cursors(epochs: EpochStore, cur: Any, n: int) -> Iterator[list[Any]]:
    """PostgreSQL: cursors on `n` more connections, each in a transaction that sees the
    snapshot of `cur`'s (REPEATABLE READ, exported), with the close's planner settings;
    rolled back and discarded afterwards (their temporary tables go with them)."""
    cur.execute("SELECT pg_export_snapshot()")
    (snapshot,) = cur.fetchone()
    opened: list[tuple[Any, Any]] = []
    try:
        for _ in range(n):
            try:
                conn = epochs.engine.raw_connection()
            except sa.exc.OperationalError as error:
                raise StoreError(f"cannot connect to the database: {error.orig}") from None
            c = conn.cursor()
            opened.append((conn, c))
            c.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            # A utility statement takes no parameters; the id is hex digits and dashes.
            if not set(snapshot) <= set("0123456789ABCDEFabcdef-"):
                raise StoreError(f"unexpected snapshot id {snapshot!r}")
            c.execute(f"SET TRANSACTION SNAPSHOT '{snapshot}'")
            for setting in CLOSE_SETTINGS:
                c.execute(setting)
        yield [c for _, c in opened]
    finally:
        for conn, c in opened:
            try:
                conn.rollback()
                c.close()
            finally:
                conn.invalidate()
                conn.close()


# --- the epoch's allocation and balance rows ----------------------------------------------------


@dataclass(slots=True)
class PreparedClose:
    """`write_rows`' rows: COPY text chunks on PostgreSQL, parameter tuples on SQLite."""

    allocations: list[Any]
    balances: list[Any]


def prepare_rows(
    epochs: EpochStore,
    epoch: int,
    allocations: list[tuple[bytes, str, int]],
    balances: list[tuple[bytes, int, int, int]],
) -> PreparedClose:
    """The allocation and balance rows `write_rows` inserts, formatted for this dialect
    (no database access: a close builds them while the database is busy)."""
    n = epoch
    alloc_rows = [(n, a, k, str(v)) for a, k, v in allocations]
    balance_rows = [(a, n, str(x), str(y), str(z)) for a, x, y, z in balances]
    if epochs.dialect == "postgresql":
        return PreparedClose(copy_text(alloc_rows), copy_text(balance_rows))
    return PreparedClose(alloc_rows, balance_rows)


def write_rows(epochs: EpochStore, cur: Any, prepared: PreparedClose) -> None:
    """The epoch's allocation and balance rows (the caller's transaction; they count only
    with the epoch row, which `write_epoch` adds in the same transaction)."""
    if epochs.dialect == "postgresql":
        copy_in(cur, 'allocation (epoch, account, "class", amount)', prepared.allocations)
        copy_in(cur, "balance (account, epoch, node, viewer, creator)", prepared.balances)
        return
    cur.executemany(
        'INSERT INTO allocation (epoch, account, "class", amount) VALUES (?, ?, ?, ?)',
        prepared.allocations,
    )
    cur.executemany(
        "INSERT INTO balance (account, epoch, node, viewer, creator) VALUES (?, ?, ?, ?, ?)",
        prepared.balances,
    )


# --- the columnar close -----------------------------------------------------------------------
#
# A close reads the stored rows it needs into columns (PostgreSQL: blocks of string_agg'd
# values over three connections in one snapshot; SQLite: rows), credits them with
# `domain.credit` (PROTOCOL 4, numpy, the code the auditor runs too) and writes the
# watermarks it moved back (binary COPY, or executemany). The statements only select rows;
# no rule is in SQL.

_HIGH: Final = np.uint64(U64_OFFSET)  # stored uint64 -> value: flip the top bit
_NOT_QUARANTINED: Final = enc(2**64 - 1)  # domain.credit's "never"
_PGCOPY: Final = b"PGCOPY\n\xff\r\n\x00"
_MARK_CHUNK: Final = 131_072  # watermark rows a binary COPY record block holds

# Columns a close reads or writes: (name, kind); kind: byte width, "u" a stored uint64,
# "i" a non-negative BIGINT. Both come out as numpy uint64.
Layout = tuple[tuple[str, int | str], ...]
_DELIVERIES: Final[Layout] = (
    ("viewer", 20), ("session_id", 32), ("node", 20), ("bucket", "i"), ("bytes_served", "u"),
    ("segments", "i"), ("issued_at", "u"), ("signature", 65),
)  # fmt: skip
_VIEWS: Final[Layout] = (
    ("viewer", 20), ("session_id", 32), ("bucket", "i"), ("watch_seconds", "i"),
    ("issued_at", "u"), ("signature", 65),
)  # fmt: skip
_SESSIONS: Final[Layout] = (
    ("viewer", 20), ("session_id", 32), ("content_id", 32), ("started_at", "u"),
    ("quarantined_at", "u"),
)  # fmt: skip
_DELIVERY_MARKS: Final[Layout] = (
    ("viewer", 20), ("session_id", 32), ("node", 20), ("bytes_served", "u"), ("segments", "i"),
)  # fmt: skip
_VIEW_MARKS: Final[Layout] = (
    ("viewer", 20), ("session_id", 32), ("watch_seconds", "i"), ("credited", "i"),
)  # fmt: skip


def _record(layout: Layout) -> np.dtype:
    """One row of a binary COPY whose fields are all present and of fixed size."""
    fields: list[tuple[str, str]] = [("n_fields", ">i2")]
    for name, kind in layout:
        fields += [(f"{name}.len", ">i4"), (name, ">i8" if isinstance(kind, str) else f"V{kind}")]
    return np.dtype(fields)


def _from_blocks(n: int, batches: Iterator[list[tuple[Any, ...]]], layout: Layout) -> Cols:
    """`n` rows of columns from `SetClose._read`'s blocks (per block, each column's values
    concatenated), copied into place batch by batch."""
    cols = [
        np.empty(n, ">i8") if isinstance(k, str) else np.empty((n, k), np.uint8) for _, k in layout
    ]
    at = 0
    for batch in batches:
        for block in batch:
            rows = len(block[0]) // _width(layout[0][1])
            if at + rows > n:
                raise StoreError("the close's reads disagree on a table's size")
            for col, value, (name, kind) in zip(cols, block, layout, strict=True):
                if len(value) != rows * _width(kind):
                    raise StoreError(f"a stored {name} is not {_width(kind)} bytes long")
                flat = col.reshape(-1).view(np.uint8)
                flat[at * _width(kind) : (at + rows) * _width(kind)] = np.frombuffer(
                    value, np.uint8
                )
            at += rows
    if at != n:
        raise StoreError("the close's reads disagree on a table's size")
    out = Cols()
    for col, (name, kind) in zip(cols, layout, strict=True):
        if kind == "u":
            out[name] = col.astype(np.int64).view(np.uint64) ^ _HIGH
        elif kind == "i":
            out[name] = col.astype(np.uint64)
        else:
            out[name] = col
    return out


def _width(kind: int | str) -> int:
    return 8 if isinstance(kind, str) else kind


def _from_rows(rows: list[tuple[Any, ...]], layout: Layout) -> Cols:
    n = len(rows)
    out = Cols()
    for i, (name, kind) in enumerate(layout):
        if isinstance(kind, str):
            ints = np.fromiter((r[i] for r in rows), np.int64, n)
            out[name] = ints.view(np.uint64) ^ _HIGH if kind == "u" else ints.astype(np.uint64)
            continue
        raw = b"".join(r[i] for r in rows)
        if len(raw) != n * kind:
            raise StoreError(f"a stored {name} is not {kind} bytes long")
        out[name] = np.frombuffer(raw, np.uint8).reshape(n, kind)
    return out


def _to_records(cols: Cols, layout: Layout) -> bytes:
    """Rows as binary COPY records (without the header and trailer)."""
    n = len(cols)
    rec = np.empty(n, _record(layout))
    rec["n_fields"] = len(layout)
    for name, kind in layout:
        col = cols[name]
        if isinstance(kind, str):
            rec[f"{name}.len"] = 8
            rec[name] = (col ^ _HIGH).view(np.int64) if kind == "u" else col.astype(np.int64)
        else:
            rec[f"{name}.len"] = kind
            rec[name] = np.ascontiguousarray(col).view(f"V{kind}").reshape(n)
    return rec.tobytes()


def _to_rows(cols: Cols, layout: Layout) -> list[tuple[Any, ...]]:
    out: list[list[Any]] = []
    for name, kind in layout:
        col = cols[name]
        if kind == "u":
            out.append((col ^ _HIGH).view(np.int64).tolist())
        elif kind == "i":
            out.append(col.astype(np.int64).tolist())
        else:
            out.append(as_bytes(col))
    return list(zip(*out, strict=True))


def close_reads(e: int, touched_only: bool) -> dict[str, tuple[tuple[str, ...], str, Layout, bool]]:
    """What the close of epoch `e` reads, by table: (columns, source, layout, by primary key).
    `touched_only`: the sessions of close_t (`SetClose._touched`) only."""
    join, only = "", ""
    if touched_only:
        join = "JOIN close_t t ON x.viewer = t.viewer AND x.session_id = t.session_id"
        only = "AND (x.viewer, x.session_id) IN (SELECT viewer, session_id FROM close_t)"
    # name: (columns, source, layout, by primary key): the stored tables of live sessions,
    # then the watermark tables (scanned: they have no index).
    return {
        "deliveries": (
            ("x.viewer", "x.session_id", "x.node", "x.bucket", "x.bytes_served",
             "x.segments_served", "x.issued_at", "x.signature"),
            f"delivery_best x {join} WHERE x.bucket <= {e}",
            _DELIVERIES,
            touched_only,
        ),
        "views": (
            ("x.viewer", "x.session_id", "x.bucket", "x.watch_seconds", "x.issued_at",
             "x.signature"),
            f"view_best x {join} WHERE x.bucket <= {e}",
            _VIEWS,
            touched_only,
        ),
        "sessions": (
            ("x.viewer", "x.session_id", "x.content_id", "x.started_at",
             f"COALESCE(x.quarantined_at, {_NOT_QUARANTINED})"),
            f"receipt_session x {join}",
            _SESSIONS,
            touched_only,
        ),
        "delivery_marks": (
            ("x.viewer", "x.session_id", "x.node", "x.bytes_served", "x.segments_served"),
            f"delivery_watermark x WHERE x.epoch < {e} {only}",
            _DELIVERY_MARKS,
            False,
        ),
        "view_marks": (
            ("x.viewer", "x.session_id", "x.watch_seconds", "x.credited"),
            f"view_watermark x WHERE x.epoch < {e} {only}",
            _VIEW_MARKS,
            False,
        ),
    }  # fmt: skip


# The close's credit over its tables, each given as a function that waits for it (a read
# still under way): the service's, which runs `domain.credit` on them as they come.
Tables = dict[str, Callable[[], Cols]]
CreditFn = Callable[[Tables], CloseCredit]


class SetClose:
    """The credit side of one close: its stored rows as columns, credited by `credit` (the
    tables by name: deliveries, views, sessions, delivery_marks, view_marks)."""

    def __init__(self, epochs: EpochStore, cur: Any, epoch: int, credit: CreditFn) -> None:
        self.epochs = epochs
        self.cur = cur
        self.epoch = epoch
        self.credit_fn = credit
        self.pg = epochs.dialect == "postgresql"
        self.timings: dict[str, float] = {}
        self.credit: CloseCredit | None = None

    def _x(self, sql: str, params: tuple = (), cur: Any = None) -> Any:
        cur = self.cur if cur is None else cur
        cur.execute(self.epochs._q(sql), params)
        return cur

    def _read(
        self, cur: Any, name: str, exprs: tuple[str, ...], source: str, layout: Layout
    ) -> Cols:
        """The columns `exprs` (in `layout`'s order, none NULL) of `source` (FROM ...).

        PostgreSQL hands each column over in blocks, the values of a few thousand rows
        concatenated by string_agg (integers as 8 big-endian bytes): a few hundred result
        rows where a row-by-row COPY would cost Python a call per row, and the values of each
        column land side by side, ready for numpy. All aggregates of one group see its rows
        in the same order, so the columns stay aligned.
        """
        t = time.perf_counter()
        if self.pg:
            aggs = ", ".join(
                f"string_agg({f'int8send({e})' if isinstance(k, str) else e}, ''::bytea)"
                for e, (_, k) in zip(exprs, layout, strict=True)
            )
            # Groups by the first byte of the session id: 256 blocks of about 1 MB a column
            # at a million sessions.
            # The columns are allocated once, at their size, and filled a few blocks at a
            # time from a server-side cursor: the client never holds the whole result twice.
            (n,) = self._x(f"SELECT COUNT(*) FROM {source}", cur=cur).fetchone()
            with cur.connection.cursor(name=f"close_{name}") as blocks:
                blocks.execute(
                    f"SELECT {aggs} FROM {source} GROUP BY get_byte(x.session_id, 0)",
                    binary=True,
                )
                cols = _from_blocks(n, iter(lambda: blocks.fetchmany(16), []), layout)
        else:
            select = f"SELECT {', '.join(exprs)} FROM {source}"
            cols = _from_rows(self._x(select, cur=cur).fetchall(), layout)
        self.timings[f"read_{name}"] = time.perf_counter() - t
        return cols

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

    def _touched(self, e: int, cur: Any) -> None:
        """close_t: the sessions touched up to bucket `e`, which the reads then join by
        primary key. Nested loops are the only join left to the planner there: the stored
        tables hold every live session (days of them), the touched ones an epoch's worth."""
        self._x("DROP TABLE IF EXISTS close_t", cur=cur)
        on_commit = " ON COMMIT DROP" if self.pg else ""
        self._x(
            f"CREATE TEMP TABLE close_t{on_commit} AS "
            "SELECT DISTINCT viewer, session_id FROM session_touch WHERE bucket <= %s",
            (e,),
            cur,
        )
        if self.pg:
            self._x("ANALYZE close_t", cur=cur)  # its size, for the plans below

    def _lookups(self, cur: Any, on: bool) -> None:
        """PostgreSQL: only nested loops (primary key lookups) for the touched sessions'
        reads of the stored tables (`on`), else as close_epoch has it."""
        if self.pg:
            self._x(f"SET LOCAL enable_nestloop = {'on' if on else 'off'}", cur=cur)
            self._x(f"SET LOCAL enable_hashjoin = {'off' if on else 'DEFAULT'}", cur=cur)
            self._x(f"SET LOCAL enable_mergejoin = {'off' if on else 'DEFAULT'}", cur=cur)

    def build(self, touched_only: bool | None = None) -> None:
        """Read the close's rows and credit them (`self.credit`).

        `touched_only`: read only the sessions of session_touch (None: `touched_only()`
        decides; tests force each way and compare). On PostgreSQL the tables are read at
        once over three connections in this transaction's snapshot (exported to them).
        """
        e = int(self.epoch)
        if touched_only is None:
            touched_only = self.touched_only()
        reads = close_reads(e, touched_only)
        # Which connection reads what, about a third of the work each (more connections than
        # cores gained nothing). SQLite reads all on its one connection.
        plan: tuple[tuple[str, ...], ...] = (
            ("deliveries",),
            ("views", "view_marks"),
            ("sessions", "delivery_marks"),
        )
        if not self.pg:
            plan = (tuple(reads),)
        # Each table as soon as it is read: the credit starts on the first while the others
        # are still coming (the credit function takes functions that wait for them).
        tables: dict[str, Future[Cols]] = {name: Future() for name in reads}

        def run(at: int, cur: Any, names: tuple[str, ...]) -> None:
            try:
                if touched_only:
                    t = time.perf_counter()
                    self._touched(e, cur)
                    self.timings[f"touched_{at}"] = time.perf_counter() - t
                if self.pg:
                    # Blocks by hashing (256 groups): a sort would move every row once more.
                    self._x("SET LOCAL enable_sort = off", cur=cur)
                for name in names:
                    exprs, source, layout, lookups = reads[name]
                    self._lookups(cur, lookups)
                    tables[name].set_result(self._read(cur, name, exprs, source, layout))
                self._lookups(cur, False)
                if self.pg:
                    self._x("SET LOCAL enable_sort = DEFAULT", cur=cur)
            except BaseException as error:
                for name in names:  # nothing may wait for a table that will never come
                    if not tables[name].done():
                        tables[name].set_exception(error)
                raise

        def credit() -> None:
            t = time.perf_counter()
            self.credit = self.credit_fn({name: table.result for name, table in tables.items()})
            self.timings["credit"] = time.perf_counter() - t

        if not self.pg:
            run(0, self.cur, plan[0])
            credit()
            return
        with (
            snapshot_cursors(self.epochs, self.cur, len(plan) - 1) as others,
            ThreadPoolExecutor(len(plan), thread_name_prefix="close-read") as pool,
        ):
            futures = [
                pool.submit(run, at, cur, names)
                for at, (cur, names) in enumerate(zip((self.cur, *others), plan, strict=True))
            ]
            try:
                credit()
            finally:
                wait(futures)
            for future in futures:
                future.result()

    def read_floor(self, touched_only: bool) -> int:
        """The settle bench's floor under `build`'s reads: the same rows out of the store
        (PostgreSQL: binary COPY; SQLite: fetched) to nothing, on this one connection.
        Returns the bytes (PostgreSQL) or rows (SQLite) read."""
        e = int(self.epoch)
        if touched_only:
            self._touched(e, self.cur)
        total = 0
        for exprs, source, _, lookups in close_reads(e, touched_only).values():
            select = f"SELECT {', '.join(exprs)} FROM {source}"
            self._lookups(self.cur, lookups)
            if self.pg:
                with self.cur.copy(f"COPY ({select}) TO STDOUT (FORMAT BINARY)") as copy:
                    for block in copy:
                        total += len(block)
            else:
                self._x(select)
                while rows := self.cur.fetchmany(65_536):
                    total += len(rows)
        return total

    def _credited(self) -> CloseCredit:
        if self.credit is None:
            raise RuntimeError("SetClose.build() first")
        return self.credit

    def drop(self) -> None:
        """SQLite keeps temporary tables for the connection's life (PostgreSQL drops at commit)."""
        if not self.pg:
            self._x("DROP TABLE IF EXISTS close_t")

    def write_watermarks(self) -> None:
        """The keys this close moved, as rows of this epoch (insert-only); and the touches it
        consumed."""
        c = self._credited()
        e = self.epoch
        for table, rows, layout in (
            (
                "delivery_watermark (viewer, session_id, node, bytes_served, segments_served, "
                "epoch)",
                c.delivery_watermarks(),
                (*_DELIVERY_MARKS, ("epoch", "i")),
            ),
            (
                "view_watermark (viewer, session_id, watch_seconds, credited, epoch)",
                c.view_watermarks(),
                (*_VIEW_MARKS, ("epoch", "i")),
            ),
        ):
            if not rows.n:
                continue
            # A chunk of rows at a time: gathered, then sent (PostgreSQL parses one chunk of
            # binary COPY records while the next is built).
            chunks = (
                part.with_(epoch=np.full(len(part), e, np.uint64))
                for part in rows.chunks(_MARK_CHUNK)
            )
            if self.pg:
                with self.cur.copy(f"COPY {table} FROM STDIN (FORMAT BINARY)") as copy:
                    copy.write(_PGCOPY + b"\x00" * 8)
                    for part in chunks:
                        copy.write(_to_records(part, layout))
                    copy.write(b"\xff\xff")
            else:
                marks = ", ".join("?" * len(layout))
                for part in chunks:
                    self.cur.executemany(
                        f"INSERT INTO {table} VALUES ({marks})", _to_rows(part, layout)
                    )
        # Only the rows this close's snapshot saw go (PostgreSQL's REPEATABLE READ; SQLite's
        # close holds the write lock): a batch that commits meanwhile keeps its rows for the
        # next close, which reads its sessions then.
        self._x("DELETE FROM session_touch WHERE bucket <= %s", (e,))

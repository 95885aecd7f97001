"""The epoch tables and their SQL: closed epochs, allocations, balances, watermarks.

Insert-only: a close adds one epoch row, its allocations, a balance row per account it
paid and a watermark row per key it moved. The current watermark (balance) of a key
(account) is its row of the highest epoch; moving watermarks by UPDATE in place costs
about 14 times more at a million keys. Amounts are uint256: decimal text.

A close reads and writes in one transaction: the registry snapshot and balances through
`CloseReader`, the stored rows it credits through `SetClose` (read into columns and
credited by `domain.credit`, the same code on SQLite and PostgreSQL), its rows through
`EpochStore.write_rows` and `write_epoch`."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import sqlalchemy as sa
from sqlalchemy import BigInteger, Boolean, Column, Integer, LargeBinary, Text
from sqlmodel import Field, SQLModel

from settlement.adapters.db.store import Store
from settlement.adapters.db.tables import U64, U64_OFFSET, bytes_column, dec, enc, pk_bytes, pk_int
from settlement.domain.credit import CloseCredit, Cols, CreditWeights, as_bytes, credit_epoch
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
    # dataHash of the correction whose leaves were the floor this close built under (PROTOCOL
    # 6); NULL: no floor. A close built under an older floor than the one in force is never
    # proposed.
    floor: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))


class CorrectionRow(SQLModel, table=True):
    """A published correction (PROTOCOL 6), in publication order. Once the distributor has
    accepted it (`accepted_block`), its leaves are the floor of every later close."""

    __tablename__ = "correction"
    id: int | None = Field(default=None, sa_column=Column(Integer, primary_key=True))
    data_hash: bytes = Field(sa_column=Column(LargeBinary, nullable=False, unique=True))
    # The last closed epoch when it was published: the manifest before it is that epoch's or
    # a correction published after it, and the next close chains to it.
    epoch: int = Field(sa_column=Column(BigInteger, nullable=False))
    corrects: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    claimed_at_block: int = Field(sa_column=Column(BigInteger, nullable=False))
    root: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    cumulative_total: str = Field(sa_column=Column(Text, nullable=False))
    manifest: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    accepted_block: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))


class CorrectionLeafRow(SQLModel, table=True):
    """One leaf of a correction: max(balance, claimed) of one account; the floor once the
    correction is accepted."""

    __tablename__ = "correction_leaf"
    data_hash: bytes = pk_bytes()
    account: bytes = pk_bytes()
    amount: str = Field(sa_column=Column(Text, nullable=False))


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
# A session's view watermark and credited watch seconds as moved by the close of `epoch`
# (PROTOCOL 4-5): `watch_seconds` the raw watchSeconds of its last included view candidate,
# `credited` the clipped seconds credited so far. Both only grow: each is its own maximum.
VIEW_WATERMARK: Final = sa.Table(
    "view_watermark",
    SQLModel.metadata,
    bytes_column("viewer"),
    bytes_column("session_id"),
    Column("epoch", BigInteger, nullable=False),
    Column("watch_seconds", BigInteger, nullable=False),
    Column("credited", BigInteger, nullable=False),
)

# Every table a close writes, by name.
EPOCH_TABLES: Final = (
    EpochRow.__tablename__,
    AllocationRow.__tablename__,
    BalanceRow.__tablename__,
    DELIVERY_WATERMARK.name,
    VIEW_WATERMARK.name,
    CorrectionRow.__tablename__,
    CorrectionLeafRow.__tablename__,
)

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

# pg_advisory_lock keys held for a whole close: two instances of one store never close at once.
# The second key is the store's schema, so services (and test runs) in other schemas of the
# same database do not wait on each other's closes.
PG_CLOSE_LOCK: Final = 0x5732_4543  # "W2EC"
NO_FLOOR: Final = bytes(32)
_PG_LOCK_KEYS: Final = "%s, hashtext(current_schema())"


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
    floor: bytes = NO_FLOOR  # dataHash of the correction whose leaves were the floor


_EPOCH_COLS = (
    "epoch, close_started, root, data_hash, cumulative_total, proposes, "
    "carried_node, carried_viewer, carried_creator, manifest, floor"
)


def _stored_epoch(row: Any) -> StoredEpoch:
    e, started, root, dh, total, proposes, cn, cv, cc, manifest, floor = row
    return StoredEpoch(
        e,
        dec(started),
        bytes(root),
        bytes(dh),
        int(total),
        bool(proposes),
        (int(cn), int(cv), int(cc)),
        bytes(manifest),
        NO_FLOOR if floor is None else bytes(floor),
    )


@dataclass(frozen=True, slots=True)
class Floor:
    """The floor in force (PROTOCOL 6): the leaves of the last accepted correction."""

    data_hash: bytes  # NO_FLOOR before any correction is accepted
    leaves: dict[bytes, int]


@dataclass(frozen=True, slots=True)
class StoredCorrection:
    id: int
    data_hash: bytes
    epoch: int
    corrects: bytes
    claimed_at_block: int
    root: bytes
    cumulative_total: int
    manifest: bytes
    accepted_block: int | None


_CORRECTION_COLS = (
    "id, data_hash, epoch, corrects, claimed_at_block, root, cumulative_total, manifest, "
    "accepted_block"
)


def _stored_correction(row: Any) -> StoredCorrection:
    i, dh, e, corrects, block, root, total, manifest, accepted = row
    return StoredCorrection(
        i, bytes(dh), e, bytes(corrects), block, bytes(root), int(total), bytes(manifest), accepted
    )


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
                cur.execute(f"SELECT pg_advisory_lock({_PG_LOCK_KEYS})", (PG_CLOSE_LOCK,))
                got = True
            else:
                cur.execute(f"SELECT pg_try_advisory_lock({_PG_LOCK_KEYS})", (PG_CLOSE_LOCK,))
                got = bool(cur.fetchone()[0])
            conn.commit()
            try:
                yield got
            finally:
                if got:
                    cur.execute(f"SELECT pg_advisory_unlock({_PG_LOCK_KEYS})", (PG_CLOSE_LOCK,))
                    conn.commit()
        finally:
            cur.close()

    @contextmanager
    def snapshot_cursors(self, cur: Any, n: int) -> Iterator[list[Any]]:
        """PostgreSQL: cursors on `n` more connections, each in a transaction that sees the
        snapshot of `cur`'s (REPEATABLE READ, exported), with the close's planner settings;
        rolled back and discarded afterwards (their temporary tables go with them)."""
        cur.execute("SELECT pg_export_snapshot()")
        (snapshot,) = cur.fetchone()
        opened: list[tuple[Any, Any]] = []
        try:
            for _ in range(n):
                try:
                    conn = self.engine.raw_connection()
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

    # -- corrections and the floor (PROTOCOL 6) ---------------------------------------------

    def floor_hash(self, cur: Any | None = None) -> bytes:
        """dataHash of the correction the distributor accepted last (NO_FLOOR: none), without
        its leaves: what the submitter compares every tick."""

        def fn(c: Any) -> bytes:
            c.execute(
                "SELECT data_hash FROM correction WHERE accepted_block IS NOT NULL "
                "ORDER BY accepted_block DESC, id DESC LIMIT 1"
            )
            row = c.fetchone()
            return NO_FLOOR if row is None else bytes(row[0])

        return fn(cur) if cur is not None else self.run(fn)

    def floor(self, cur: Any | None = None) -> Floor:
        """The floor in force: the leaves of the correction the distributor accepted last."""

        def fn(c: Any) -> Floor:
            data_hash = self.floor_hash(c)
            if data_hash == NO_FLOOR:
                return Floor(NO_FLOOR, {})
            c.execute(
                self._q("SELECT account, amount FROM correction_leaf WHERE data_hash = %s"),
                (data_hash,),
            )
            return Floor(data_hash, {bytes(a): int(v) for a, v in c.fetchall()})

        return fn(cur) if cur is not None else self.run(fn)

    def last_manifest(self, epoch: int, cur: Any | None = None) -> bytes | None:
        """The manifest published last while `epoch` was the last closed one: the last
        correction published since its close, else its own (None before epoch 1)."""

        def fn(c: Any) -> bytes | None:
            c.execute(
                self._q(
                    "SELECT manifest FROM correction WHERE epoch = %s ORDER BY id DESC LIMIT 1"
                ),
                (epoch,),
            )
            row = c.fetchone()
            if row is not None:
                return bytes(row[0])
            stored = self.get(epoch, c) if epoch >= 1 else None
            return None if stored is None else stored.manifest

        return fn(cur) if cur is not None else self.run(fn)

    def record_correction(
        self, cur: Any, correction: StoredCorrection, leaves: Mapping[bytes, int]
    ) -> None:
        """A published correction and its leaves (the caller's transaction, under the close
        lock: manifests are published one at a time)."""
        cur.execute(
            self._q(
                "INSERT INTO correction (data_hash, epoch, corrects, claimed_at_block, root, "
                "cumulative_total, manifest) VALUES (%s, %s, %s, %s, %s, %s, %s)"
            ),
            (
                correction.data_hash,
                correction.epoch,
                correction.corrects,
                correction.claimed_at_block,
                correction.root,
                str(correction.cumulative_total),
                correction.manifest,
            ),
        )
        rows = [(correction.data_hash, a, str(v)) for a, v in sorted(leaves.items())]
        if self.dialect == "postgresql":
            self._copy(cur, "correction_leaf (data_hash, account, amount)", self._copy_text(rows))
        else:
            cur.executemany(
                "INSERT INTO correction_leaf (data_hash, account, amount) VALUES (?, ?, ?)", rows
            )

    def corrections(self) -> list[StoredCorrection]:
        """Every published correction, oldest first."""

        def fn(c: Any) -> list[StoredCorrection]:
            c.execute(f"SELECT {_CORRECTION_COLS} FROM correction ORDER BY id")
            return [_stored_correction(r) for r in c.fetchall()]

        return self.run(fn)

    def accept_correction(self, data_hash: bytes, block: int) -> bool:
        """The distributor accepted this correction in `block`: its leaves become the floor.
        Idempotent; False when no such correction was published here."""

        def fn(c: Any) -> bool:
            c.execute(
                self._q(
                    "UPDATE correction SET accepted_block = %s "
                    "WHERE data_hash = %s AND accepted_block IS NULL"
                ),
                (block, data_hash),
            )
            c.execute(
                self._q("SELECT accepted_block FROM correction WHERE data_hash = %s"), (data_hash,)
            )
            return c.fetchone() is not None

        return self.run(fn, write=True)

    # -- the close -------------------------------------------------------------------------

    def reader(self, cur: Any) -> CloseReader:
        return CloseReader(self, cur)

    def prepare_close(
        self,
        epoch: int,
        allocations: list[tuple[bytes, str, int]],
        balances: list[tuple[bytes, int, int, int]],
    ) -> PreparedClose:
        """The allocation and balance rows `write_rows` inserts, formatted for this dialect
        (no database access: a close builds them while the database is busy)."""
        n = epoch
        alloc_rows = [(n, a, k, str(v)) for a, k, v in allocations]
        balance_rows = [(a, n, str(x), str(y), str(z)) for a, x, y, z in balances]
        if self.dialect == "postgresql":
            return PreparedClose(self._copy_text(alloc_rows), self._copy_text(balance_rows))
        return PreparedClose(alloc_rows, balance_rows)

    def write_epoch(self, cur: Any, e: StoredEpoch) -> None:
        """The epoch's own row: with it the close is there (the caller's transaction)."""
        cur.execute(
            self._q(
                f"INSERT INTO epoch ({_EPOCH_COLS}) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
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
                None if e.floor == NO_FLOOR else e.floor,
            ),
        )

    def write_rows(self, cur: Any, prepared: PreparedClose) -> None:
        """The epoch's allocation and balance rows (the caller's transaction; they count only
        with the epoch row, which `write_epoch` adds in the same transaction)."""
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
    """`write_rows`' rows: COPY text chunks on PostgreSQL, parameter tuples on SQLite."""

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


# --- the columnar close -----------------------------------------------------------------------
#
# A close reads the stored rows it needs into columns (PostgreSQL: blocks of string_agg'd
# values over three connections in one snapshot; SQLite: rows), credits them with
# `credit.credit_epoch` (PROTOCOL 4, numpy, the code the auditor runs too) and writes the
# watermarks it moved back (binary COPY, or executemany). The statements only select rows;
# no rule is in SQL.

_HIGH: Final = np.uint64(U64_OFFSET)  # stored uint64 -> value: flip the top bit
_NOT_QUARANTINED: Final = enc(2**64 - 1)  # credit.credit_epoch's "never"
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


class SetClose:
    """The credit side of one close: its stored rows as columns, credited in numpy."""

    def __init__(self, epochs: EpochStore, cur: Any, epoch: int, now: int, segment_seconds: int):
        self.epochs = epochs
        self.cur = cur
        self.epoch = epoch
        self.now = now
        self.seg = segment_seconds
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
        join, only = "", ""
        if touched_only:
            join = "JOIN close_t t ON x.viewer = t.viewer AND x.session_id = t.session_id"
            only = "AND (x.viewer, x.session_id) IN (SELECT viewer, session_id FROM close_t)"
        # name: (columns, source, layout, by primary key): the stored tables of live sessions,
        # then the watermark tables (scanned: they have no index).
        reads = {
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
        # are still coming (credit_epoch takes functions that wait for them).
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
            self.credit = credit_epoch(
                tables["deliveries"].result,
                tables["views"].result,
                tables["sessions"].result,
                tables["delivery_marks"].result,
                tables["view_marks"].result,
                now=self.now,
                segment_seconds=self.seg,
            )
            self.timings["credit"] = time.perf_counter() - t

        if not self.pg:
            run(0, self.cur, plan[0])
            credit()
            return
        with (
            self.epochs.snapshot_cursors(self.cur, len(plan) - 1) as others,
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

    def _credited(self) -> CloseCredit:
        if self.credit is None:
            raise RuntimeError("SetClose.build() first")
        return self.credit

    def totals(
        self, max_bytes_per_viewer: int, max_watch_seconds: int, creators: Mapping[bytes, bytes]
    ) -> CreditWeights:
        """Weights of viewers under both caps, summed; the others in full for Python."""
        return self._credited().weights(max_bytes_per_viewer, max_watch_seconds, creators)

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

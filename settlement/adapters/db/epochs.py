"""The epoch tables' SQL: closed epochs, allocations, balances, watermarks, corrections.

Insert-only: a close adds one epoch row, its allocations, a balance row per account it
paid and a watermark row per key it moved. The current watermark (balance) of a key
(account) is its row of the highest epoch; moving watermarks by UPDATE in place costs
about 14 times more at a million keys. Retention deletes the balance rows a later closed
epoch supersedes (`compact_balances`), outside the close. Amounts are uint256: decimal text.

A close reads and writes in one transaction: the registry snapshot and balances through
`CloseReader`, its epoch row through `EpochStore.write_epoch`; the rest of its reads and
writes (columns, COPY, planner settings) are `close_io`'s."""

from __future__ import annotations

import builtins
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final

import sqlalchemy as sa

from settlement.adapters.db.store import Store
from settlement.adapters.db.tables import dec, enc
from settlement.domain.rewards import ClassAmounts
from settlement.errors import StoreError

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
    carried: ClassAmounts  # the pools carried out of this epoch
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
        ClassAmounts(int(cn), int(cv), int(cc)),
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

    def allocations(
        self,
        epoch: int,
        limit: int | None = None,
        after: tuple[bytes, str] | None = None,
    ) -> builtins.list[tuple[bytes, str, int]]:
        """The epoch's allocations by (account, class); a page of `limit` rows after the
        (account, class) `after` when given."""

        def fn(c: Any) -> builtins.list[tuple[bytes, str, int]]:
            sql = 'SELECT account, "class", amount FROM allocation WHERE epoch = %s'
            params: builtins.list[Any] = [epoch]
            if after is not None:
                sql += ' AND (account > %s OR (account = %s AND "class" > %s))'
                params += [after[0], after[0], after[1]]
            sql += ' ORDER BY account, "class"'
            if limit is not None:
                sql += " LIMIT %s"
                params.append(limit)
            c.execute(self._q(sql), tuple(params))
            return [(bytes(a), k, int(v)) for a, k, v in c.fetchall()]

        return self.run(fn)

    def balance(self, account: bytes) -> tuple[int, int, int, int]:
        """(epoch of the row, node, viewer, creator): the account's cumulative balance after
        the last close that paid it (earlier rows may be compacted away)."""

        def fn(c: Any) -> tuple[int, int, int, int]:
            c.execute(
                self._q(
                    "SELECT epoch, node, viewer, creator FROM balance WHERE account = %s "
                    "ORDER BY epoch DESC LIMIT 1"
                ),
                (account,),
            )
            row = c.fetchone()
            if row is None:
                return (0, 0, 0, 0)
            return (int(row[0]), int(row[1]), int(row[2]), int(row[3]))

        return self.run(fn)

    def compact_balances(self, through_epoch: int, cur: Any | None = None) -> int:
        """Delete the balance rows that a later row of the same account, of an epoch up to
        `through_epoch`, supersedes. Returns the number of rows deleted.

        Every reader wants an account's latest row: the close (the balances before it), a
        correction (after the last close) and the account page. Left alone, the history
        (a row per account per epoch that paid it) made each close's read dearer than the
        one before; compacted after each close, it stays at about one row per account plus
        the last epoch's. The history is not lost: an account's balance after any epoch is
        the sum of its `allocation` rows up to it, and every epoch's tree dump holds them.
        """

        def fn(c: Any) -> int:
            c.execute(
                self._q(
                    "DELETE FROM balance WHERE epoch < %s AND EXISTS (SELECT 1 FROM balance "
                    "AS later WHERE later.account = balance.account AND later.epoch > "
                    "balance.epoch AND later.epoch <= %s)"
                ),
                (through_epoch, through_epoch),
            )
            return int(c.rowcount)

        return fn(cur) if cur is not None else self.run(fn, write=True)

    def account_allocations(self, account: bytes) -> builtins.list[tuple[int, str, int]]:
        def fn(c: Any) -> builtins.list[tuple[int, str, int]]:
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
            copy_in(cur, "correction_leaf (data_hash, account, amount)", copy_text(rows))
        else:
            cur.executemany(
                "INSERT INTO correction_leaf (data_hash, account, amount) VALUES (?, ?, ?)", rows
            )

    def corrections(self) -> builtins.list[StoredCorrection]:
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
                str(e.carried.node),
                str(e.carried.viewer),
                str(e.carried.creator),
                e.manifest,
                None if e.floor == NO_FLOOR else e.floor,
            ),
        )


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
        """account -> cumulative (node, viewer, creator) after the closes before `before_epoch`.

        Only each account's latest row comes back: a service that has run for a day has a
        row per account for every epoch that paid it, and parsing them all in Python made
        each close dearer than the one before (the database picks the latest from the
        primary key's order). In account order, as before.
        """
        cur = self.cur
        if self.dialect == "postgresql":
            sql = (
                "SELECT DISTINCT ON (account) account, node, viewer, creator FROM balance "
                "WHERE epoch < %s ORDER BY account, epoch DESC"
            )
        else:
            # SQLite takes the bare columns of an aggregate query from the row MAX() chose.
            sql = (
                "SELECT account, node, viewer, creator FROM (SELECT account, node, viewer, "
                "creator, MAX(epoch) FROM balance WHERE epoch < ? GROUP BY account) "
                "ORDER BY account"
            )
        cur.execute(sql, (before_epoch,))
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


def copy_text(rows: list[tuple[Any, ...]]) -> list[bytes]:
    """Rows as COPY FROM STDIN text format in large chunks (bytes as \\x hex)."""

    def field(x: Any) -> str:
        return "\\\\x" + x.hex() if isinstance(x, bytes) else str(x)

    return [
        "".join("\t".join(map(field, r)) + "\n" for r in rows[i : i + 20_000]).encode()
        for i in range(0, len(rows), 20_000)
    ]


def copy_in(cur: Any, target: str, chunks: list[bytes]) -> None:
    """COPY FROM STDIN in text format, chunks from `copy_text`."""
    with cur.copy(f"COPY {target} FROM STDIN") as copy:
        for chunk in chunks:
            copy.write(chunk)

"""The submitter's tables: one row per root proposal (its state machine and every signed
transaction version), and the Claimed indexer's cursor and per-account claimed amounts.

A proposal row is written *before* its transaction is broadcast, and every fee-bumped
version is appended before it is broadcast, so a restarted submitter knows every hash that
may be mined. Amounts are uint256: decimal text, as in epochs.py. The SQLModel tables only
define the schema (for migrations); queries are SQL text, as in store.py.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import BigInteger, Column, Integer, Text
from sqlmodel import Field, SQLModel

from settlement.adapters.chain import PreparedTx
from settlement.adapters.db.store import Store
from settlement.adapters.db.tables import pk_bytes

# prepared -> sent -> mined (root pending on chain) -> accepted; or revoked (by the guardian),
# failed (reverted, or its nonce went to another transaction), superseded (a correction
# replaced the accepted root).
PREPARED: Final = "prepared"
SENT: Final = "sent"
MINED: Final = "mined"
ACCEPTED: Final = "accepted"
REVOKED: Final = "revoked"
FAILED: Final = "failed"
SUPERSEDED: Final = "superseded"
OPEN_STATUSES: Final = (PREPARED, SENT, MINED)

ROOT: Final = "root"
CORRECTION: Final = "correction"


class ProposalRow(SQLModel, table=True):
    """One proposeRoot: what it proposes, where it stands, every signed version of its tx."""

    __tablename__ = "proposal"
    id: int | None = Field(default=None, sa_column=Column(Integer, primary_key=True))
    kind: str = Field(sa_column=Column(Text, nullable=False))  # root | correction
    epoch: int = Field(sa_column=Column(BigInteger, nullable=False))
    first_epoch: int = Field(sa_column=Column(BigInteger, nullable=False))  # folded from here
    root: str = Field(sa_column=Column(Text, nullable=False, index=True))
    cumulative_total: str = Field(sa_column=Column(Text, nullable=False))
    data_hash: str = Field(sa_column=Column(Text, nullable=False))
    data_uri: str = Field(sa_column=Column(Text, nullable=False))
    dump_path: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    corrects: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    # A correction's claimedAtBlock: the block of the pause its claimed amounts were read at.
    claimed_at_block: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    status: str = Field(sa_column=Column(Text, nullable=False, index=True))
    from_block: int = Field(sa_column=Column(BigInteger, nullable=False))
    txs: str = Field(sa_column=Column(Text, nullable=False))  # JSON list of PreparedTx JSON
    tx_hash: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    block: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    valid_at: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    accept_txs: str = Field(sa_column=Column(Text, nullable=False))  # JSON list, [] until sent
    note: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    created_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    updated_at: int = Field(sa_column=Column(BigInteger, nullable=False))


class ChainCursorRow(SQLModel, table=True):
    """Where an event reader resumes (next block to read), by reader name."""

    __tablename__ = "chain_cursor"
    name: str = Field(sa_column=Column(Text, primary_key=True))
    next_block: int = Field(sa_column=Column(BigInteger, nullable=False))


class ClaimedRow(SQLModel, table=True):
    """An account's claimed cumulative amount as the Claimed events tell it."""

    __tablename__ = "claimed_account"
    account: bytes = pk_bytes()
    cumulative: str = Field(sa_column=Column(Text, nullable=False))
    block: int = Field(sa_column=Column(BigInteger, nullable=False))


SUBMITTER_TABLES: Final = (ProposalRow, ChainCursorRow, ClaimedRow)

# The proposal columns in the order `_proposal` reads them.
_COLUMNS: Final = (
    "id",
    "kind",
    "epoch",
    "first_epoch",
    "root",
    "cumulative_total",
    "data_hash",
    "data_uri",
    "dump_path",
    "corrects",
    "claimed_at_block",
    "status",
    "from_block",
    "txs",
    "tx_hash",
    "block",
    "valid_at",
    "accept_txs",
    "note",
    "created_at",
    "updated_at",
)
_SELECT: Final = f"SELECT {', '.join(_COLUMNS)} FROM proposal"


@dataclass(frozen=True)
class Proposal:
    id: int
    kind: str
    epoch: int
    first_epoch: int
    root: str
    cumulative_total: int
    data_hash: str
    data_uri: str
    dump_path: str | None
    corrects: str | None
    claimed_at_block: int | None
    status: str
    from_block: int
    txs: tuple[PreparedTx, ...]
    tx_hash: str | None
    block: int | None
    valid_at: int | None
    accept_txs: tuple[PreparedTx, ...]
    note: str | None
    created_at: int
    updated_at: int

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES


def _proposal(row: Sequence[Any]) -> Proposal:
    m = dict(zip(_COLUMNS, row, strict=True))
    return Proposal(
        id=m["id"],
        kind=m["kind"],
        epoch=m["epoch"],
        first_epoch=m["first_epoch"],
        root=m["root"],
        cumulative_total=int(m["cumulative_total"]),
        data_hash=m["data_hash"],
        data_uri=m["data_uri"],
        dump_path=m["dump_path"],
        corrects=m["corrects"],
        claimed_at_block=m["claimed_at_block"],
        status=m["status"],
        from_block=m["from_block"],
        txs=tuple(PreparedTx.from_json(t) for t in json.loads(m["txs"])),
        tx_hash=m["tx_hash"],
        block=m["block"],
        valid_at=m["valid_at"],
        accept_txs=tuple(PreparedTx.from_json(t) for t in json.loads(m["accept_txs"])),
        note=m["note"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
    )


def _txs(versions: Iterable[PreparedTx]) -> str:
    return json.dumps([v.to_json() for v in versions])


class SubmitterStore:
    """The submitter's rows on a `Store`: every call is one short transaction through the
    store's own helper (SQL text on the DBAPI cursor, as the rest of the store)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def _run(self, fn: Callable[[Any], Any], *, write: bool) -> Any:
        return self.store._run(fn, write=write)

    def _q(self, sql: str) -> str:
        return self.store._q(sql)

    def _select(self, cur: Any, where: str = "", params: Sequence[Any] = ()) -> list[Proposal]:
        cur.execute(self._q(f"{_SELECT} {where}"), tuple(params))
        return [_proposal(r) for r in cur.fetchall()]

    # -- proposals -----------------------------------------------------------------------------

    def insert(
        self,
        *,
        kind: str,
        epoch: int,
        first_epoch: int,
        root: str,
        cumulative_total: int,
        data_hash: str,
        data_uri: str,
        from_block: int,
        prepared: PreparedTx,
        dump_path: str | None = None,
        corrects: str | None = None,
        claimed_at_block: int | None = None,
    ) -> Proposal:
        now = int(time.time())
        values = {
            "kind": kind,
            "epoch": epoch,
            "first_epoch": first_epoch,
            "root": root,
            "cumulative_total": str(cumulative_total),
            "data_hash": data_hash,
            "data_uri": data_uri,
            "dump_path": dump_path,
            "corrects": corrects,
            "claimed_at_block": claimed_at_block,
            "status": PREPARED,
            "from_block": from_block,
            "txs": _txs([prepared]),
            "tx_hash": prepared.tx_hash,
            "accept_txs": "[]",
            "created_at": now,
            "updated_at": now,
        }

        def fn(cur: Any) -> Proposal:
            cur.execute(
                self._q(
                    f"INSERT INTO proposal ({', '.join(values)}) "
                    f"VALUES ({', '.join(['%s'] * len(values))}) RETURNING id"
                ),
                tuple(values.values()),
            )
            (new_id,) = cur.fetchone()
            return self._select(cur, "WHERE id = %s", (new_id,))[0]

        return self._run(fn, write=True)

    def update(self, proposal_id: int, **values: Any) -> Proposal:
        """Set columns; `txs` / `accept_txs` take sequences of PreparedTx."""
        unknown = set(values) - set(_COLUMNS[1:])
        if unknown:
            raise ValueError(f"no proposal column {sorted(unknown)}")
        for name in ("txs", "accept_txs"):
            if name in values:
                values[name] = _txs(values[name])
        values["updated_at"] = int(time.time())
        assignments = ", ".join(f"{name} = %s" for name in values)

        def fn(cur: Any) -> Proposal:
            cur.execute(
                self._q(f"UPDATE proposal SET {assignments} WHERE id = %s"),
                (*values.values(), proposal_id),
            )
            return self._select(cur, "WHERE id = %s", (proposal_id,))[0]

        return self._run(fn, write=True)

    def get(self, proposal_id: int) -> Proposal | None:
        rows = self._run(
            lambda cur: self._select(cur, "WHERE id = %s", (proposal_id,)), write=False
        )
        return rows[0] if rows else None

    def all(self) -> list[Proposal]:
        return self._run(lambda cur: self._select(cur, "ORDER BY id"), write=False)

    def open(self) -> list[Proposal]:
        """Rows still in flight (prepared, sent or mined), oldest first."""
        marks = ", ".join(["%s"] * len(OPEN_STATUSES))
        return self._run(
            lambda cur: self._select(cur, f"WHERE status IN ({marks}) ORDER BY id", OPEN_STATUSES),
            write=False,
        )

    def by_root(self, root: str) -> list[Proposal]:
        return self._run(
            lambda cur: self._select(cur, "WHERE root = %s ORDER BY id", (root,)), write=False
        )

    def latest_accepted(self, root: str | None = None) -> Proposal | None:
        where, params = "WHERE status = %s", [ACCEPTED]
        if root is not None:
            where, params = where + " AND root = %s", [*params, root]
        rows = self._run(
            lambda cur: self._select(cur, f"{where} ORDER BY id DESC LIMIT 1", params),
            write=False,
        )
        return rows[0] if rows else None

    def count(self, status: str) -> int:
        def fn(cur: Any) -> int:
            cur.execute(self._q("SELECT count(*) FROM proposal WHERE status = %s"), (status,))
            return int(cur.fetchone()[0])

        return self._run(fn, write=False)

    # -- Claimed indexer -----------------------------------------------------------------------

    def cursor(self, name: str) -> int | None:
        def fn(cur: Any) -> int | None:
            cur.execute(self._q("SELECT next_block FROM chain_cursor WHERE name = %s"), (name,))
            row = cur.fetchone()
            return None if row is None else int(row[0])

        return self._run(fn, write=False)

    def record_claims(
        self, name: str, claimed: dict[str, int], block: int, next_block: int
    ) -> None:
        """Claimed cumulatives (account -> amount, as of `block`) and the new cursor, at once."""

        def fn(cur: Any) -> None:
            for account, amount in claimed.items():
                key = bytes.fromhex(account[2:])
                cur.execute(
                    self._q("SELECT cumulative FROM claimed_account WHERE account = %s"), (key,)
                )
                row = cur.fetchone()
                if row is None:
                    cur.execute(
                        self._q(
                            "INSERT INTO claimed_account (account, cumulative, block) "
                            "VALUES (%s, %s, %s)"
                        ),
                        (key, str(amount), block),
                    )
                elif int(row[0]) < amount:  # claimed only grows
                    cur.execute(
                        self._q(
                            "UPDATE claimed_account SET cumulative = %s, block = %s "
                            "WHERE account = %s"
                        ),
                        (str(amount), block, key),
                    )
            cur.execute(
                self._q("UPDATE chain_cursor SET next_block = %s WHERE name = %s"),
                (next_block, name),
            )
            if cur.rowcount == 0:
                cur.execute(
                    self._q("INSERT INTO chain_cursor (name, next_block) VALUES (%s, %s)"),
                    (name, next_block),
                )

        self._run(fn, write=True)

    def claimed(self, account: bytes) -> int:
        """The account's claimed cumulative as indexed (0 when it never claimed)."""

        def fn(cur: Any) -> int:
            cur.execute(
                self._q("SELECT cumulative FROM claimed_account WHERE account = %s"), (account,)
            )
            row = cur.fetchone()
            return 0 if row is None else int(row[0])

        return self._run(fn, write=False)

    def claimed_all(self) -> dict[str, int]:
        def fn(cur: Any) -> dict[str, int]:
            cur.execute("SELECT account, cumulative FROM claimed_account")
            return {"0x" + bytes(a).hex(): int(c) for a, c in cur.fetchall()}

        return self._run(fn, write=False)

"""The submitter's tables: one row per root proposal (its state machine and every signed
transaction version), and the Claimed indexer's cursor and per-account claimed amounts.

A proposal row is written *before* its transaction is broadcast, and every fee-bumped
version is appended before it is broadcast, so a restarted submitter knows every hash that
may be mined. Amounts are uint256: decimal text, as in epoch_db.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

import sqlalchemy as sa
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

_P = ProposalRow.__table__  # type: ignore[attr-defined]
_CURSOR = ChainCursorRow.__table__  # type: ignore[attr-defined]
_CLAIMED = ClaimedRow.__table__  # type: ignore[attr-defined]


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


def _proposal(row: Any) -> Proposal:
    m = row._mapping
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
    """The submitter's rows on a `Store`'s engine; every call is one short transaction."""

    def __init__(self, store: Store) -> None:
        self.engine: sa.Engine = store.engine

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
        with self.engine.begin() as conn:
            result = conn.execute(
                _P.insert().values(
                    kind=kind,
                    epoch=epoch,
                    first_epoch=first_epoch,
                    root=root,
                    cumulative_total=str(cumulative_total),
                    data_hash=data_hash,
                    data_uri=data_uri,
                    dump_path=dump_path,
                    corrects=corrects,
                    claimed_at_block=claimed_at_block,
                    status=PREPARED,
                    from_block=from_block,
                    txs=_txs([prepared]),
                    tx_hash=prepared.tx_hash,
                    accept_txs="[]",
                    created_at=now,
                    updated_at=now,
                )
            )
            new_id = result.inserted_primary_key[0]
            return _proposal(conn.execute(_P.select().where(_P.c.id == new_id)).one())

    def update(self, proposal_id: int, **values: Any) -> Proposal:
        """Set columns; `txs` / `accept_txs` take sequences of PreparedTx."""
        for name in ("txs", "accept_txs"):
            if name in values:
                values[name] = _txs(values[name])
        values["updated_at"] = int(time.time())
        with self.engine.begin() as conn:
            conn.execute(_P.update().where(_P.c.id == proposal_id).values(**values))
            return _proposal(conn.execute(_P.select().where(_P.c.id == proposal_id)).one())

    def get(self, proposal_id: int) -> Proposal | None:
        with self.engine.connect() as conn:
            row = conn.execute(_P.select().where(_P.c.id == proposal_id)).first()
        return None if row is None else _proposal(row)

    def all(self) -> list[Proposal]:
        with self.engine.connect() as conn:
            rows = conn.execute(_P.select().order_by(_P.c.id)).all()
        return [_proposal(r) for r in rows]

    def open(self) -> list[Proposal]:
        """Rows still in flight (prepared, sent or mined), oldest first."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                _P.select().where(_P.c.status.in_(OPEN_STATUSES)).order_by(_P.c.id)
            ).all()
        return [_proposal(r) for r in rows]

    def by_root(self, root: str) -> list[Proposal]:
        with self.engine.connect() as conn:
            rows = conn.execute(_P.select().where(_P.c.root == root).order_by(_P.c.id)).all()
        return [_proposal(r) for r in rows]

    def latest_accepted(self, root: str | None = None) -> Proposal | None:
        query = _P.select().where(_P.c.status == ACCEPTED)
        if root is not None:
            query = query.where(_P.c.root == root)
        with self.engine.connect() as conn:
            row = conn.execute(query.order_by(_P.c.id.desc()).limit(1)).first()
        return None if row is None else _proposal(row)

    def count(self, status: str) -> int:
        with self.engine.connect() as conn:
            return conn.execute(
                sa.select(sa.func.count()).select_from(_P).where(_P.c.status == status)
            ).scalar_one()

    # -- Claimed indexer -----------------------------------------------------------------------

    def cursor(self, name: str) -> int | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(_CURSOR.c.next_block).where(_CURSOR.c.name == name)
            ).first()
        return None if row is None else int(row[0])

    def record_claims(
        self, name: str, claimed: dict[str, int], block: int, next_block: int
    ) -> None:
        """Claimed cumulatives (account -> amount, as of `block`) and the new cursor, at once."""
        with self.engine.begin() as conn:
            for account, amount in claimed.items():
                key = bytes.fromhex(account[2:])
                row = conn.execute(
                    sa.select(_CLAIMED.c.cumulative).where(_CLAIMED.c.account == key)
                ).first()
                if row is None:
                    conn.execute(
                        _CLAIMED.insert().values(account=key, cumulative=str(amount), block=block)
                    )
                elif int(row[0]) < amount:  # claimed only grows
                    conn.execute(
                        _CLAIMED.update()
                        .where(_CLAIMED.c.account == key)
                        .values(cumulative=str(amount), block=block)
                    )
            updated = conn.execute(
                _CURSOR.update().where(_CURSOR.c.name == name).values(next_block=next_block)
            )
            if updated.rowcount == 0:
                conn.execute(_CURSOR.insert().values(name=name, next_block=next_block))

    def claimed(self, account: bytes) -> int:
        """The account's claimed cumulative as indexed (0 when it never claimed)."""
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(_CLAIMED.c.cumulative).where(_CLAIMED.c.account == account)
            ).first()
        return 0 if row is None else int(row[0])

    def claimed_all(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(_CLAIMED.c.account, _CLAIMED.c.cumulative)).all()
        return {"0x" + bytes(a).hex(): int(c) for a, c in rows}

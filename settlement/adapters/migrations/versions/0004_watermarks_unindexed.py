"""Watermark tables without a primary key: the close appends a row per key it moved and
nothing looks one up by key (see settlement.adapters.epoch_db); retention now deletes a
pruned session's rows.

Rebuilt as new tables with the rows copied, the same on SQLite and PostgreSQL (SQLite
cannot drop a primary key in place).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import settlement.adapters.epoch_db  # noqa: F401 - the compared metadata

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_DELIVERY = "viewer, session_id, node, epoch, bytes_served, segments_served"
_VIEW = "viewer, session_id, epoch, watch_seconds"


def _b(name: str) -> sa.Column:
    return sa.Column(name, sa.LargeBinary(), nullable=False)


def _tables(pk: bool) -> dict[str, list[sa.schema.SchemaItem]]:
    delivery: list[sa.schema.SchemaItem] = [
        _b("viewer"),
        _b("session_id"),
        _b("node"),
        sa.Column("epoch", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("bytes_served", sa.BigInteger(), nullable=False),
        sa.Column("segments_served", sa.BigInteger(), nullable=False),
    ]
    view: list[sa.schema.SchemaItem] = [
        _b("viewer"),
        _b("session_id"),
        sa.Column("epoch", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("watch_seconds", sa.BigInteger(), nullable=False),
    ]
    if pk:
        delivery.append(sa.PrimaryKeyConstraint("epoch", "viewer", "session_id", "node"))
        view.append(sa.PrimaryKeyConstraint("epoch", "viewer", "session_id"))
    return {"delivery_watermark": delivery, "view_watermark": view}


def _rebuild(pk: bool) -> None:
    columns = {"delivery_watermark": _DELIVERY, "view_watermark": _VIEW}
    for name, items in _tables(pk).items():
        op.create_table(f"{name}_new", *items)
        op.execute(f"INSERT INTO {name}_new ({columns[name]}) SELECT {columns[name]} FROM {name}")
        op.drop_table(name)
        op.rename_table(f"{name}_new", name)


def upgrade() -> None:
    _rebuild(pk=False)


def downgrade() -> None:
    _rebuild(pk=True)

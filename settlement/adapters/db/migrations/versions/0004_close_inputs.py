"""What a close reads: watermark tables without a primary key (the close appends a row per
key it moved and nothing looks one up by key, see settlement.adapters.db.epochs), and
session_touch, the sessions each batch changed (settlement.adapters.db.tables.SESSION_TOUCH), so
that a close reads those rather than every live session.

The watermark tables are rebuilt with their rows copied, the same on SQLite and PostgreSQL
(SQLite cannot drop a primary key in place). session_touch starts with a row for every
stored best receipt: the first close after the upgrade reads every session, as before it.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

# The compared metadata: epoch_db's tables, and db's (session_touch) through its import.
import settlement.adapters.db.epochs  # noqa: F401

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
    op.create_table(
        "session_touch",
        _b("viewer"),
        _b("session_id"),
        sa.Column("bucket", sa.BigInteger(), nullable=False),
    )
    op.execute(
        "INSERT INTO session_touch (viewer, session_id, bucket) "
        "SELECT viewer, session_id, bucket FROM delivery_best "
        "UNION SELECT viewer, session_id, bucket FROM view_best"
    )


def downgrade() -> None:
    op.drop_table("session_touch")
    _rebuild(pk=True)

"""Epochs: closed epochs with their manifests, allocations, balances and watermarks.

All insert-only (see settlement.adapters.db.epochs). uint64 columns as in 0001.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

# The SQLModel tables these rows mirror live in epoch_db; importing it puts them on the
# metadata that autogenerate (and the schema test) compares with the database.
import settlement.adapters.db.epochs  # noqa: F401

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

U64 = sa.BigInteger()


def _b(name: str) -> sa.Column:
    return sa.Column(name, sa.LargeBinary(), autoincrement=False, nullable=False)


def upgrade() -> None:
    op.create_table(
        "epoch",
        sa.Column("epoch", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("close_started", U64, nullable=False),
        sa.Column("root", sa.LargeBinary(), nullable=False),
        sa.Column("data_hash", sa.LargeBinary(), nullable=False),
        sa.Column("cumulative_total", sa.Text(), nullable=False),
        sa.Column("proposes", sa.Boolean(), nullable=False),
        sa.Column("carried_node", sa.Text(), nullable=False),
        sa.Column("carried_viewer", sa.Text(), nullable=False),
        sa.Column("carried_creator", sa.Text(), nullable=False),
        sa.Column("manifest", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("epoch"),
    )
    op.create_table(
        "allocation",
        sa.Column("epoch", sa.BigInteger(), autoincrement=False, nullable=False),
        _b("account"),
        sa.Column("class", sa.Text(), nullable=False),
        sa.Column("amount", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("epoch", "account", "class"),
    )
    op.create_table(
        "balance",
        _b("account"),
        sa.Column("epoch", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("node", sa.Text(), nullable=False),
        sa.Column("viewer", sa.Text(), nullable=False),
        sa.Column("creator", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("account", "epoch"),
    )
    op.create_table(
        "delivery_watermark",
        _b("viewer"),
        _b("session_id"),
        _b("node"),
        sa.Column("epoch", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("bytes_served", U64, nullable=False),
        sa.Column("segments_served", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("epoch", "viewer", "session_id", "node"),
    )
    op.create_table(
        "view_watermark",
        _b("viewer"),
        _b("session_id"),
        sa.Column("epoch", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("watch_seconds", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("epoch", "viewer", "session_id"),
    )


def downgrade() -> None:
    op.drop_table("view_watermark")
    op.drop_table("delivery_watermark")
    op.drop_table("balance")
    op.drop_table("allocation")
    op.drop_table("epoch")

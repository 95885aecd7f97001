"""Submitter: root proposals (state machine, signed transaction versions) and the Claimed
indexer's cursor and claimed amounts.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

# The SQLModel tables these rows mirror; importing puts them on the compared metadata.
import settlement.adapters.db.submitter  # noqa: F401

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "proposal",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.Column("first_epoch", sa.BigInteger(), nullable=False),
        sa.Column("root", sa.Text(), nullable=False),
        sa.Column("cumulative_total", sa.Text(), nullable=False),
        sa.Column("data_hash", sa.Text(), nullable=False),
        sa.Column("data_uri", sa.Text(), nullable=False),
        sa.Column("dump_path", sa.Text(), nullable=True),
        sa.Column("corrects", sa.Text(), nullable=True),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("from_block", sa.BigInteger(), nullable=False),
        sa.Column("txs", sa.Text(), nullable=False),
        sa.Column("tx_hash", sa.Text(), nullable=True),
        sa.Column("block", sa.BigInteger(), nullable=True),
        sa.Column("valid_at", sa.BigInteger(), nullable=True),
        sa.Column("accept_txs", sa.Text(), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_proposal_root", "proposal", ["root"])
    op.create_index("ix_proposal_status", "proposal", ["status"])
    op.create_table(
        "chain_cursor",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("next_block", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "claimed_account",
        sa.Column("account", sa.LargeBinary(), autoincrement=False, nullable=False),
        sa.Column("cumulative", sa.Text(), nullable=False),
        sa.Column("block", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("account"),
    )


def downgrade() -> None:
    op.drop_table("claimed_account")
    op.drop_table("chain_cursor")
    op.drop_index("ix_proposal_status", table_name="proposal")
    op.drop_index("ix_proposal_root", table_name="proposal")
    op.drop_table("proposal")

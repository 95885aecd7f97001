"""Protocol version 2, the floor after a correction (PROTOCOL 6): the corrections this service
published (in order, with the block the distributor accepted each in) and their leaves, the
floor each closed epoch was built under, and the block a correction read claims at.

Existing epochs were closed without a floor (NULL). A version 1 store has no correction
rows: version 1 corrections were never recorded as a floor, so an operator who ran one
publishes a version 2 correction before the next proposal (docs/protocol.md).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import settlement.adapters.db.epochs
import settlement.adapters.db.submitter  # noqa: F401

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "correction",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("data_hash", sa.LargeBinary(), nullable=False),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.Column("corrects", sa.LargeBinary(), nullable=False),
        sa.Column("claimed_at_block", sa.BigInteger(), nullable=False),
        sa.Column("root", sa.LargeBinary(), nullable=False),
        sa.Column("cumulative_total", sa.Text(), nullable=False),
        sa.Column("manifest", sa.LargeBinary(), nullable=False),
        sa.Column("accepted_block", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("data_hash"),
    )
    op.create_table(
        "correction_leaf",
        sa.Column("data_hash", sa.LargeBinary(), autoincrement=False, nullable=False),
        sa.Column("account", sa.LargeBinary(), autoincrement=False, nullable=False),
        sa.Column("amount", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("data_hash", "account"),
    )
    op.add_column("epoch", sa.Column("floor", sa.LargeBinary(), nullable=True))
    op.add_column("proposal", sa.Column("claimed_at_block", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("proposal") as batch:
        batch.drop_column("claimed_at_block")
    with op.batch_alter_table("epoch") as batch:
        batch.drop_column("floor")
    op.drop_table("correction_leaf")
    op.drop_table("correction")

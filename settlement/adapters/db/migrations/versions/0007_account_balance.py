"""Each account's latest balance row in a table of its own (`account_balance`), so a close
reads one row per account instead of picking the latest out of the whole balance history.

Backfilled from `balance`: each account's row of its highest epoch.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "account_balance",
        sa.Column("account", sa.LargeBinary(), autoincrement=False, nullable=False),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.Column("node", sa.Text(), nullable=False),
        sa.Column("viewer", sa.Text(), nullable=False),
        sa.Column("creator", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("account"),
    )
    op.execute(
        "INSERT INTO account_balance (account, epoch, node, viewer, creator) "
        "SELECT b.account, b.epoch, b.node, b.viewer, b.creator FROM balance b "
        "JOIN (SELECT account, MAX(epoch) AS epoch FROM balance GROUP BY account) m "
        "ON b.account = m.account AND b.epoch = m.epoch"
    )


def downgrade() -> None:
    op.drop_table("account_balance")

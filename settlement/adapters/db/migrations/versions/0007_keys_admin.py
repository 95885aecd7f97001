"""A hardened public edge (issue 15): API keys, shared rate windows, the admin log, sticky
deactivation and registration requests stored once.

- api_key: hashed client keys with their rate (`settlement keys`).
- rate_window: one GCRA bucket per key or client address, shared by every worker and
  instance; UNLOGGED on PostgreSQL (no WAL per request; a crash only refills the buckets).
- admin_log: who changed what, when.
- registry_node.held: an admin deactivated the node; its own requests cannot lift that.
- node_registration (node, issued_at) unique. Copies stored twice by the race this closes
  are removed first (the earliest stays): they are the same signed request.

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
        "api_key",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("token_hash", sa.LargeBinary(), nullable=False),
        sa.Column("period_us", sa.BigInteger(), nullable=False),
        sa.Column("burst", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("revoked_at", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
        sa.UniqueConstraint("token_hash"),
    )
    unlogged = ["UNLOGGED"] if op.get_bind().dialect.name == "postgresql" else []
    op.create_table(
        "rate_window",
        sa.Column("bucket", sa.Text(), nullable=False),
        sa.Column("tat", sa.BigInteger(), nullable=False),
        sa.Column("period", sa.BigInteger(), nullable=False),
        sa.Column("burst", sa.BigInteger(), nullable=False),
        sa.Column("allowed", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("bucket"),
        prefixes=unlogged,
    )
    op.create_table(
        "admin_log",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", sa.BigInteger(), nullable=False),
        sa.Column("who", sa.Text(), nullable=False),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.add_column(
        "registry_node",
        sa.Column("held", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.execute(
        "DELETE FROM node_registration WHERE id NOT IN "
        "(SELECT MIN(id) FROM node_registration GROUP BY node, issued_at)"
    )
    op.create_index(
        "ux_node_registration_request",
        "node_registration",
        ["node", "issued_at"],
        unique=True,
    )


def downgrade() -> None:
    op.drop_index("ux_node_registration_request", table_name="node_registration")
    with op.batch_alter_table("registry_node") as batch:
        batch.drop_column("held")
    op.drop_table("admin_log")
    op.drop_table("rate_window")
    op.drop_table("api_key")

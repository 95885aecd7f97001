"""Initial store: sessions, best receipts, quarantine, registries, rejection log.

One revision for SQLite and PostgreSQL. uint64 columns (U64 below) are BIGINT holding
value - 2**63 (see settlement.adapters.db.tables): exact and order-preserving on both.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

U64 = sa.BigInteger()


def upgrade() -> None:
    op.create_table(
        "delivery_best",
        sa.Column("viewer", sa.LargeBinary(), autoincrement=False, nullable=False),
        sa.Column("session_id", sa.LargeBinary(), autoincrement=False, nullable=False),
        sa.Column("node", sa.LargeBinary(), autoincrement=False, nullable=False),
        sa.Column("bucket", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("bytes_served", U64, nullable=False),
        sa.Column("segments_served", sa.BigInteger(), nullable=False),
        sa.Column("issued_at", U64, nullable=False),
        sa.Column("signature", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("viewer", "session_id", "node", "bucket"),
    )
    op.create_table(
        "node_registration",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("node", sa.LargeBinary(), nullable=False),
        sa.Column("label", sa.Text(), nullable=False),
        sa.Column("issued_at", U64, nullable=False),
        sa.Column("signature", sa.LargeBinary(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("requested_at", U64, nullable=False),
        sa.Column("decided_at", U64, nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_node_registration_node", "node_registration", ["node"])

    op.create_table(
        "quarantine",
        sa.Column("viewer", sa.LargeBinary(), autoincrement=False, nullable=False),
        sa.Column("session_id", sa.LargeBinary(), autoincrement=False, nullable=False),
        sa.Column("stored_at", U64, nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("evidence_stored", sa.Text(), nullable=True),
        sa.Column("evidence_received", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("viewer", "session_id"),
    )
    op.create_table(
        "receipt_session",
        sa.Column("viewer", sa.LargeBinary(), autoincrement=False, nullable=False),
        sa.Column("session_id", sa.LargeBinary(), autoincrement=False, nullable=False),
        sa.Column("content_id", sa.LargeBinary(), nullable=False),
        sa.Column("started_at", U64, nullable=False),
        sa.Column("last_bucket", sa.BigInteger(), nullable=False),
        sa.Column("quarantined_at", U64, nullable=True),
        sa.PrimaryKeyConstraint("viewer", "session_id"),
    )
    op.create_index("ix_receipt_session_started_at", "receipt_session", ["started_at"])

    op.create_table(
        "registry_content",
        sa.Column("content_id", sa.LargeBinary(), autoincrement=False, nullable=False),
        sa.Column("creator", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("content_id"),
    )
    op.create_table(
        "registry_node",
        sa.Column("address", sa.LargeBinary(), autoincrement=False, nullable=False),
        sa.Column("label", sa.Text(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("address"),
    )
    op.create_table(
        "registry_state",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "registry_viewer",
        sa.Column("address", sa.LargeBinary(), autoincrement=False, nullable=False),
        sa.PrimaryKeyConstraint("address"),
    )
    op.create_table(
        "rejection_count",
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("node", sa.LargeBinary(), autoincrement=False, nullable=False),
        sa.Column("epoch", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("reason", "node", "epoch"),
    )
    op.create_table(
        "rejection_cursor",
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("written", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("reason"),
    )
    op.create_table(
        "rejection_sample",
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("slot", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("stored_at", U64, nullable=False),
        sa.Column("node", sa.LargeBinary(), nullable=False),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("raw", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("reason", "slot"),
    )
    op.create_table(
        "view_best",
        sa.Column("viewer", sa.LargeBinary(), autoincrement=False, nullable=False),
        sa.Column("session_id", sa.LargeBinary(), autoincrement=False, nullable=False),
        sa.Column("bucket", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("watch_seconds", sa.BigInteger(), nullable=False),
        sa.Column("issued_at", U64, nullable=False),
        sa.Column("signature", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("viewer", "session_id", "bucket"),
    )


def downgrade() -> None:
    op.drop_table("view_best")
    op.drop_table("rejection_sample")
    op.drop_table("rejection_cursor")
    op.drop_table("rejection_count")
    op.drop_table("registry_viewer")
    op.drop_table("registry_state")
    op.drop_table("registry_node")
    op.drop_table("registry_content")
    op.drop_index("ix_receipt_session_started_at", table_name="receipt_session")

    op.drop_table("receipt_session")
    op.drop_table("quarantine")
    op.drop_index("ix_node_registration_node", table_name="node_registration")

    op.drop_table("node_registration")
    op.drop_table("delivery_best")

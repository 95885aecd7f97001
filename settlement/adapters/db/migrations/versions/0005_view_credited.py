"""The view watermark split in two (PROTOCOL version 2, sections 4, 5 and 8): `watch_seconds`
is now the raw watchSeconds of the view key's last included candidate, and `credited` the
clipped watch seconds credited so far. Version 1 kept only the clipped value as the
watermark, so a session watched past its delivered segments stayed above it and was
included at every close or at none, depending on which sessions the close read.

Upgrade, as PROTOCOL 8 says: `credited` := the version 1 watermark, and the raw watermark :=
the same value (the first close after it includes such a session once more, crediting
nothing new, and then never again). Downgrade: the version 1 watermark is `credited`.

The table is rebuilt with its rows copied, as 0004 does it, the same on SQLite and
PostgreSQL (SQLite adds a NOT NULL column only with a default the tables do not have).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

# The compared metadata: epoch_db's tables.
import settlement.adapters.db.epochs  # noqa: F401

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def _rebuild(columns: list[sa.Column], select: str) -> None:
    """view_watermark with `columns` after (viewer, session_id, epoch), its rows as `select`
    (the expressions over the old table, in that order) gives them."""
    names = ", ".join(["viewer", "session_id", "epoch", *(c.name for c in columns)])
    op.create_table(
        "view_watermark_new",
        sa.Column("viewer", sa.LargeBinary(), nullable=False),
        sa.Column("session_id", sa.LargeBinary(), nullable=False),
        sa.Column("epoch", sa.BigInteger(), autoincrement=False, nullable=False),
        *columns,
    )
    op.execute(
        f"INSERT INTO view_watermark_new ({names}) "
        f"SELECT viewer, session_id, epoch, {select} FROM view_watermark"
    )
    op.drop_table("view_watermark")
    op.rename_table("view_watermark_new", "view_watermark")


def upgrade() -> None:
    _rebuild(
        [
            sa.Column("watch_seconds", sa.BigInteger(), nullable=False),
            sa.Column("credited", sa.BigInteger(), nullable=False),
        ],
        "watch_seconds, watch_seconds",
    )


def downgrade() -> None:
    _rebuild([sa.Column("watch_seconds", sa.BigInteger(), nullable=False)], "credited")

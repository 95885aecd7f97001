"""The schema: SQLModel tables (what Alembic migrations compare against) and the migrations.

Every uint64 (times, bytes served) is stored as a signed 64-bit integer offset by 2**63:
exact over the full range, and ordered like the value, so SQL comparisons still work.
Read such columns through the store's reads, or with `dec` (stored + 2**63).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy import BigInteger, Boolean, Column, Index, Integer, LargeBinary, Text
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel

U64_OFFSET: Final = 2**63
log = logging.getLogger(__name__)

MIGRATIONS_DIR: Final = Path(__file__).with_name("migrations")


def enc(value: int) -> int:
    """uint64 -> the signed 64-bit integer stored for it (order-preserving)."""
    return value - U64_OFFSET


def dec(value: int) -> int:
    """The stored signed 64-bit integer -> its uint64."""
    return value + U64_OFFSET


class U64(TypeDecorator):
    """uint64 in a BIGINT (both stores' integers are signed 64-bit): value - 2**63."""

    impl = BigInteger
    cache_ok = True

    def process_bind_param(self, value: int | None, dialect: Any) -> int | None:
        return None if value is None else enc(value)

    def process_result_value(self, value: int | None, dialect: Any) -> int | None:
        return None if value is None else dec(value)


# --- tables ---------------------------------------------------------------------------
# Columns are declared with sa_column so both dialects get exactly these types; the one
# Alembic revision creates the same, and a test compares them.


def pk_bytes() -> Any:
    """A bytes primary-key column (addresses, ids); shared by every adapter's tables."""
    return Field(sa_column=Column(LargeBinary, primary_key=True, autoincrement=False))


def pk_int() -> Any:
    """A bigint primary-key column the caller numbers (epochs, buckets), no autoincrement."""
    return Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))


def bytes_column(name: str) -> Column:
    """A required bytes column of a plain (keyless) sa.Table."""
    return Column(name, LargeBinary, nullable=False)


class ReceiptSession(SQLModel, table=True):
    """A session (viewer, sessionId): its one contentId and startedAt, and its quarantine."""

    __tablename__ = "receipt_session"
    viewer: bytes = pk_bytes()
    session_id: bytes = pk_bytes()
    content_id: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    started_at: int = Field(sa_column=Column(U64, nullable=False))
    # Highest bucket any stored receipt of the session is in (retention waits for its close).
    last_bucket: int = Field(sa_column=Column(BigInteger, nullable=False))
    # When the first conflict was stored (uint64 unix seconds); NULL: not quarantined.
    quarantined_at: int | None = Field(default=None, sa_column=Column(U64, nullable=True))

    __table_args__ = (Index("ix_receipt_session_started_at", "started_at"),)


class DeliveryBest(SQLModel, table=True):
    """Best delivery receipt per key (viewer, sessionId, node) and bucket (PROTOCOL 4)."""

    __tablename__ = "delivery_best"
    viewer: bytes = pk_bytes()
    session_id: bytes = pk_bytes()
    node: bytes = pk_bytes()
    bucket: int = pk_int()
    bytes_served: int = Field(sa_column=Column(U64, nullable=False))
    segments_served: int = Field(sa_column=Column(BigInteger, nullable=False))
    issued_at: int = Field(sa_column=Column(U64, nullable=False))
    signature: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class ViewBest(SQLModel, table=True):
    """Best view receipt per key (viewer, sessionId) and bucket."""

    __tablename__ = "view_best"
    viewer: bytes = pk_bytes()
    session_id: bytes = pk_bytes()
    bucket: int = pk_int()
    watch_seconds: int = Field(sa_column=Column(BigInteger, nullable=False))
    issued_at: int = Field(sa_column=Column(U64, nullable=False))
    signature: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class Quarantine(SQLModel, table=True):
    """Evidence of a quarantined session: the two conflicting signed receipts (wire JSON)."""

    __tablename__ = "quarantine"
    viewer: bytes = pk_bytes()
    session_id: bytes = pk_bytes()
    stored_at: int = Field(sa_column=Column(U64, nullable=False))
    detail: str = Field(sa_column=Column(Text, nullable=False))
    evidence_stored: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    evidence_received: str = Field(sa_column=Column(Text, nullable=False))


class RegistryNode(SQLModel, table=True):
    __tablename__ = "registry_node"
    address: bytes = pk_bytes()
    label: str = Field(sa_column=Column(Text, nullable=False))
    active: bool = Field(sa_column=Column(Boolean, nullable=False))
    # An admin deactivated it: the node's own signed requests (open mode) no longer
    # re-activate it; they wait as pending until an admin decides.
    held: bool = Field(
        default=False, sa_column=Column(Boolean, nullable=False, server_default=sa.false())
    )


class RegistryContent(SQLModel, table=True):
    __tablename__ = "registry_content"
    content_id: bytes = pk_bytes()
    creator: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class RegistryViewer(SQLModel, table=True):
    __tablename__ = "registry_viewer"
    address: bytes = pk_bytes()


class RegistryState(SQLModel, table=True):
    """One row: a counter bumped by every registry change, so ingest reloads only then."""

    __tablename__ = "registry_state"
    id: int = Field(sa_column=Column(Integer, primary_key=True, autoincrement=False))
    version: int = Field(sa_column=Column(BigInteger, nullable=False))


class NodeRegistration(SQLModel, table=True):
    """A node operator's signed registration request and the platform's decision."""

    __tablename__ = "node_registration"
    id: int | None = Field(default=None, sa_column=Column(Integer, primary_key=True))
    node: bytes = Field(sa_column=Column(LargeBinary, nullable=False, index=True))
    label: str = Field(sa_column=Column(Text, nullable=False))
    issued_at: int = Field(sa_column=Column(U64, nullable=False))
    signature: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    status: str = Field(sa_column=Column(Text, nullable=False))  # pending|approved|rejected
    requested_at: int = Field(sa_column=Column(U64, nullable=False))
    decided_at: int | None = Field(default=None, sa_column=Column(U64, nullable=True))

    # A signed request is stored once, also when two copies race (ON CONFLICT DO NOTHING).
    __table_args__ = (Index("ux_node_registration_request", "node", "issued_at", unique=True),)


class RejectionCount(SQLModel, table=True):
    """Every verdict but `accepted`, counted by (reason, node, epoch): always, never sampled.

    `reason` is a PROTOCOL reason code, or `duplicate` / `stale`; `node` is empty for view
    receipts and unparsable items; `epoch` is the receipt's bucket, 0 when it has none.
    """

    __tablename__ = "rejection_count"
    reason: str = Field(sa_column=Column(Text, primary_key=True))
    node: bytes = pk_bytes()
    epoch: int = pk_int()
    count: int = Field(sa_column=Column(BigInteger, nullable=False))


class RejectionSample(SQLModel, table=True):
    """Raw rejected items, a ring buffer of `rejection_sample_cap` slots per reason."""

    __tablename__ = "rejection_sample"
    reason: str = Field(sa_column=Column(Text, primary_key=True))
    slot: int = Field(sa_column=Column(Integer, primary_key=True, autoincrement=False))
    stored_at: int = Field(sa_column=Column(U64, nullable=False))
    node: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    epoch: int = Field(sa_column=Column(BigInteger, nullable=False))
    detail: str = Field(sa_column=Column(Text, nullable=False))
    raw: str = Field(sa_column=Column(Text, nullable=False))


class RejectionCursor(SQLModel, table=True):
    """Samples written so far per reason; the next slot is `written % cap`."""

    __tablename__ = "rejection_cursor"
    reason: str = Field(sa_column=Column(Text, primary_key=True))
    written: int = Field(sa_column=Column(BigInteger, nullable=False))


class ApiKey(SQLModel, table=True):
    """A client's API key: its SHA-256 (the token is shown once, at creation) and its rate."""

    __tablename__ = "api_key"
    id: int | None = Field(default=None, sa_column=Column(Integer, primary_key=True))
    name: str = Field(sa_column=Column(Text, nullable=False, unique=True))
    token_hash: bytes = Field(sa_column=Column(LargeBinary, nullable=False, unique=True))
    period_us: int = Field(sa_column=Column(BigInteger, nullable=False))  # 1e6 / rate
    burst: int = Field(sa_column=Column(BigInteger, nullable=False))
    created_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    revoked_at: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))


class RateWindow(SQLModel, table=True):
    """One rate-limit bucket shared by every worker and instance: `key:<id>` of an API key
    or `addr:<address>` of a keyless client. `tat` is the GCRA theoretical arrival time
    (microseconds); a bucket whose tat has passed is full, the same as no row, so such rows
    are pruned. UNLOGGED on PostgreSQL: no WAL, and a crash merely refills every bucket."""

    __tablename__ = "rate_window"
    bucket: str = Field(sa_column=Column(Text, primary_key=True))
    tat: int = Field(sa_column=Column(BigInteger, nullable=False))
    period: int = Field(sa_column=Column(BigInteger, nullable=False))
    burst: int = Field(sa_column=Column(BigInteger, nullable=False))
    allowed: bool = Field(sa_column=Column(Boolean, nullable=False))


class AdminLogRow(SQLModel, table=True):
    """Every admin change: who (the admin token's name, or cli:<user>), what, when."""

    __tablename__ = "admin_log"
    id: int | None = Field(default=None, sa_column=Column(Integer, primary_key=True))
    at: int = Field(sa_column=Column(BigInteger, nullable=False))
    who: str = Field(sa_column=Column(Text, nullable=False))
    action: str = Field(sa_column=Column(Text, nullable=False))
    detail: str = Field(sa_column=Column(Text, nullable=False))


# A close reads only the sessions touched since the closes before it (see close_io.SetClose):
# every batch appends a row per (session, bucket) whose best receipts it changed, in its own
# transaction, and the close that consumes them deletes the rows its snapshot saw. Rows a
# close could not see stay for the next one, so a receipt committed while a close runs is
# never passed over. Append-only without an index: ingest pays one cheap insert a batch.
SESSION_TOUCH: Final = sa.Table(
    "session_touch",
    SQLModel.metadata,
    bytes_column("viewer"),
    bytes_column("session_id"),
    Column("bucket", BigInteger, nullable=False),
)


# --- the epoch tables: what a close writes (their SQL: epochs.py, close_io.py) -----------


class EpochRow(SQLModel, table=True):
    """A closed epoch: its manifest bytes (the published one), root and carried pools."""

    __tablename__ = "epoch"
    epoch: int = pk_int()
    # The close's `now`: conflicts stored before it are in this close's quarantine set.
    close_started: int = Field(sa_column=Column(U64, nullable=False))
    root: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    data_hash: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    cumulative_total: str = Field(sa_column=Column(Text, nullable=False))
    # False: no balance changed, nothing to propose (PROTOCOL 5).
    proposes: bool = Field(sa_column=Column(Boolean, nullable=False))
    carried_node: str = Field(sa_column=Column(Text, nullable=False))
    carried_viewer: str = Field(sa_column=Column(Text, nullable=False))
    carried_creator: str = Field(sa_column=Column(Text, nullable=False))
    manifest: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    # dataHash of the correction whose leaves were the floor this close built under (PROTOCOL
    # 6); NULL: no floor. A close built under an older floor than the one in force is never
    # proposed.
    floor: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))


class CorrectionRow(SQLModel, table=True):
    """A published correction (PROTOCOL 6), in publication order. Once the distributor has
    accepted it (`accepted_block`), its leaves are the floor of every later close."""

    __tablename__ = "correction"
    id: int | None = Field(default=None, sa_column=Column(Integer, primary_key=True))
    data_hash: bytes = Field(sa_column=Column(LargeBinary, nullable=False, unique=True))
    # The last closed epoch when it was published: the manifest before it is that epoch's or
    # a correction published after it, and the next close chains to it.
    epoch: int = Field(sa_column=Column(BigInteger, nullable=False))
    corrects: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    claimed_at_block: int = Field(sa_column=Column(BigInteger, nullable=False))
    root: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    cumulative_total: str = Field(sa_column=Column(Text, nullable=False))
    manifest: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    accepted_block: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))


class CorrectionLeafRow(SQLModel, table=True):
    """One leaf of a correction: max(balance, claimed) of one account; the floor once the
    correction is accepted."""

    __tablename__ = "correction_leaf"
    data_hash: bytes = pk_bytes()
    account: bytes = pk_bytes()
    amount: str = Field(sa_column=Column(Text, nullable=False))


class AllocationRow(SQLModel, table=True):
    """What one account got from one class's pool in one epoch."""

    __tablename__ = "allocation"
    epoch: int = pk_int()
    account: bytes = pk_bytes()
    cls: str = Field(sa_column=Column("class", Text, primary_key=True))
    amount: str = Field(sa_column=Column(Text, nullable=False))


class BalanceRow(SQLModel, table=True):
    """Cumulative earnings of an account by class after `epoch` (a row per epoch it earned)."""

    __tablename__ = "balance"
    account: bytes = pk_bytes()
    epoch: int = pk_int()
    node: str = Field(sa_column=Column(Text, nullable=False))
    viewer: str = Field(sa_column=Column(Text, nullable=False))
    creator: str = Field(sa_column=Column(Text, nullable=False))


class PinnedValueRow(SQLModel, table=True):
    """A value the store fixes at its first start and keeps (the genesis when neither
    W2E_GENESIS nor a deployment record gives one): see adapters/db/pinned.py."""

    __tablename__ = "pinned_value"
    name: str = Field(sa_column=Column(Text, primary_key=True))
    value: int = Field(sa_column=Column(BigInteger, nullable=False))
    pinned_at: int = Field(sa_column=Column(BigInteger, nullable=False))


class AuditVerdictRow(SQLModel, table=True):
    """The watchtower's verdict on one proposed root (epoch, kind 'epoch' | 'correction'),
    upserted on a re-audit: see adapters/db/verdicts.py."""

    __tablename__ = "audit_verdict"
    epoch: int = Field(sa_column=Column(BigInteger, primary_key=True))
    kind: str = Field(sa_column=Column(Text, primary_key=True))
    root: str = Field(sa_column=Column(Text, primary_key=True))
    ok: bool = Field(sa_column=Column(Boolean, nullable=False))
    mismatches: int = Field(sa_column=Column(BigInteger, nullable=False))
    first_mismatch: str = Field(sa_column=Column(Text, nullable=False))
    audited_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    source: str = Field(sa_column=Column(Text, nullable=False))


# The watermark tables have no primary key and no index: a close appends every key it moved
# (1.4M rows at a million sessions) and a primary key's index made that insert take twice as
# long. Nothing looks a row up by key: the close reads them all in one sorted pass (the
# current watermark of a key is its maximum, as watermarks never move down), and retention
# deletes a pruned session's rows by a scan. A close writes each key once per epoch.
DELIVERY_WATERMARK: Final = sa.Table(
    "delivery_watermark",
    SQLModel.metadata,
    bytes_column("viewer"),
    bytes_column("session_id"),
    bytes_column("node"),
    Column("epoch", BigInteger, nullable=False),
    Column("bytes_served", U64, nullable=False),
    Column("segments_served", BigInteger, nullable=False),
)
# A session's view watermark and credited watch seconds as moved by the close of `epoch`
# (PROTOCOL 4-5): `watch_seconds` the raw watchSeconds of its last included view candidate,
# `credited` the clipped seconds credited so far. Both only grow: each is its own maximum.
VIEW_WATERMARK: Final = sa.Table(
    "view_watermark",
    SQLModel.metadata,
    bytes_column("viewer"),
    bytes_column("session_id"),
    Column("epoch", BigInteger, nullable=False),
    Column("watch_seconds", BigInteger, nullable=False),
    Column("credited", BigInteger, nullable=False),
)

# Every table a close writes, by name.
EPOCH_TABLES: Final = (
    EpochRow.__tablename__,
    AllocationRow.__tablename__,
    BalanceRow.__tablename__,
    DELIVERY_WATERMARK.name,
    VIEW_WATERMARK.name,
    CorrectionRow.__tablename__,
    CorrectionLeafRow.__tablename__,
)

METADATA: Final = SQLModel.metadata
TABLES: Final = (
    ReceiptSession,
    DeliveryBest,
    ViewBest,
    Quarantine,
    RegistryNode,
    RegistryContent,
    RegistryViewer,
    RegistryState,
    NodeRegistration,
    RejectionCount,
    RejectionSample,
    RejectionCursor,
    ApiKey,
    RateWindow,
    AdminLogRow,
)
TABLE_NAMES: Final = (*(t.__tablename__ for t in TABLES), SESSION_TOUCH.name)


# --- migrations -----------------------------------------------------------------------

_PG_MIGRATION_LOCK: Final = 0x5732_4553_544F_5245  # pg_advisory_xact_lock key of migrations


def compare_type(
    ctx: Any, inspected_column: Any, metadata_column: Any, inspected_type: Any, metadata_type: Any
) -> bool | None:
    """Alembic type comparison: U64 is a BIGINT underneath; every other type the default way."""
    if isinstance(metadata_type, U64):
        return not isinstance(inspected_type, BigInteger)
    return None


def alembic_config(connection: Any = None) -> Any:
    """Alembic's Config for the package's migrations (no alembic.ini needed)."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def migrate(engine: sa.Engine) -> None:
    """`alembic upgrade head` on this engine; concurrent callers wait for each other.

    On PostgreSQL the schema the URL's search_path names is created first. Alembic's own
    INFO lines are kept out of the caller's log: one line says what changed, if anything.
    """
    from alembic import command
    from alembic.runtime.migration import MigrationContext

    logging.getLogger("alembic").setLevel(logging.WARNING)
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_MIGRATION_LOCK})")
            create_search_path_schema(conn)
        before = MigrationContext.configure(conn).get_current_revision()
        command.upgrade(alembic_config(conn), "head")
        after = MigrationContext.configure(conn).get_current_revision()
    if before != after:
        log.info("database migrated from %s to %s", before or "an empty schema", after)


def create_search_path_schema(conn: Any) -> str | None:
    """CREATE SCHEMA IF NOT EXISTS the first schema of the connection's search_path (as set
    by `?options=-csearch_path%3Dname`), unless it exists. Returns the schema created."""
    if conn.exec_driver_sql("SELECT current_schema()").scalar() is not None:
        return None  # the first schema of the path exists
    path = str(conn.exec_driver_sql("SHOW search_path").scalar() or "")
    first = path.split(",")[0].strip()
    if first.startswith('"') and first.endswith('"') and len(first) >= 2:
        first = first[1:-1].replace('""', '"')
    if not first or first == "$user":
        return None
    quoted = '"' + first.replace('"', '""') + '"'
    conn.exec_driver_sql(f"CREATE SCHEMA IF NOT EXISTS {quoted}")
    log.info("created schema %s", quoted)
    return first


def schema_revision(engine: sa.Engine) -> tuple[str | None, str]:
    """(revision the database is at, the code's head)."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    with engine.connect() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
    return current, head or ""

"""The Alembic revision builds exactly the SQLModel schema, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from storekit import BACKENDS, backend_url

from settlement.adapters.db.store import open_store
from settlement.adapters.db.tables import METADATA, compare_type, schema_revision
from settlement.errors import SchemaOutdated


@pytest.mark.parametrize("backend", BACKENDS)
def test_migrated_schema_matches_the_sqlmodel_tables(backend, tmp_path):
    with backend_url(backend, tmp_path) as url:
        store = open_store(url)
        try:
            current, head = schema_revision(store.engine)
            assert current == head and head != ""
            with store.engine.connect() as conn:
                ctx = MigrationContext.configure(conn, opts={"compare_type": compare_type})
                diff = compare_metadata(ctx, METADATA)
            assert diff == []
        finally:
            store.close()
        # Opening again (as a second worker does) finds the schema at head: no-op.
        open_store(url).close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_open_without_create_needs_a_migrated_schema(backend, tmp_path):
    with backend_url(backend, tmp_path) as url:
        with pytest.raises(SchemaOutdated, match="upgrade head"):
            open_store(url, create=False)
        open_store(url).close()
        open_store(url, create=False).close()


def test_compare_sees_a_real_difference(tmp_path):
    """The comparison is not vacuous: a table the migration lacks shows up."""
    import sqlalchemy as sa

    store = open_store(f"sqlite:///{tmp_path}/x.db")
    try:
        extra = sa.MetaData()
        for table in METADATA.tables.values():
            table.to_metadata(extra)
        sa.Table("not_migrated", extra, sa.Column("id", sa.Integer, primary_key=True))
        with store.engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": compare_type})
            diff = compare_metadata(ctx, extra)
        assert [d[0] for d in diff] == ["add_table"]
    finally:
        store.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_0005_splits_the_view_watermark_into_raw_and_credited(backend, tmp_path):
    """A version 1 store's view watermark (the clipped seconds) becomes both the raw
    watermark and `credited` (PROTOCOL 8); downgrading gives version 1 back `credited`."""
    import sqlalchemy as sa
    from alembic import command

    from settlement.adapters.db.store import _engine
    from settlement.adapters.db.tables import alembic_config

    v1_rows = [
        (b"\x01" * 20, b"\x0a" * 32, 1, 8),
        (b"\x01" * 20, b"\x0a" * 32, 2, 12),  # a later close moved it: rows per epoch
        (b"\x02" * 20, b"\x0b" * 32, 1, 0),
        (b"\x03" * 20, b"\x0c" * 32, 3, 2**32 - 1),
    ]
    with backend_url(backend, tmp_path) as url:
        engine, _ = _engine(url, 1, "FULL")
        try:
            with engine.begin() as conn:
                command.upgrade(alembic_config(conn), "0004")
                conn.execute(
                    sa.text(
                        "INSERT INTO view_watermark (viewer, session_id, epoch, watch_seconds) "
                        "VALUES (:v, :s, :e, :w)"
                    ),
                    [dict(zip("vsew", r, strict=True)) for r in v1_rows],
                )
            with engine.begin() as conn:
                command.upgrade(alembic_config(conn), "0005")
            select = "SELECT viewer, session_id, epoch, watch_seconds{} FROM view_watermark"
            with engine.connect() as conn:
                got = conn.exec_driver_sql(select.format(", credited")).fetchall()
            assert sorted((bytes(v), bytes(s), e, w, c) for v, s, e, w, c in got) == sorted(
                (*r, r[3]) for r in v1_rows
            )
            # Version 2 moves them apart; a downgrade keeps what was credited.
            with engine.begin() as conn:
                conn.exec_driver_sql("UPDATE view_watermark SET watch_seconds = watch_seconds + 5")
                command.downgrade(alembic_config(conn), "0004")
            with engine.connect() as conn:
                got = conn.exec_driver_sql(select.format("")).fetchall()
            assert sorted((bytes(v), bytes(s), e, w) for v, s, e, w in got) == sorted(v1_rows)
        finally:
            engine.dispose()
        # And up to head again: the store opens.
        open_store(url).close()

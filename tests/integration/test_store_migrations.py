"""The Alembic revision builds exactly the SQLModel schema, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from storekit import BACKENDS, backend_url

from settlement.adapters.db import METADATA, compare_type, open_store, schema_revision
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

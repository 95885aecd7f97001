"""Alembic environment: the SQLModel tables of settlement.adapters.db.tables are the target.

Programmatic runs (open_store) hand in their connection; the command line takes
`-x url=...`, else W2E_DATABASE_URL through Settings.
"""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context

from settlement.adapters.db import tables
from settlement.adapters.db.store import _engine

config = context.config
if config.config_file_name is not None and config.attributes.get("connection") is None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = tables.METADATA


def _configure(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=tables.compare_type,
        render_as_batch=connection.dialect.name == "sqlite",
    )


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    url = context.get_x_argument(as_dictionary=True).get("url")
    if url is None:
        from settlement.config import load_settings

        url = load_settings().database_url
    engine, _ = _engine(url, pool_size=1, sqlite_synchronous="FULL")
    try:
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({tables._PG_MIGRATION_LOCK})")
                tables.create_search_path_schema(conn)
            _configure(conn)
            context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported: run against a database")
run_migrations_online()

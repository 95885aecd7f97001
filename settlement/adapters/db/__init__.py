"""The store: tables, migrations, SQLite and PostgreSQL, the close's columnar reads."""

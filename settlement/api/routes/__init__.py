"""Route modules: receipts ingest, registry admin, node registration requests, health."""

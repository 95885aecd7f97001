"""One module per outside system (database, chain)."""

"""The explorer and claim page: server-rendered pages at / over the read API (no build step)."""

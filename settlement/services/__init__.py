"""Use cases: they join the pure domain and the adapters; no HTTP, no Typer, no scheduler."""

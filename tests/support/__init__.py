"""Test harnesses shared by tests and scripts/benches: the anvil manager, the server process."""

"""Compiled contract artifacts exported from the forge build by scripts/export-abi."""

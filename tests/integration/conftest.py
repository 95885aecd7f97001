"""Fixtures shared by the integration tests (helpers live in storekit.py)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
from storekit import opened

from settlement.adapters.db.store import Store


@pytest.fixture(scope="module")
def stores(tmp_path_factory: Any) -> Iterator[Any]:
    """One migrated store per backend for a test module, opened on first use: `stores(name)`.

    Tests empty the tables with `storekit.reset` before use.
    """
    with contextlib.ExitStack() as stack:
        opened_stores: dict[str, Store] = {}

        def get(backend: str) -> Store:
            if backend not in opened_stores:
                path = tmp_path_factory.mktemp(backend)
                opened_stores[backend] = stack.enter_context(opened(backend, path))
            return opened_stores[backend]

        yield get

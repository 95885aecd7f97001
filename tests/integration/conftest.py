"""Fixtures shared by the integration tests (helpers live in storekit.py)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
from storekit import BACKENDS, World, opened, reset

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


@pytest.fixture(params=BACKENDS)
def store(request: Any, stores: Any) -> Store:
    """The module's store of each backend, emptied (a module may define its own)."""
    s: Store = stores(request.param)
    reset(s)
    return s


@pytest.fixture
def world(store: Store) -> World:
    """Keys, nodes, content and a viewer, registered in `store`."""
    w = World()
    w.register(store)
    return w

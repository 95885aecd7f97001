"""Shared pieces of the store tests: a store per test on SQLite and on PostgreSQL, keys and
signed receipts. PostgreSQL tests run in a schema of their own, dropped afterwards."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest

from settlement.adapters.db.store import Store, open_store
from settlement.config import Settings
from settlement.domain.receipts import (
    DeliveryReceipt,
    Domain,
    ViewReceipt,
    address_of,
    keccak,
    sign,
)
from settlement.domain.wire import to_wire

GENESIS = 1_767_225_600
EPOCH = 3600
GRACE = 300
DISTRIBUTOR = "0x5fbdb2315678afecb367f032d93f642f64180aa3"
NOW = GENESIS + 10 * EPOCH  # every receipt below is in its time window at NOW
BACKENDS = ["sqlite", "postgresql"]

_ENV = Settings(_env_file=None)
PG_URL = _ENV.test_database_url


def settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "chain_id": 31337,
        "distributor": DISTRIBUTOR,
        "genesis": GENESIS,
        "epoch_seconds": EPOCH,
        "grace_seconds": GRACE,
        "rejection_sample_cap": 50,
        "rejection_sample_per_batch": 8,
        # The store, close and reward tests count bytes in small units (300 bytes for 3
        # segments) to keep their arithmetic readable; bytes per segment (PROTOCOL 3 row 4)
        # is tested in tests/unit/test_receipts.py and the receipt vectors. Tests of real
        # traffic (simulator, vectors) pass the receipt parameters they were made with.
        "min_segment_bytes": 0,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


def skip_module_without(what: str) -> None:
    """Skip the calling test module because `what` is missing, except on CI (CI=true), where
    a missing tool must fail the run rather than pass it silently."""
    if _ENV.ci:
        raise RuntimeError(f"CI=true but {what} is missing: run scripts/setup")
    pytest.skip(f"{what} not installed (run scripts/setup)", allow_module_level=True)


def pg_reachable() -> bool:
    try:
        with psycopg.connect(PG_URL, connect_timeout=3):
            return True
    except psycopg.OperationalError:
        return False


def require_pg() -> None:
    """Skip without PostgreSQL, except on CI (CI=true), where its absence is a failure."""
    if pg_reachable():
        return
    if _ENV.ci:
        pytest.fail(f"PostgreSQL at {PG_URL} is unreachable and CI=true: it must run here")
    pytest.skip(f"PostgreSQL at {PG_URL} is unreachable (set CI=true to make this a failure)")


def schema_url(schema: str) -> str:
    sep = "&" if "?" in PG_URL else "?"
    return f"{PG_URL}{sep}options=-csearch_path%3D{schema}"


@contextmanager
def pg_schema() -> Iterator[str]:
    """A fresh PostgreSQL schema (its URL), dropped with everything in it afterwards."""
    name = f"w2e_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
    try:
        yield schema_url(name)
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


@contextmanager
def backend_url(backend: str, tmp_path: Any) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path}/store.db"
        return
    require_pg()
    with pg_schema() as url:
        yield url


@contextmanager
def opened(backend: str, tmp_path: Any) -> Iterator[Store]:
    with backend_url(backend, tmp_path) as url:
        store = open_store(url)
        try:
            yield store
        finally:
            store.close()


def reset(store: Store) -> None:
    """Empty every table (cheaper than a new schema and its migration per test)."""
    from settlement.adapters.db.tables import TABLE_NAMES

    def fn(cur: Any) -> None:
        for table in TABLE_NAMES:
            cur.execute(f"DELETE FROM {table}")

    store._run(fn)


def key(label: str) -> bytes:
    return keccak(label.encode())


class World:
    """Keys of a small network and signed receipts under the test domain."""

    def __init__(self) -> None:
        self.domain = Domain.from_hex(31337, DISTRIBUTOR)
        self.viewer_key = key("viewer")
        self.viewer = address_of(self.viewer_key)
        self.node_key = key("node")
        self.node = address_of(self.node_key)
        self.node2 = address_of(key("node2"))
        self.creator_key = key("creator")
        self.creator = address_of(self.creator_key)
        self.content = key("content")
        self.content2 = key("content2")

    def delivery(
        self,
        sid: bytes,
        bytes_served: int,
        segments: int,
        issued: int,
        *,
        node: bytes | None = None,
        content: bytes | None = None,
        started: int = GENESIS + 10,
        viewer_key: bytes | None = None,
    ) -> DeliveryReceipt:
        vk = viewer_key or self.viewer_key
        r = DeliveryReceipt(
            sid,
            address_of(vk),
            node or self.node,
            content or self.content,
            started,
            bytes_served,
            segments,
            issued,
        )
        return sign(r, self.domain, vk)

    def view(
        self,
        sid: bytes,
        watch: int,
        issued: int,
        *,
        content: bytes | None = None,
        started: int = GENESIS + 10,
        viewer_key: bytes | None = None,
    ) -> ViewReceipt:
        vk = viewer_key or self.viewer_key
        r = ViewReceipt(sid, address_of(vk), content or self.content, started, watch, issued)
        return sign(r, self.domain, vk)

    def register(self, store: Store) -> None:
        from settlement.services import registry as registry_service

        registry_service.register_node(store, self.node, "node-1")
        registry_service.register_node(store, self.node2, "node-2")
        registry_service.add_content(store, self.content, self.creator)
        registry_service.add_content(store, self.content2, self.creator)


def wire(*receipts: Any) -> list[dict[str, Any]]:
    return [to_wire(r) for r in receipts]


def verdicts(result: Any) -> list[str]:
    """Each item's label: the reason code when rejected, else the verdict."""
    return [v.reason or v.verdict for v in result.items]


@contextmanager
def close_reads(touched_only: bool | None) -> Iterator[None]:
    """Force every close to read only the sessions touched since the last close (True) or
    every live session (False); None leaves the choice to the close. Both must agree."""
    from unittest import mock

    from settlement.adapters.db.close_io import SetClose

    if touched_only is None:
        yield
        return
    with mock.patch.object(SetClose, "touched_only", lambda self: touched_only):
        yield


def ingest(store: Store, items: list[dict[str, Any]], now: int = NOW, **overrides: Any) -> Any:
    """One batch through the ingest service, with `settings(**overrides)`."""
    from settlement.services.ingest import Ingestor

    return Ingestor(store, settings(**overrides)).ingest(items, now)

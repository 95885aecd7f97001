"""Durability: a 200 answer means committed. The real server (`settlement serve`, a separate
process group) is killed with SIGKILL right after answers arrive, while other batches are
still in flight; after a restart every acknowledged receipt is there."""

from __future__ import annotations

import os
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import orjson
import psycopg
import pytest
from support.server import ServerProcess

from settlement.adapters.db.store import open_store
from settlement.domain.receipts import DeliveryReceipt
from settlement.domain.wire import parse_wire
from settlement.services.registry import load_registries
from settlement.sim.generate import SimConfig, generate

pytestmark = pytest.mark.slow  # server processes killed and restarted

PG_BASE = "postgresql://postgres@127.0.0.1:5432/test"
PG_SCHEMA = f"w2e_test_sigkill_{secrets.token_hex(4)}"  # a run of its own
BATCH = 100


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("sim")
    start = int(time.time()) - 2 * 86_400
    cfg = SimConfig(
        receipts=1600, nodes=4, viewers=60, creators=4, contents=12, start=start, workers=1
    )
    generate(cfg, out)
    return {
        "lines": (out / "receipts.ndjson").read_bytes().splitlines(),
        "registries": orjson.loads((out / "registries.json").read_bytes()),
    }


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/kill.db"
        return
    with psycopg.connect(PG_BASE, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {PG_SCHEMA} CASCADE")
        conn.execute(f"CREATE SCHEMA {PG_SCHEMA}")
    yield f"{PG_BASE}?options=-csearch_path%3D{PG_SCHEMA}"
    with psycopg.connect(PG_BASE, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {PG_SCHEMA} CASCADE")


def _key(r) -> tuple:
    node = r.node if type(r) is DeliveryReceipt else b""
    return (type(r).__name__, r.viewer, r.session_id, node)


def _counters(r) -> tuple[int, ...]:
    if type(r) is DeliveryReceipt:
        return (r.bytes_served, r.segments_served)
    return (r.watch_seconds,)


def test_every_acknowledged_receipt_survives_sigkill(database_url: str, sim: dict, tmp_path: Path):
    with open_store(database_url) as store:
        load_registries(store, sim["registries"])
    # W2E_GENESIS: the simulator's (its default); unset, the service pins its first start.
    env = {
        **os.environ,
        "W2E_DATABASE_URL": database_url,
        "W2E_RATE_LIMIT": "0",
        "W2E_GENESIS": "1767225600",
    }
    log = tmp_path / "server.log"
    lines = sim["lines"]
    batches = [lines[i : i + BATCH] for i in range(0, len(lines), BATCH)]
    acked: list[tuple[list[bytes], dict]] = []
    lock = threading.Lock()
    enough = threading.Event()

    # One worker: a second one only doubles the start-up time of this test, not what it proves.
    server = ServerProcess(env, workers=1, log=log)
    try:
        server.start()

        def send(batch: list[bytes]) -> None:
            if enough.is_set():
                return
            body = b'{"receipts":[' + b",".join(batch) + b"]}"
            try:
                r = httpx.post(server.url + "/v1/receipts", content=body, timeout=30)
            except httpx.TransportError:
                return  # in flight when the server died: no answer, no promise
            if r.status_code == 200:
                with lock:
                    acked.append((batch, r.json()))
                    if len(acked) >= len(batches) // 2:
                        enough.set()

        with ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(send, b) for b in batches]
            enough.wait(60)
            server.kill()  # right after the answers: other batches are mid-flight
            for f in futures:
                f.result()
        assert not server.pids(), "SIGKILL left server processes behind"
        assert len(acked) >= len(batches) // 2

        # Straight from the database: the best stored receipt of each acknowledged
        # accepted receipt's key is at least as high as it (best receipts never go down).
        with open_store(database_url, create=False) as store:
            best: dict[tuple, list[tuple[int, ...]]] = {}
            for stored in store.best_receipts():
                best.setdefault(_key(stored.receipt), []).append(_counters(stored.receipt))
        accepted = 0
        for batch, answer in acked:
            for line, item in zip(batch, answer["results"], strict=True):
                if item["verdict"] == "accepted":
                    accepted += 1
                    r = parse_wire(line)
                    stored = best.get(_key(r), [])
                    assert any(
                        all(s >= c for s, c in zip(kept, _counters(r), strict=True))
                        for kept in stored
                    ), f"acknowledged receipt lost: {line[:120]!r}"
        assert accepted > len(acked) * BATCH // 2

        # And through a restarted server: nothing acknowledged is new to it.
        server = ServerProcess(env, workers=1, log=log).start()
        for batch, answer in acked:
            body = b'{"receipts":[' + b",".join(batch) + b"]}"
            again = httpx.post(server.url + "/v1/receipts", content=body, timeout=30).json()
            for before, after in zip(answer["results"], again["results"], strict=True):
                if before["verdict"] in ("accepted", "duplicate", "stale"):
                    # stored; CONFLICT when a later receipt quarantined its session
                    assert after["verdict"] in ("duplicate", "stale") or (
                        after["reason"] == "CONFLICT"
                    ), (before, after)
    finally:
        server.stop()
    assert not server.pids()

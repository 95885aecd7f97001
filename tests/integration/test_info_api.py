"""GET /v1/info over the real app on SQLite: the signing domain, parameters and clock a
player, a node or the simulator needs, exactly as the service verifies with them."""

from __future__ import annotations

import time
from pathlib import Path

from fastapi.testclient import TestClient

from settlement.adapters.db.store import open_store
from settlement.api.app import create_app
from settlement.config import Settings
from settlement.domain.dataset import PROTOCOL_VERSION

DISTRIBUTOR = "0x5fbdb2315678afecb367f032d93f642f64180aa3"


def test_info_reports_the_domain_parameters_and_clock(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/info.db"
    genesis = int(time.time()) - 10 * 600 - 5
    settings = Settings(
        database_url=url,
        chain_id=8453,
        distributor=DISTRIBUTOR,
        genesis=genesis,
        epoch_seconds=600,
        grace_seconds=30,
        max_age=7200,
        max_batch=500,
        registry_mode="open",
    )
    store = open_store(url)
    try:
        with TestClient(create_app(settings, store)) as client:
            before = int(time.time())
            r = client.get("/v1/info")
            after = int(time.time())
    finally:
        store.close()
    assert r.status_code == 200
    info = r.json()
    assert info["protocol_version"] == PROTOCOL_VERSION
    assert info["chain_id"] == 8453
    # checksummed (EIP-55), the same address
    assert info["distributor"] == "0x5FbDB2315678afecb367f032d93F642f64180aa3"
    assert info["genesis"] == genesis
    assert (info["epoch_seconds"], info["grace_seconds"]) == (600, 30)
    assert before <= info["now"] <= after
    assert info["current_epoch"] == (info["now"] - genesis) // 600 + 1
    assert info["current_epoch"] == 11
    assert info["max_age"] == 7200
    assert info["max_batch"] == 500
    assert info["clock_skew"] == settings.clock_skew
    assert info["max_session_age"] == settings.max_session_age
    assert info["registry_mode"] == "open"
    assert info["viewer_allowlist"] is False
    assert (info["eip712_name"], info["eip712_version"]) == ("W2E Settlement", "1")


def test_info_before_genesis_is_epoch_zero(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/info.db"
    settings = Settings(database_url=url, genesis=int(time.time()) + 86_400)
    store = open_store(url)
    try:
        with TestClient(create_app(settings, store)) as client:
            info = client.get("/v1/info").json()
    finally:
        store.close()
    assert info["current_epoch"] == 0
    assert info["distributor"] == "0x" + "00" * 20

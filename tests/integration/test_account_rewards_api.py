"""GET /v1/accounts/{address}/rewards (what `settlement account` prints per epoch): an
account's allocations by class per closed epoch, exactly the close's, on SQLite and
PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from storekit import BACKENDS, EPOCH, GENESIS, GRACE, World, key, opened, settings, wire

from settlement.api.app import create_app
from settlement.services import ingest as service
from settlement.services.close import close_epoch

B1, B2 = GENESIS + 100, GENESIS + EPOCH + 100


@pytest.fixture(params=BACKENDS)
def app_world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    with opened(request.param, tmp_path) as store:
        s = settings(emission=1000, data_dir=str(tmp_path / "data"))
        w = World()
        w.register(store)
        sid = key("rewards-session")
        service.Ingestor(store, s).ingest(
            wire(w.delivery(sid, 300, 3, B1), w.view(sid, 20, B1)), B1 + 5
        )
        close_epoch(store, s, now=GENESIS + EPOCH + GRACE)
        sid2 = key("rewards-session-2")
        service.Ingestor(store, s).ingest(
            wire(w.delivery(sid2, 100, 1, B2, node=w.node2), w.view(sid2, 10, B2)), B2 + 5
        )
        close_epoch(store, s, now=GENESIS + 2 * EPOCH + GRACE)
        with TestClient(create_app(s, store)) as client:
            yield client, w


def test_rewards_per_epoch_are_the_allocations(app_world: Any) -> None:
    client, w = app_world
    node = client.get(f"/v1/accounts/0x{w.node.hex()}/rewards").json()
    # Epoch 1: the whole node pool (600 of 1,000); epoch 2: node2 served, node had nothing.
    assert node == {
        "account": "0x" + w.node.hex(),
        "epochs": [{"epoch": 1, "node": "600", "viewer": "0", "creator": "0", "total": "600"}],
    }
    viewer = client.get(f"/v1/accounts/0x{w.viewer.hex()}/rewards").json()["epochs"]
    assert [(e["epoch"], e["viewer"]) for e in viewer] == [(1, "300"), (2, "300")]
    creator = client.get(f"/v1/accounts/0x{w.creator.hex()}/rewards").json()["epochs"]
    assert [(e["epoch"], e["creator"], e["total"]) for e in creator] == [
        (1, "100", "100"),
        (2, "100", "100"),
    ]
    # What the account page sums is what the epochs add up to.
    page = client.get(f"/v1/accounts/0x{w.viewer.hex()}").json()
    assert page["earned"]["viewer"] == str(sum(int(e["viewer"]) for e in viewer))
    nobody = client.get("/v1/accounts/0x" + "12" * 20 + "/rewards").json()
    assert nobody["epochs"] == []
    assert client.get("/v1/accounts/0x12/rewards").status_code == 422

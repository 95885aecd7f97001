"""The HTTP API in-process (TestClient) over the real store, on SQLite and on PostgreSQL:
every status code, per-item verdicts in order, admin endpoints, node registration, metrics."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from coincurve import PrivateKey
from fastapi.testclient import TestClient
from storekit import pg_schema

from settlement.adapters.db.store import open_store
from settlement.api.app import create_app
from settlement.config import Settings
from settlement.domain.receipts import Domain, address_of
from settlement.domain.registration import NodeRegistrationRequest, sign_registration, to_wire
from settlement.services.access import create_key
from settlement.services.registry import load_registries
from settlement.sim.generate import SimConfig, generate

TOKEN = "test-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("sim")
    start = int(time.time()) - 2 * 86_400  # inside the server's time window (max_age 7 days)
    cfg = SimConfig(
        receipts=600, nodes=4, viewers=40, creators=4, contents=12, start=start, workers=1
    )
    generate(cfg, out)
    lines = (out / "receipts.ndjson").read_bytes().splitlines()
    return {
        "lines": lines,
        "labels": (out / "labels.txt").read_text().split(),
        "registries": orjson.loads((out / "registries.json").read_bytes()),
        "truth": orjson.loads((out / "truth.json").read_bytes()),
    }


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/api.db"
        return
    # No skip: the PostgreSQL half must fail loudly when the server is missing (pg_schema
    # connects without require_pg's skip).
    with pg_schema() as url:
        yield url


def make_client(database_url: str, registries: dict | None, **overrides) -> TestClient:
    settings = Settings(database_url=database_url, admin_token=TOKEN, **overrides)
    store = open_store(database_url)
    if registries is not None:
        load_registries(store, registries)
    client = TestClient(create_app(settings, store))
    client.store = store  # type: ignore[attr-defined]
    return client


@pytest.fixture
def api(database_url: str, sim: dict):
    client = make_client(database_url, sim["registries"], rate_limit=0)
    with client:
        yield client
    client.store.close()  # type: ignore[attr-defined]


def body(lines: list[bytes]) -> bytes:
    return b'{"receipts":[' + b",".join(lines) + b"]}"


def post(client: TestClient, lines: list[bytes]):
    return client.post("/v1/receipts", content=body(lines))


# --- POST /v1/receipts: 200 ---------------------------------------------------------------


def test_simulated_traffic_gets_every_expected_verdict_in_order(api: TestClient, sim: dict):
    truth = sim["truth"]
    summary: Counter[str] = Counter()
    results = []
    for i in range(0, len(sim["lines"]), 250):  # several batches, in file order
        r = post(api, sim["lines"][i : i + 250])
        assert r.status_code == 200, r.text
        doc = r.json()
        assert [item["index"] for item in doc["results"]] == list(range(len(doc["results"])))
        results += doc["results"]
        summary.update(doc["summary"])
    assert len(results) == len(sim["lines"])
    for label, item in zip(sim["labels"], results, strict=True):
        want = "accepted" if label == "honest" else truth["kinds"][label]["reason"]
        got = item["reason"] if item["verdict"] == "rejected" else item["verdict"]
        assert got == want, (label, item)
    expected = truth["expected"]["ingest"]
    assert {k: v for k, v in summary.items() if v and k != "rejected"} == expected
    assert summary["rejected"] == sum(v for k, v in expected.items() if k.isupper())

    # Idempotent: the same traffic again adds nothing. A receipt accepted then is now
    # `duplicate`, or `stale` when a later one of its key raised the counters.
    again = post(api, sim["lines"][:250]).json()
    assert again["summary"]["accepted"] == 0
    stored = [i for i, x in enumerate(results[:250]) if x["verdict"] == "accepted"]
    assert {again["results"][i]["verdict"] for i in stored} == {"duplicate", "stale"}


def test_items_that_are_no_receipt_get_malformed_in_place(api: TestClient, sim: dict):
    good = sim["lines"][sim["labels"].index("honest")]
    raw = (
        b'{"receipts":[1,"' + b"x" * 3 + b'",' + good + b',{"kind":"view"},'
        + good.replace(b'{"kind"', b'{"kind":"view","kind"', 1) + b",null, [] ,"
        + good.replace(b"1", b"-0", 1).replace(b'"0x', b'"0X', 1) + b"]}"
    )  # fmt: skip
    r = api.post("/v1/receipts", content=raw)
    assert r.status_code == 200, r.text
    doc = r.json()
    verdicts = [(x["index"], x["verdict"], x["reason"]) for x in doc["results"]]
    assert verdicts == [
        (0, "rejected", "MALFORMED"),
        (1, "rejected", "MALFORMED"),
        (2, "accepted", None),
        (3, "rejected", "MALFORMED"),
        (4, "rejected", "MALFORMED"),
        (5, "rejected", "MALFORMED"),
        (6, "rejected", "MALFORMED"),
        (7, "rejected", "MALFORMED"),
    ]
    details = [x["detail"] for x in doc["results"]]
    assert "JSON object" in details[0] and "JSON object" in details[1]
    assert "repeated" in details[4]
    assert doc["summary"]["MALFORMED"] == 7 and doc["summary"]["accepted"] == 1
    # Pretty-printed bodies take the strict path and give the same verdicts.
    pretty = orjson.dumps(orjson.loads(body([good, good])), option=orjson.OPT_INDENT_2)
    doc = api.post("/v1/receipts", content=pretty).json()
    assert [x["verdict"] for x in doc["results"]] == ["duplicate", "duplicate"]


def test_a_number_no_parser_type_holds_is_malformed_in_its_item_only(api: TestClient, sim: dict):
    # orjson refuses these whole bodies ("number is infinity"); they are valid JSON, so
    # PROTOCOL 2 wants one verdict per item: the item MALFORMED, naming its field.
    honest = [sim["lines"][i] for i, lab in enumerate(sim["labels"]) if lab == "honest"]
    first, second = honest[0], honest[1]
    field = b'"startedAt":'
    assert field in second
    for token, says in [
        (b"1e400", "startedAt: must be an integer without exponent, got 1e400"),
        (b"9" * 400, "startedAt: out of range for uint64"),
        (b"-" + b"9" * 400, "startedAt: must be an unsigned integer without sign"),
    ]:
        start = second.index(field) + len(field)
        end = second.index(b",", start)
        bad = second[:start] + token + second[end:]
        view = orjson.loads(next(x for x in honest if b'"kind":"view"' in x))
        huge_id = orjson.dumps(view).replace(view["sessionId"].join('""').encode(), b"1e400")
        r = api.post("/v1/receipts", content=body([first, bad, huge_id, second]))
        assert r.status_code == 200, r.text
        results = r.json()["results"]
        got = [(x["index"], x["verdict"], x["reason"]) for x in results]
        assert got[1:3] == [(1, "rejected", "MALFORMED"), (2, "rejected", "MALFORMED")]
        # the others judged as usual: accepted the first time, duplicate after
        assert {got[0][1], got[3][1]} <= {"accepted", "duplicate"}
        assert results[1]["detail"].startswith(says), results[1]["detail"]
        assert len(results[1]["detail"]) < 200  # a 400-digit token is not echoed whole
        assert results[2]["detail"].startswith("sessionId: "), results[2]["detail"]
    # Not JSON stays a refusal of the whole body, with or without a huge number in it.
    for raw in [body([first]) + b"1e400", b'{"receipts":[NaN]}', b'{"receipts":[1e400,]}']:
        r = api.post("/v1/receipts", content=raw)
        assert r.status_code == 422, (raw, r.text)
        assert r.json()["error"] == "InputError"


def test_hex_prefix_is_lowercase_x_only_and_digits_any_case(api: TestClient, sim: dict):
    line = sim["lines"][sim["labels"].index("honest")]
    wire = orjson.loads(line)
    upper_x = {**wire, "signature": "0X" + wire["signature"][2:]}
    upper_digits = {**wire, "signature": "0x" + wire["signature"][2:].upper()}
    r = post(api, [orjson.dumps(upper_x), orjson.dumps(upper_digits)])
    results = r.json()["results"]
    assert (results[0]["reason"], results[1]["reason"]) == ("MALFORMED", None)
    assert results[0]["detail"].startswith("signature: must start with 0x (lowercase x)")
    assert results[1]["verdict"] == "accepted"


def test_empty_batch_is_fine(api: TestClient):
    r = api.post("/v1/receipts", content=b'{"receipts": []}')
    assert r.status_code == 200
    assert r.json()["results"] == [] and r.json()["summary"]["accepted"] == 0


# --- refusals of a whole request ---------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        (b"not json", "not valid JSON"),
        (b"[]", '{"receipts"'),
        (b'{"receipts": {}}', "JSON array"),
        (b'{"receipts": [], "extra": 1}', "'extra'"),
        (b'{"receipts": [], "receipts": []}', "once"),
        (b"\xff\xfe", "not valid JSON"),
    ],
)
def test_body_that_is_not_a_batch_is_422_saying_what_to_fix(api: TestClient, raw, says):
    r = api.post("/v1/receipts", content=raw)
    assert r.status_code == 422
    assert r.json()["error"] == "InputError" and says in r.json()["message"]


def test_too_large_is_413(database_url: str, sim: dict):
    with make_client(database_url, None, max_batch=10, max_body_bytes=8192, rate_limit=0) as c:
        r = post(c, sim["lines"][:11])
        assert r.status_code == 413 and "limit is 10" in r.json()["message"]
        r = c.post("/v1/receipts", content=b'{"receipts":[' + b" " * 9000 + b"]}")
        assert r.status_code == 413 and "8192 bytes" in r.json()["message"]
        # a chunked body (no Content-Length) is cut off at the same limit
        r = c.post("/v1/receipts", content=iter([b'{"receipts":[', b" " * 9000, b"]}"]))
        assert r.status_code == 413
        assert post(c, sim["lines"][:10]).status_code == 200
        c.store.close()  # type: ignore[attr-defined]


def test_rate_limit_per_client_is_429_with_retry_after(database_url: str):
    with make_client(database_url, None, rate_limit=0.5, rate_burst=2) as c:
        empty = b'{"receipts":[]}'
        assert c.post("/v1/receipts", content=empty).status_code == 200
        assert c.post("/v1/receipts", content=empty).status_code == 200
        r = c.post("/v1/receipts", content=empty)
        assert r.status_code == 429 and r.headers["Retry-After"] == "2"
        # A made-up key is no key: still this address's bucket (issue 15)...
        forged = c.post("/v1/receipts", content=empty, headers={"X-API-Key": "client-b"})
        assert forged.status_code == 429
        # ...an issued one is another client with its own bucket.
        _, token = create_key(c.store, "client-b", 0.5, 2, who="test")  # type: ignore[attr-defined]
        other = c.post("/v1/receipts", content=empty, headers={"X-API-Key": token})
        assert other.status_code == 200
        c.store.close()  # type: ignore[attr-defined]


def test_overload_is_503_with_retry_after_not_a_queue(database_url: str):
    with make_client(database_url, None, max_inflight_batches=1, rate_limit=0) as c:
        # One batch in progress in this worker (held here, as a slow ingest would)...
        with c.app.state.api.inflight.slot():
            r = c.post("/v1/receipts", content=b'{"receipts":[]}')
        assert r.status_code == 503 and r.headers["Retry-After"] == "1"
        assert "busy" in r.json()["message"]
        # ...and once it is done the next one goes through.
        assert c.post("/v1/receipts", content=b'{"receipts":[]}').status_code == 200
        c.store.close()  # type: ignore[attr-defined]


# --- admin and registries ------------------------------------------------------------------


def test_admin_endpoints_need_the_token_and_refuse_without_one(database_url: str, api: TestClient):
    assert api.get("/v1/admin/nodes").status_code == 401
    assert api.get("/v1/admin/nodes", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert api.get("/v1/admin/nodes", headers={"Authorization": TOKEN}).status_code == 401
    assert api.get("/v1/admin/nodes", headers=AUTH).status_code == 200
    settings = Settings(database_url=database_url)  # no admin token configured
    with TestClient(create_app(settings, api.store)) as bare:  # type: ignore[attr-defined]
        r = bare.get("/v1/admin/nodes", headers=AUTH)
        assert r.status_code == 401 and "W2E_ADMIN_TOKEN" in r.json()["message"]
        assert TOKEN not in r.text


def test_registries_managed_over_http_decide_verdicts(api: TestClient, sim: dict):
    i = sim["labels"].index("unknown_node")
    receipt = orjson.loads(sim["lines"][i])
    line = sim["lines"][i]
    assert post(api, [line]).json()["results"][0]["reason"] == "UNKNOWN_NODE"

    node = receipt["node"]
    r = api.post("/v1/admin/nodes", json={"address": node, "label": "late"}, headers=AUTH)
    assert r.status_code == 200, r.text
    assert {"address": node, "label": "late", "active": True} in api.get(
        "/v1/admin/nodes", headers=AUTH
    ).json()
    r = api.post(f"/v1/admin/nodes/{node}/deactivate", headers=AUTH)
    assert r.status_code == 200
    assert post(api, [line]).json()["results"][0]["reason"] == "UNKNOWN_NODE"  # inactive
    assert api.post(f"/v1/admin/nodes/{node}/activate", headers=AUTH).status_code == 200
    assert post(api, [line]).json()["results"][0]["verdict"] == "accepted"

    missing = "0x" + "77" * 20
    r = api.post(f"/v1/admin/nodes/{missing}/activate", headers=AUTH)
    assert r.status_code == 404 and "not registered" in r.json()["message"]
    r = api.post(
        "/v1/admin/nodes", json={"address": "0x" + "00" * 20, "label": "zero"}, headers=AUTH
    )
    assert r.status_code == 422 and "zero address" in r.json()["message"]

    j = sim["labels"].index("unknown_content")
    content_line = sim["lines"][j]
    cid = orjson.loads(content_line)["contentId"]
    assert post(api, [content_line]).json()["results"][0]["reason"] == "UNKNOWN_CONTENT"
    creator = "0x" + "42" * 20
    r = api.post("/v1/admin/content", json={"contentId": cid, "creator": creator}, headers=AUTH)
    assert r.status_code == 200, r.text
    assert {"contentId": cid, "creator": creator} in api.get(
        "/v1/admin/content", headers=AUTH
    ).json()
    assert post(api, [content_line]).json()["results"][0]["verdict"] == "accepted"

    viewer = "0x" + "43" * 20
    assert api.post("/v1/admin/viewers", json={"address": viewer}, headers=AUTH).status_code == 200
    assert viewer in api.get("/v1/admin/viewers", headers=AUTH).json()
    assert api.delete(f"/v1/admin/viewers/{viewer}", headers=AUTH).status_code == 204
    assert api.delete(f"/v1/admin/viewers/{viewer}", headers=AUTH).status_code == 404


def _signed_request(key: bytes, label: str, issued_at: int) -> dict:
    domain = Domain.from_hex(31337, "0x" + "00" * 20)
    request = NodeRegistrationRequest(address_of(key), label, issued_at)
    return to_wire(sign_registration(request, domain, key))


def test_node_registration_request_then_admin_approval(api: TestClient):
    key = PrivateKey().secret
    wire = _signed_request(key, "edge-1", int(time.time()))
    r = api.post("/v1/nodes/registrations", json=wire)
    assert r.status_code == 201, r.text
    reg = r.json()
    assert reg["status"] == "pending" and reg["node"] == wire["node"]
    nodes = [n["address"] for n in api.get("/v1/admin/nodes", headers=AUTH).json()]
    assert wire["node"] not in nodes
    pending = api.get("/v1/admin/registrations?status=pending", headers=AUTH).json()
    assert [p["id"] for p in pending] == [reg["id"]]

    r = api.post(f"/v1/admin/registrations/{reg['id']}/approve", headers=AUTH)
    assert r.status_code == 200 and r.json()["status"] == "approved"
    nodes = api.get("/v1/admin/nodes", headers=AUTH).json()
    assert {"address": wire["node"], "label": "edge-1", "active": True} in nodes
    r = api.post(f"/v1/admin/registrations/{reg['id']}/reject", headers=AUTH)
    assert r.status_code == 422 and "already approved" in r.json()["message"]
    assert api.post("/v1/admin/registrations/999/approve", headers=AUTH).status_code == 404

    # Signed by another key than the node it names: refused, nothing stored.
    forged = {
        **_signed_request(PrivateKey().secret, "edge-2", int(time.time())),
        "node": wire["node"],
    }
    r = api.post("/v1/nodes/registrations", json=forged)
    assert r.status_code == 422 and r.json()["error"] == "InvalidRegistration"


def test_open_mode_approves_a_registration_at_once(database_url: str):
    with make_client(database_url, None, registry_mode="open") as c:
        wire = _signed_request(PrivateKey().secret, "edge-open", int(time.time()))
        r = c.post("/v1/nodes/registrations", json=wire)
        assert r.status_code == 201 and r.json()["status"] == "approved"
        assert wire["node"] in [n["address"] for n in c.get("/v1/admin/nodes", headers=AUTH).json()]
        c.store.close()  # type: ignore[attr-defined]


# --- operations ---------------------------------------------------------------------------


def test_health_readiness_docs_and_metrics(api: TestClient, sim: dict):
    assert api.get("/healthz").json() == {"status": "ok"}
    assert api.get("/readyz").json() == {"status": "ready"}
    assert api.get("/docs").status_code == 200
    spec = api.get("/openapi.json").json()
    post_spec = spec["paths"]["/v1/receipts"]["post"]
    assert "receipts" in str(post_spec["requestBody"]) and {"413", "422", "429", "503"} <= set(
        post_spec["responses"]
    )

    def value(text: str, name: str) -> float:
        # metrics are per process and outlive one app: compare before and after
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith(name) and not line.startswith("#")
        )

    before = api.get("/metrics").text
    bad = sim["lines"][sim["labels"].index("malformed")]
    answer = post(api, [*sim["lines"][:99], bad]).json()
    api.post("/v1/receipts", content=b"nope")
    after = api.get("/metrics").text
    assert value(after, "w2e_receipts_total{") - value(before, "w2e_receipts_total{") == 100
    accepted = 'w2e_receipts_total{reason="",verdict="accepted"}'
    assert value(after, accepted) - value(before, accepted) == answer["summary"]["accepted"]
    malformed = 'w2e_receipts_total{reason="MALFORMED",verdict="rejected"}'
    assert value(after, malformed) - value(before, malformed) == answer["summary"].get(
        "MALFORMED", 0
    )
    for name in ('w2e_batches_total{status="422"}', 'w2e_batches_total{status="200"}'):
        assert value(after, name) - value(before, name) == 1
    for name in ("w2e_batch_seconds_count", "w2e_ingest_seconds_count", "w2e_store_seconds_count"):
        assert value(after, name) - value(before, name) == 1


def test_registry_cli_manages_the_same_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from typer.testing import CliRunner

    from settlement.cli.main import app

    monkeypatch.setenv("W2E_DATABASE_URL", f"sqlite:///{tmp_path}/cli.db")
    run = CliRunner().invoke
    node = "0x" + "5a" * 20
    assert run(app, ["registry", "nodes", "add", node, "--label", "edge-cli"]).exit_code == 0
    assert run(app, ["registry", "nodes", "deactivate", node]).exit_code == 0
    listed = run(app, ["registry", "nodes", "list"]).output
    assert orjson.loads(listed) == {"address": node, "label": "edge-cli", "active": False}
    cid, creator = "0x" + "6b" * 32, "0x" + "7c" * 20
    assert run(app, ["registry", "content", "add", cid, creator]).exit_code == 0
    assert orjson.loads(run(app, ["registry", "content", "list"]).output)["creator"] == creator
    assert run(app, ["registry", "viewers", "add", "0x" + "8d" * 20]).exit_code == 0
    missing = run(app, ["registry", "nodes", "activate", "0x" + "9e" * 20])
    assert missing.exit_code == 2 and "not registered" in missing.output
    assert run(app, ["registry", "requests", "approve", "1"]).exit_code == 2

"""The explorer's JSON API over the real store (SQLite and PostgreSQL): GET /v1/nodes/{address}
(bytes credited after the per-viewer cap, receipts included, rejections by reason, rewards,
registration) and GET /v1/leaderboards, held to the allocations the close wrote."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
from eth_utils import to_checksum_address
from fastapi.testclient import TestClient
from storekit import BACKENDS, EPOCH, GENESIS, GRACE, World, key, opened, settings, wire

from settlement.adapters.db.explorer import ExplorerReads
from settlement.api.app import create_app
from settlement.domain.receipts import address_of, sign
from settlement.domain.rewards import allocate
from settlement.services import ingest as service
from settlement.services.close import close_epoch
from settlement.services.explorer import format_w2e
from settlement.services.explorer_estimate import EstimateCache, open_epoch_estimate

B1 = GENESIS + 100
CUT1 = GENESIS + EPOCH + GRACE
B2 = GENESIS + EPOCH + GRACE + 100
CUT2 = GENESIS + 2 * EPOCH + GRACE
CAP = 250  # bytes credited from one viewer per epoch: epoch 1's 400 bytes are above it


@pytest.fixture(params=BACKENDS)
def explorer_world(request, tmp_path):
    with opened(request.param, tmp_path) as store:
        s = settings(
            emission=1000,
            data_dir=str(tmp_path / "data"),
            max_bytes_per_viewer=CAP,
            max_session_age=3 * EPOCH,
        )
        w = World()
        w.register(store)
        sid = key("explorer-session")
        first = wire(
            w.delivery(sid, 300, 3, B1),
            w.delivery(sid, 100, 1, B1, node=w.node2),
            w.view(sid, 12, B1),
        )
        ingestor = service.Ingestor(store, s)
        ingestor.ingest(first, B1 + 5)
        # The same receipts again: duplicates, counted under their nodes in epoch 1.
        ingestor.ingest(first[:2], B1 + 6)
        # Signed by the node's key but naming the viewer: SIGNER_MISMATCH under the node.
        forged = sign(w.delivery(sid, 900, 9, B1), w.domain, w.node_key)
        ingestor.ingest(wire(replace(forged, viewer=w.viewer)), B1 + 7)
        close_epoch(store, s, now=CUT1)
        ingestor.ingest(wire(w.delivery(sid, 500, 5, B2), w.view(sid, 20, B2)), B2 + 5)
        # A second viewer in epoch 2, over both nodes, so every pool is split between several.
        other = key("viewer-2")
        sid2 = key("explorer-session-2")
        ingestor.ingest(
            wire(
                w.delivery(sid2, 160, 2, B2, viewer_key=other, content=w.content2),
                w.delivery(sid2, 80, 1, B2, viewer_key=other, node=w.node2, content=w.content2),
                w.view(sid2, 11, B2, viewer_key=other, content=w.content2),
            ),
            B2 + 6,
        )
        accounts = (w.node, w.node2, w.viewer, address_of(other), w.creator)
        estimates = {a: open_epoch_estimate(store, s, a, now=CUT2) for a in accounts}
        close_epoch(store, s, now=CUT2)
        after = open_epoch_estimate(store, s, w.node, now=CUT2 + 1)
        # A node that asked to register and waits for an admin.
        store.add_registration(key("node3")[:20], "edge-3", B2, b"\x01" * 65, B2 + 1, approve=False)
        with TestClient(create_app(s, store)) as client:
            client.estimates = (estimates, after)
            yield client, w, store


def _node_allocations(client, epoch):
    rows = client.get(f"/v1/epochs/{epoch}/allocations").json()
    return {r["account"]: int(r["amount"]) for r in rows if r["class"] == "node"}


def test_node_route_shape_and_figures(explorer_world):
    client, w, _ = explorer_world
    r = client.get(f"/v1/nodes/0x{w.node.hex()}")
    assert r.status_code == 200
    body = r.json()
    assert body["address"] == to_checksum_address("0x" + w.node.hex())
    assert body["registered"] is True and body["active"] is True and body["label"] == "node-1"
    # Registered by an admin, never by a signed request of its own.
    assert body["registration"] == {"state": "none", "requested_at": None, "decided_at": None}
    assert [e["epoch"] for e in body["epochs"]] == [2, 1]
    e2, e1 = body["epochs"]
    # Epoch 2: 500 - 300 bytes above the first viewer's watermark, and 160 of the second's:
    # each viewer under the cap.
    assert e2["bytes_credited"] == "360" and e2["receipts_included"] == 2
    assert e2["rejected"] == {}
    # Epoch 1: the viewer's 400 bytes are above the 250 cap: split over its two nodes.
    assert e1["receipts_included"] == 1
    assert e1["rejected"] == {"SIGNER_MISMATCH": 1, "duplicate": 1}
    assert body["rejected_total"] == {"SIGNER_MISMATCH": 1, "duplicate": 1}
    n2 = client.get(f"/v1/nodes/0x{w.node2.hex()}").json()
    e1_n2 = n2["epochs"][1]
    assert int(e1["bytes_credited"]) + int(e1_n2["bytes_credited"]) == CAP
    assert int(e1["bytes_credited"]) > int(e1_n2["bytes_credited"]) > 0
    assert n2["epochs"][0]["bytes_credited"] == "80" and n2["epochs"][0]["receipts_included"] == 1
    # The node pool was allocated by exactly these weights: re-allocating it gives the rewards.
    for epoch, (mine, other) in {1: (e1, e1_n2), 2: (e2, n2["epochs"][0])}.items():
        allocated = _node_allocations(client, epoch)
        pool = sum(allocated.values())
        weights = {w.node: int(mine["bytes_credited"]), w.node2: int(other["bytes_credited"])}
        expected = allocate(pool, {k: v for k, v in weights.items() if v})
        assert {"0x" + k.hex(): v for k, v in expected.items() if v} == allocated
        assert int(mine["reward"]) == allocated.get("0x" + w.node.hex(), 0)
    assert int(body["earned"]) == int(e1["reward"]) + int(e2["reward"])
    account = client.get(f"/v1/accounts/0x{w.node.hex()}").json()
    assert account["earned"]["node"] == body["earned"]


def test_node_route_unknown_pending_and_bounds(explorer_world):
    client, _, _ = explorer_world
    nobody = client.get("/v1/nodes/0x" + "77" * 20).json()
    assert nobody["registered"] is False and nobody["active"] is False
    assert nobody["label"] is None and nobody["earned"] == "0"
    assert nobody["registration"]["state"] == "none"
    assert all(e["bytes_credited"] == "0" and e["reward"] == "0" for e in nobody["epochs"])
    pending = client.get("/v1/nodes/0x" + key("node3")[:20].hex()).json()
    assert pending["registered"] is False
    assert pending["registration"] == {
        "state": "pending",
        "requested_at": B2 + 1,
        "decided_at": None,
    }
    one = client.get("/v1/nodes/0x" + "77" * 20, params={"limit": 1}).json()
    assert [e["epoch"] for e in one["epochs"]] == [2]
    older = client.get("/v1/nodes/0x" + "77" * 20, params={"before": 2}).json()
    assert [e["epoch"] for e in older["epochs"]] == [1]
    for params, name in (
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"before": 0}, "before"),
    ):
        r = client.get("/v1/nodes/0x" + "77" * 20, params=params)
        assert r.status_code == 422 and name in r.json()["message"]
    bad = client.get("/v1/nodes/0x1234")
    assert bad.status_code == 422 and bad.json()["error"] == "InputError"


def test_leaderboards(explorer_world):
    client, w, _ = explorer_world
    for epoch in (1, 2):
        board = client.get("/v1/leaderboards", params={"class": "node", "epoch": epoch}).json()
        allocated = _node_allocations(client, epoch)
        assert board["class"] == "node" and board["epoch"] == epoch
        assert board["accounts"] == len(allocated)
        assert board["total"] == str(sum(allocated.values()))
        assert [(e["address"].lower(), int(e["amount"])) for e in board["entries"]] == sorted(
            allocated.items(), key=lambda x: (-x[1], x[0])
        )
        assert [e["rank"] for e in board["entries"]] == list(range(1, len(allocated) + 1))
    overall = client.get("/v1/leaderboards", params={"class": "viewer"}).json()
    assert overall["epoch"] is None and overall["accounts"] == 2
    for entry in overall["entries"]:
        account = client.get(f"/v1/accounts/{entry['address']}").json()
        assert entry["amount"] == account["earned"]["viewer"]
    assert int(overall["entries"][0]["amount"]) > int(overall["entries"][1]["amount"])
    assert overall["entries"][0]["address"] == to_checksum_address("0x" + w.viewer.hex())
    nodes = client.get("/v1/leaderboards", params={"class": "node", "limit": 1}).json()
    assert len(nodes["entries"]) == 1 and nodes["accounts"] == 2
    top = client.get(f"/v1/nodes/{nodes['entries'][0]['address']}").json()
    assert top["earned"] == nodes["entries"][0]["amount"]
    creators = client.get("/v1/leaderboards", params={"class": "creator", "epoch": 1}).json()
    assert creators["entries"][0]["address"].lower() == "0x" + w.creator.hex()
    for params, name in (
        ({"class": "whale"}, "class"),
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"epoch": 0}, "epoch"),
    ):
        r = client.get("/v1/leaderboards", params=params)
        assert r.status_code == 422 and name in r.json()["message"], (params, r.text)
    assert client.get("/v1/leaderboards", params={"epoch": 9}).status_code == 404


def test_openapi_lists_the_explorer_routes(explorer_world):
    client, _, _ = explorer_world
    spec = client.get("/openapi.json").json()
    node = spec["paths"]["/v1/nodes/{address}"]["get"]
    assert node["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/NodeActivityOut"
    )
    board = spec["paths"]["/v1/leaderboards"]["get"]
    assert {p["name"] for p in board["parameters"]} == {"class", "epoch", "limit"}
    assert "LeaderboardOut" in spec["components"]["schemas"]


def test_open_epoch_estimate_is_what_the_close_then_paid(explorer_world):
    """Estimated before the close of epoch 2 with nothing arriving after: the close's own
    allocations, to the unit, for every class of every account."""
    client, _, _ = explorer_world
    estimates, after = client.estimates
    rows = client.get("/v1/epochs/2/allocations").json()
    paid: dict[str, dict[str, int]] = {}
    for r in rows:
        paid.setdefault(r["account"], {})[r["class"]] = int(r["amount"])
    assert {"0x" + a.hex(): e.by_class for a, e in estimates.items()} == paid
    assert all(e.epoch == 2 for e in estimates.values())
    assert len(paid) == 5 and all(len(v) == 1 for v in paid.values())
    # Once closed, nothing stored pays anyone in epoch 3.
    assert after.epoch == 3 and after.by_class == {}


def test_format_w2e_is_exact():
    assert format_w2e(0) == "0"
    assert format_w2e(1) == "0.000000000000000001"
    assert format_w2e(1_500_000_000_000_000_000) == "1.5"
    assert format_w2e(1234567 * 10**18 + 10**17) == "1,234,567.1"
    assert format_w2e(2**256 - 1).replace(",", "").replace(".", "") == str(2**256 - 1)


def test_pages_render_the_api_figures(explorer_world):
    client, w, _ = explorer_world
    home = client.get("/")
    assert home.status_code == 200 and 'href="/epochs/2"' in home.text
    epoch = client.get("/epochs/1")
    assert epoch.status_code == 200
    total = client.get("/v1/epochs").json()[1]["cumulativeTotal"]
    assert f'data-base="{total}"' in epoch.text and "Not audited here" in epoch.text
    assert "/v1/data/epoch-00000001/manifest.json" in epoch.text
    for f in ("allocations", "tree"):
        assert f">{f}</a>" in epoch.text  # a link to the file on this service's disk
    node = client.get(f"/nodes/0x{w.node.hex()}")
    assert node.status_code == 200 and 'data-reason="SIGNER_MISMATCH"' in node.text
    account = client.get(f"/accounts/0x{w.viewer.hex()}")
    assert account.status_code == 200 and "no chain configured" in account.text
    assert "settlement claim --relay --service http://testserver " in account.text
    boards = client.get("/leaderboards", params={"epoch": 1})
    assert boards.status_code == 200 and 'id="board-creator"' in boards.text
    assert client.get("/accounts/0x12").status_code == 422
    assert client.get("/epochs/99").status_code == 404
    assert client.get("/leaderboards", params={"epoch": 99}).status_code == 404
    found = client.get("/accounts", params={"address": "0x" + "aa" * 20}, follow_redirects=False)
    assert found.status_code == 303
    assert found.headers["location"] == "/accounts/" + to_checksum_address("0x" + "aa" * 20)
    assert client.get("/nodes", params={"address": "//elsewhere.example"}).status_code == 422
    assert client.get("/nodes").status_code == 200  # the form
    css = client.get("/static/explorer.css")
    assert css.status_code == 200 and "text/css" in css.headers["content-type"]


def test_account_page_says_when_the_chain_does_not_answer(tmp_path):
    with opened("sqlite", tmp_path) as store:
        s = settings(
            emission=1000,
            data_dir=str(tmp_path / "data"),
            rpc_url="http://127.0.0.1:1",
            deployment_file=str(tmp_path / "deployment.json"),
        )
        with TestClient(create_app(s, store)) as client:
            page = client.get("/accounts/0x" + "11" * 20)
            assert page.status_code == 200
            assert "The chain does not answer" in page.text
            assert "no chain configured" not in page.text


def test_cached_leaderboards_follow_a_new_close(tmp_path):
    """The app keeps leaderboards between closes; the next close shows in the next answer."""
    with opened("sqlite", tmp_path) as store:
        s = settings(emission=1000, data_dir=str(tmp_path / "data"), max_session_age=3 * EPOCH)
        w = World()
        w.register(store)
        sid = key("cached-session")
        ingestor = service.Ingestor(store, s)
        ingestor.ingest(wire(w.delivery(sid, 300, 3, B1), w.view(sid, 12, B1)), B1 + 5)
        close_epoch(store, s, now=CUT1)
        with TestClient(create_app(s, store)) as client:
            first = client.get("/v1/leaderboards", params={"class": "node"}).json()
            assert first["entries"][0]["amount"] == "600" and first["total"] == "600"
            ingestor.ingest(wire(w.delivery(sid, 500, 5, B2)), B2 + 5)
            close_epoch(store, s, now=CUT2)
            second = client.get("/v1/leaderboards", params={"class": "node"}).json()
            assert second["entries"][0]["amount"] == "1200" and second["total"] == "1200"
            # The board of the closed epoch 1 is what it was.
            one = client.get("/v1/leaderboards", params={"class": "node", "epoch": 1}).json()
            assert one["entries"] == first["entries"]


def test_top_amounts_sort_as_integers_on_both_stores(store):
    """uint256 amounts stored as text, sorted by the database (length, then text; bytea/blob
    addresses for ties), equal Python's integer sort, in allocations and latest balances."""
    rng = random.Random(5)
    accounts = [rng.randbytes(20) for _ in range(300)]
    amounts = [rng.choice([rng.randrange(10**k) for k in (3, 18, 25, 70)]) for _ in accounts]
    amounts[7] = amounts[8]  # a tie, broken by address
    old = [rng.randrange(10**30) for _ in accounts]

    def fill(cur):
        cur.executemany(
            store._q(
                'INSERT INTO allocation (epoch, account, "class", amount) VALUES (%s, %s, %s, %s)'
            ),
            [(4, a, "creator", str(v)) for a, v in zip(accounts, amounts, strict=True)],
        )
        rows = [(a, 3, "0", "0", str(v)) for a, v in zip(accounts, old, strict=True)]
        rows += [(a, 4, "0", "0", str(v)) for a, v in zip(accounts, amounts, strict=True)]
        cur.executemany(
            store._q(
                "INSERT INTO balance (account, epoch, node, viewer, creator) VALUES (%s, %s, %s, %s, %s)"
            ),
            rows,
        )

    store._run(fill)
    want = sorted(
        ((a, v) for a, v in zip(accounts, amounts, strict=True) if v), key=lambda x: (-x[1], x[0])
    )
    reads = ExplorerReads(store)
    for epoch in (4, None):
        top, count = reads.top("creator", epoch, 1000)
        assert top == want and count == len(want)
        assert reads.top("creator", epoch, 5)[0] == want[:5]
        assert reads.top("node", epoch, 5) == ([], 0)


def test_estimate_cache_keeps_a_reading_until_its_ttl_or_a_close(tmp_path):
    with opened("sqlite", tmp_path) as store:
        s = settings(emission=1000, data_dir=str(tmp_path / "data"), max_session_age=3 * EPOCH)
        w = World()
        w.register(store)
        sid = key("estimate-session")
        ingestor = service.Ingestor(store, s)
        ingestor.ingest(wire(w.delivery(sid, 300, 3, B1)), B1 + 5)
        kept, fresh = EstimateCache(ttl=3600), EstimateCache(ttl=0)
        first = open_epoch_estimate(store, s, w.node2, now=B1 + 10, cache=kept)
        assert first.epoch == 1 and first.by_class == {}  # node 1 has every byte so far
        assert open_epoch_estimate(store, s, w.node, now=B1 + 10, cache=kept).by_class == {
            "node": 600
        }
        ingestor.ingest(wire(w.delivery(sid, 100, 1, B1, node=w.node2)), B1 + 20)
        stale = open_epoch_estimate(store, s, w.node2, now=B1 + 30, cache=kept)
        assert stale.by_class == {} and stale.computed_at == B1 + 10
        now = open_epoch_estimate(store, s, w.node2, now=B1 + 30, cache=fresh)
        assert now.by_class == {"node": 150} and now.computed_at == B1 + 30
        close_epoch(store, s, now=CUT1)  # a close drops what was kept
        after = open_epoch_estimate(store, s, w.node2, now=CUT1 + 1, cache=kept)
        assert after.epoch == 2 and after.by_class == {}


def test_epoch_page_shows_the_recorded_verdict_on_its_root_only(explorer_world):
    from settlement.adapters.db.verdicts import StoredVerdict, record_verdict

    client, _, store = explorer_world
    root = next(e["root"] for e in client.get("/v1/epochs").json() if e["epoch"] == 1)

    def verdict(on: str, ok: bool, at: int, **kw) -> StoredVerdict:
        return StoredVerdict(
            epoch=1, kind="epoch", root=on, ok=ok, mismatches=kw.get("mismatches", 0),
            first_mismatch=kw.get("first", ""), audited_at=at, source="watchtower",
        )  # fmt: skip

    def page_and_json():
        page = client.get("/epochs/1").text
        listed = {e["epoch"]: e for e in client.get("/v1/epochs").json()}
        return page, listed[1]["audit"], listed[2]["audit"], client.get("/").text

    page, audit, other, home = page_and_json()
    assert "Not audited here" in page and audit is None and other is None
    assert "Audited by the watchtower" not in page
    # A verdict on another root of the epoch (a revoked one, say) is not this root's.
    record_verdict(store, verdict("0x" + "ee" * 32, False, 1_700_000_000, mismatches=5))
    page, audit, _, home = page_and_json()
    assert "Not audited here" in page and "FAILED" not in page and audit is None
    record_verdict(store, verdict(root, True, 1_700_000_000))
    page, audit, other, home = page_and_json()
    assert "Not audited here" not in page and other is None
    assert "Audited by the watchtower at 2023-11-14 22:13:20 UTC" in page and "clean" in page
    assert root[:10] in page and "settlement audit --rpc" in page  # the command stays
    assert audit == {
        "ok": True, "mismatches": 0, "first_mismatch": None, "audited_at": 1_700_000_000,
        "source": "watchtower", "root": root, "kind": "epoch",
    }  # fmt: skip
    assert '<td class="audit">clean</td>' in home
    # Audited again, the same root failed: the newer verdict replaces the older.
    first = "epoch 1: balance of 0xab <script> differs"
    record_verdict(store, verdict(root, False, 1_700_000_100, mismatches=1234, first=first))
    page, audit, _, home = page_and_json()
    assert "FAILED: 1,234 mismatches, first:" in page and "clean" not in page
    assert "&lt;script&gt;" in page and "<script>" not in page.split('id="audit"')[1][:400]
    assert audit["ok"] is False and audit["mismatches"] == 1234
    assert audit["first_mismatch"] == first
    assert '<td class="audit">FAILED (1,234)</td>' in home

"""The epoch close over the real store (SQLite and PostgreSQL): worked epochs checked by hand,
late receipts, quarantine, carry-over, the published dataset and its determinism."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path
from unittest import mock

import orjson
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as settings_
from hypothesis import strategies as st
from storekit import BACKENDS, EPOCH, GENESIS, GRACE, World, close_reads, key, reset, wire

from settlement.adapters import files as publish
from settlement.adapters.db.close_io import SetClose
from settlement.adapters.db.tables import EPOCH_TABLES
from settlement.domain import dataset, merkle
from settlement.domain.receipts import DeliveryReceipt, address_of, keccak
from settlement.errors import NotFound
from settlement.services import close as epochs_service
from settlement.services import epochs as epochs_read
from settlement.services import ingest as service
from settlement.services.close import EpochNotDue, close_epoch

B1 = GENESIS + 100  # issuedAt in bucket 1
CUT1 = GENESIS + EPOCH + GRACE  # cutoff(1)
B2 = CUT1 + 100  # issuedAt in bucket 2
STARTED = GENESIS + 10


def cutoff(e: int) -> int:
    return GENESIS + e * EPOCH + GRACE


def bucket_time(e: int, offset: int = 100) -> int:
    return cutoff(e - 1) + offset if e > 1 else GENESIS + offset


def wipe(store) -> None:
    reset(store)

    def fn(cur):
        for table in EPOCH_TABLES:
            cur.execute(f"DELETE FROM {table}")

    store._run(fn)


@pytest.fixture(params=BACKENDS)
def store(request, stores):
    s = stores(request.param)
    wipe(s)
    return s


@pytest.fixture(autouse=True, params=["touched", "all"])
def reads(request):
    """Every test twice: closes reading only the sessions touched since the last close, and
    closes reading every live session. The expected results are the same."""
    with close_reads(request.param == "touched"):
        yield request.param


def cfg(tmp_path: Path, **overrides):
    from storekit import settings

    values = {
        "emission": 1000,
        "bps_node": 6000,
        "bps_viewer": 3000,
        "segment_seconds": 4,
        "max_watch_seconds_per_epoch": 10**6,
        "data_dir": str(tmp_path / "data"),
    }
    values.update(overrides)
    return settings(**values)


def ingest(store, s, receipts, now):
    result = service.Ingestor(store, s).ingest(wire(*receipts), now)
    return [i.reason or i.verdict for i in result.items]


def allocations(store, s, e):
    return {(a, cls): v for a, cls, v in epochs_read.allocations(store, s, e)}


def read_file(closed, name):
    m = orjson.loads(closed.manifest)
    (f,) = [f for f in m["files"] if f["name"] == name]
    ext = "json" if name == dataset.TREE else "ndjson"
    data = (closed.directory / f"{f['sha256']}.{ext}").read_bytes()
    assert hashlib.sha256(data).hexdigest() == f["sha256"]
    assert str(len(data)) == f["size"]
    return data


def lines(closed, name):
    return [orjson.loads(x) for x in read_file(closed, name).splitlines()]


def test_worked_epochs_late_receipts_and_carry_over(store, tmp_path):
    w = World()
    w.register(store)
    s = cfg(tmp_path)
    sid = key("session-a")
    got = ingest(
        store,
        s,
        [
            w.delivery(sid, 300, 3, B1),
            w.delivery(sid, 100, 1, B1, node=w.node2),
            w.view(sid, 20, B1),
        ],
        now=B1 + 5,
    )
    assert got == ["accepted"] * 3
    with pytest.raises(EpochNotDue, match="cutoff"):
        close_epoch(store, s, 1, now=CUT1 - 1)
    with pytest.raises(EpochNotDue, match="epoch 1 is closed"):
        close_epoch(store, s, 2, now=cutoff(2))

    c1 = close_epoch(store, s, now=CUT1)
    # node pool 600 by bytes 300:100; viewer 300; watch clipped to 4 segments * 4 s = 16;
    # creator 100 (the creator is not the viewer).
    assert allocations(store, s, 1) == {
        (w.node, "node"): 450,
        (w.node2, "node"): 150,
        (w.viewer, "viewer"): 300,
        (w.creator, "creator"): 100,
    }
    assert c1.epoch == 1 and c1.proposes and c1.cumulative_total == 1000
    m1 = orjson.loads(c1.manifest)
    assert m1["prevManifestHash"] == "0x" + "00" * 32
    assert m1["pools"]["node"] == {
        "emitted": "600",
        "carriedIn": "0",
        "allocated": "600",
        "carriedOut": "0",
    }
    assert m1["counts"]["delivery_receipts"] == "2" and m1["counts"]["view_receipts"] == "1"
    assert sorted(m1) == sorted(dataset.MANIFEST_FIELDS)
    assert (c1.directory / "manifest.json").read_bytes() == c1.manifest
    assert c1.data_hash == "0x" + keccak(c1.manifest).hex()
    # A new session's previous watermarks are published too, zeros and all (PROTOCOL 6).
    assert [
        (m["node"], m["bytesServed"], m["segmentsServed"])
        for m in lines(c1, dataset.DELIVERY_WATERMARKS)
    ] == sorted([("0x" + w.node.hex(), "0", "0"), ("0x" + w.node2.hex(), "0", "0")])
    assert lines(c1, dataset.VIEW_WATERMARKS) == [
        {
            "credited": "0",
            "sessionId": "0x" + sid.hex(),
            "viewer": "0x" + w.viewer.hex(),
            "watchSeconds": "0",
        }
    ]

    # A second close of epoch 1 returns the stored result.
    again = close_epoch(store, s, 1, now=CUT1 + 999)
    assert again.already_closed and again.manifest == c1.manifest

    # Late: a bucket-1 receipt arrives after epoch 1 closed; epoch 2 credits its delta.
    assert ingest(store, s, [w.delivery(sid, 500, 5, B1 + 50)], now=CUT1 + 10) == ["accepted"]
    c2 = close_epoch(store, s, now=cutoff(2))
    # node: all 600 (200 new bytes, node2 none); viewer: clip 6 segs * 4 = 24 -> 20, +4 s.
    assert allocations(store, s, 2) == {
        (w.node, "node"): 600,
        (w.viewer, "viewer"): 300,
        (w.creator, "creator"): 100,
    }
    assert orjson.loads(c2.manifest)["prevManifestHash"] == "0x" + keccak(c1.manifest).hex()
    (receipt,) = lines(c2, dataset.DELIVERY_RECEIPTS)
    assert receipt["bytesServed"] == "500" and receipt["bucket"] == "1"
    # Previous watermarks of the credited session: both delivery keys and the view key,
    # whose watermark is the raw 20 s of its last included receipt; 16 s were credited.
    marks = lines(c2, dataset.DELIVERY_WATERMARKS)
    assert [(m["node"], m["bytesServed"], m["segmentsServed"]) for m in marks] == sorted(
        [("0x" + w.node.hex(), "300", "3"), ("0x" + w.node2.hex(), "100", "1")]
    )
    assert lines(c2, dataset.VIEW_WATERMARKS) == [
        {
            "credited": "16",
            "sessionId": "0x" + sid.hex(),
            "viewer": "0x" + w.viewer.hex(),
            "watchSeconds": "20",
        }
    ]

    # Nothing new: every pool carries over, the root stays, nothing to propose.
    c3 = close_epoch(store, s, now=cutoff(3))
    assert not c3.proposes and c3.root == c2.root and allocations(store, s, 3) == {}
    m3 = orjson.loads(c3.manifest)
    assert {k: v["carriedOut"] for k, v in m3["pools"].items()} == {
        "node": "600",
        "viewer": "300",
        "creator": "100",
    }

    # Epoch 4 pays the carried pools with its own.
    sid2 = key("session-d")
    t4 = bucket_time(4)
    got = ingest(
        store,
        s,
        [
            w.delivery(sid2, 100, 1, t4, node=w.node2, started=t4 - 50),
            w.view(sid2, 4, t4, started=t4 - 50),
        ],
        now=t4 + 1,
    )
    assert got == ["accepted", "accepted"]
    c4 = close_epoch(store, s, now=cutoff(4))
    assert allocations(store, s, 4) == {
        (w.node2, "node"): 1200,
        (w.viewer, "viewer"): 600,
        (w.creator, "creator"): 200,
    }
    assert c4.cumulative_total == 4000  # conservation: 4 emissions, nothing carried now

    view = epochs_read.account(store, s, w.node)
    assert (view.node, view.viewer, view.creator, view.epoch) == (1050, 0, 0, 4)
    assert merkle.verify(c4.root, w.node, 1050, view.proof)

    # The published tree loads, and its root is the manifest's.
    dump = read_file(c4, dataset.TREE)
    tree = merkle.MerkleTree.load(dump)
    assert tree.root == orjson.loads(c4.manifest)["root"] == c4.root
    assert dict(tree.values) == {
        "0x" + w.node.hex(): 1050,
        "0x" + w.node2.hex(): 1350,
        "0x" + w.viewer.hex(): 1200,
        "0x" + w.creator.hex(): 400,
    }
    # Conservation per class, across all epochs.
    total = sum(v for e in (1, 2, 3, 4) for v in allocations(store, s, e).values())
    assert total == 4 * 1000


def test_a_conflict_stored_after_a_close_started_counts_from_the_next_close(store, tmp_path):
    w = World()
    w.register(store)
    s = cfg(tmp_path)
    honest, cheat = key("honest"), key("cheat")
    other_key = key("viewer-2")
    other = address_of(other_key)
    got = ingest(
        store,
        s,
        [
            w.delivery(honest, 100, 1, B1),
            w.delivery(cheat, 300, 3, B1, viewer_key=other_key),
            w.view(cheat, 8, B1, viewer_key=other_key),
        ],
        now=B1 + 1,
    )
    assert got == ["accepted"] * 3
    # Another contentId for the same session: CONFLICT, stored after epoch 1's close began.
    conflict = w.view(cheat, 12, B1 + 10, content=w.content2, viewer_key=other_key)
    assert ingest(store, s, [conflict], now=CUT1 + 5) == ["CONFLICT"]
    c1 = close_epoch(store, s, now=CUT1)
    assert allocations(store, s, 1) == {
        (w.node, "node"): 600,
        (other, "viewer"): 300,
        (w.creator, "creator"): 100,
    }
    assert lines(c1, dataset.QUARANTINE) == []
    c2 = close_epoch(store, s, now=cutoff(2))
    (q,) = lines(c2, dataset.QUARANTINE)
    assert q["sessionId"] == "0x" + cheat.hex() and q["storedAt"] == str(CUT1 + 5)
    assert q["evidenceReceived"]["contentId"] == "0x" + w.content2.hex()
    assert q["evidenceReceived"]["watchSeconds"] == "12"


def test_a_receipt_committed_while_a_close_runs_is_credited_by_the_next_close(
    stores, reads, tmp_path
):
    """PostgreSQL closes beside ingest: a batch that commits after the close's snapshot was
    taken is not in that close, and its touch survives the close for the next one."""
    store = stores("postgresql")
    wipe(store)
    w = World()
    w.register(store)
    s = cfg(tmp_path)
    early, late = key("early"), key("late")
    assert ingest(store, s, [w.delivery(early, 300, 3, B1)], now=B1 + 1) == ["accepted"]
    build = SetClose.build

    def build_after_a_commit(self, touched_only=None):
        # The close's snapshot is taken (it read the registry and balances already); this
        # batch commits on another connection: bucket 1, as late receipts may be.
        assert ingest(store, s, [w.delivery(late, 100, 1, B1 + 5)], now=CUT1 + 1) == ["accepted"]
        build(self, touched_only)

    with mock.patch.object(SetClose, "build", build_after_a_commit):
        c1 = close_epoch(store, s, now=CUT1)
    # Deliveries only: the viewer and creator pools carry over.
    assert allocations(store, s, 1) == {(w.node, "node"): 600}
    (receipt,) = lines(c1, dataset.DELIVERY_RECEIPTS)
    assert receipt["sessionId"] == "0x" + early.hex()
    c2 = close_epoch(store, s, now=cutoff(2))
    (receipt,) = lines(c2, dataset.DELIVERY_RECEIPTS)
    assert receipt["sessionId"] == "0x" + late.hex() and receipt["bucket"] == "1"
    assert allocations(store, s, 2)[(w.node, "node")] == 600


def touches(store) -> list[tuple[bytes, int]]:
    def fn(cur):
        cur.execute("SELECT session_id, bucket FROM session_touch ORDER BY session_id, bucket")
        return [(bytes(sid), b) for sid, b in cur.fetchall()]

    return store._run(fn, write=False)


def test_a_close_consumes_the_touches_of_its_buckets_only(store, tmp_path):
    w = World()
    w.register(store)
    s = cfg(tmp_path)
    a, b = key("touch-a"), key("touch-b")
    got = ingest(
        store,
        s,
        [w.delivery(a, 100, 1, B1), w.view(a, 4, B1), w.delivery(b, 100, 1, B2, started=B2 - 10)],
        now=B2 + 1,
    )
    assert got == ["accepted"] * 3
    # One row a session and bucket per batch, whichever of its receipts changed.
    assert touches(store) == sorted([(a, 1), (b, 2)])
    close_epoch(store, s, now=cutoff(1))
    assert touches(store) == [(b, 2)]  # bucket 2 waits for its close
    close_epoch(store, s, now=cutoff(2))
    assert touches(store) == []


def test_quarantine_effective_only_for_closes_starting_later(store, tmp_path):
    """Two stores would be needed to close epoch 1 at two moments; instead check the rule on
    one close before and one after the conflict, across two epochs."""
    w = World()
    w.register(store)
    s = cfg(tmp_path)
    cheat = key("cheat-2")
    t2 = bucket_time(2)
    assert ingest(store, s, [w.delivery(cheat, 300, 3, B1)], now=B1 + 1) == ["accepted"]
    c1 = close_epoch(store, s, now=CUT1)  # before any conflict: credited
    assert allocations(store, s, 1)[(w.node, "node")] == 600
    assert lines(c1, dataset.QUARANTINE) == []
    # More delivery, then the conflict, both in epoch 2.
    got = ingest(
        store, s, [w.delivery(cheat, 600, 6, t2), w.view(cheat, 4, t2, content=w.content2)], now=t2
    )
    assert got == ["accepted", "CONFLICT"]
    c2 = close_epoch(store, s, now=cutoff(2))
    assert allocations(store, s, 2) == {}  # the new 300 bytes are forfeited
    (q,) = lines(c2, dataset.QUARANTINE)
    assert q["storedAt"] == str(t2)
    assert not c2.proposes and c2.root == c1.root
    # The whole quarantine set is published with every close that applies it.
    c3 = close_epoch(store, s, now=cutoff(3))
    assert lines(c3, dataset.QUARANTINE) == [q]


def test_published_files_are_canonical_and_sorted(store, tmp_path):
    w = World()
    w.register(store)
    s = cfg(tmp_path)
    receipts = []
    for i in range(6):
        sid = key(f"s{i}")
        node = w.node if i % 2 else w.node2
        receipts += [w.delivery(sid, 1000 + i, 2, B1 + i, node=node), w.view(sid, 5 + i, B1 + i)]
    ingest(store, s, receipts, now=B1 + 10)
    c = close_epoch(store, s, now=CUT1)
    m = orjson.loads(c.manifest)
    assert dataset.canonical_bytes(m) == c.manifest
    for f in m["files"]:
        ext = "json" if f["name"] == dataset.TREE else "ndjson"
        data = read_file(c, f["name"])
        if ext == "json":
            continue
        rows = data.splitlines()
        assert str(len(rows)) == f["rows"] == m["counts"][f["name"]]
        parsed = [orjson.loads(r) for r in rows]
        for raw, obj in zip(rows, parsed, strict=True):
            assert dataset.canonical_bytes(obj) == raw
        keyf = {
            dataset.DELIVERY_RECEIPTS: ("viewer", "sessionId", "node"),
            dataset.VIEW_RECEIPTS: ("viewer", "sessionId"),
            dataset.ALLOCATIONS: ("account", "class"),
            dataset.REGISTRY_NODES: ("address",),
            dataset.REGISTRY_CONTENT: ("contentId",),
        }.get(f["name"])
        if keyf:
            keys = [tuple(o[k] for k in keyf) for o in parsed]
            assert keys == sorted(keys) and len(set(keys)) == len(keys)
    assert m["counts"]["delivery_receipts"] == "6"


def test_unknown_epochs_and_early_closes(store, tmp_path):
    s = cfg(tmp_path)
    with pytest.raises(NotFound):
        epochs_read.get_epoch(store, s, 1)
    with pytest.raises(EpochNotDue):
        close_epoch(store, s, now=GENESIS)
    c = close_epoch(store, s, now=CUT1)  # an empty epoch still closes
    assert c.root == merkle.ZERO_ROOT and not c.proposes
    assert [f["name"] for f in c.manifest_obj["files"]] == sorted(
        [
            dataset.ALLOCATIONS,
            dataset.DELIVERY_RECEIPTS,
            dataset.DELIVERY_WATERMARKS,
            dataset.QUARANTINE,
            dataset.REGISTRY_CONTENT,
            dataset.REGISTRY_NODES,
            dataset.REGISTRY_VIEWERS,
            dataset.VIEW_RECEIPTS,
            dataset.VIEW_WATERMARKS,
        ]
    )


# --- determinism: any ingest order of an equivocation-free epoch, same bytes ---------------

_VIEWERS = [key(f"dv{i}") for i in range(3)]


def _epoch_receipts(w: World, seed: int) -> tuple[list, list]:
    """Final receipts of a few sessions, and lower/equal cumulative receipts around them."""
    rnd = random.Random(seed)
    finals, extras = [], []
    for i in range(rnd.randint(1, 5)):
        vk = rnd.choice(_VIEWERS)
        sid = keccak(f"{seed}-{i}".encode())
        content = rnd.choice([w.content, w.content2])
        nodes = rnd.sample([w.node, w.node2], rnd.randint(1, 2))
        segs = rnd.randint(1, 20)
        issued = B1 + 100 + rnd.randint(0, 200)
        for node in nodes:
            b = rnd.randint(1, 10**6)
            finals.append(
                w.delivery(sid, b, segs, issued, node=node, content=content, viewer_key=vk)
            )
            for _ in range(rnd.randint(0, 2)):  # split: earlier cumulative receipts
                k = rnd.randint(0, segs - 1)
                extras.append(
                    w.delivery(
                        sid,
                        b * k // segs,
                        k,
                        issued - 50,
                        node=node,
                        content=content,
                        viewer_key=vk,
                    )
                )
        watch = rnd.randint(1, segs * 4 + 10)
        finals.append(w.view(sid, watch, issued, content=content, viewer_key=vk))
        extras.append(w.view(sid, watch // 2, issued - 60, content=content, viewer_key=vk))
    return finals, extras


def _dataset(closed) -> dict[str, bytes]:
    out = {"manifest.json": closed.manifest}
    for f in closed.manifest_obj["files"]:
        ext = "json" if f["name"] == dataset.TREE else "ndjson"
        out[f["name"]] = (closed.directory / f"{f['sha256']}.{ext}").read_bytes()
    return out


@pytest.mark.parametrize("backend", BACKENDS)
@settings_(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(seed=st.integers(0, 10**6), order_seed=st.integers(0, 10**6), data=st.data())
def test_dataset_is_byte_identical_whatever_the_ingest_order(
    backend, stores, tmp_path_factory, seed, order_seed, data
):
    store = stores(backend)
    w = World()
    finals, extras = _epoch_receipts(w, seed)
    results = []
    for variant in range(2):
        wipe(store)
        w.register(store)
        s = cfg(tmp_path_factory.mktemp("det"))
        items = list(finals)
        if variant:
            rnd = random.Random(order_seed)
            items += extras + rnd.sample(finals, rnd.randint(0, len(finals)))  # split, duplicate
            rnd.shuffle(items)
        cuts = sorted(data.draw(st.lists(st.integers(0, len(items)), max_size=3)))
        for a, b in zip([0, *cuts], [*cuts, len(items)], strict=True):
            if a < b:
                got = ingest(store, s, items[a:b], now=B1 + 400)
                assert "CONFLICT" not in got
        c = close_epoch(store, s, now=CUT1)
        results.append((c.root, c.data_hash, _dataset(c)))
    assert results[0] == results[1]
    root, _, files = results[0]
    if root != merkle.ZERO_ROOT:
        assert merkle.MerkleTree.load(files[dataset.TREE]).root == root


def test_sqlite_and_postgresql_publish_the_same_bytes(stores, tmp_path):
    from storekit import require_pg

    require_pg()
    w = World()
    finals, _ = _epoch_receipts(w, 42)
    out = []
    for backend in BACKENDS:
        store = stores(backend)
        wipe(store)
        w.register(store)
        s = cfg(tmp_path / backend)
        ingest(store, s, finals, now=B1 + 400)
        out.append(_dataset(close_epoch(store, s, now=CUT1)))
    assert out[0] == out[1]


def test_the_thread_fallback_publishes_the_same_bytes(store, tmp_path):
    """Where the platform has no fork the big files are written by a thread: same dataset."""
    w = World()
    finals, _ = _epoch_receipts(w, 7)
    out = []
    for variant in (publish.FORK, publish.THREAD):
        wipe(store)
        w.register(store)
        s = cfg(tmp_path / variant)
        ingest(store, s, finals, now=B1 + 400)
        out.append(_dataset(close_epoch(store, s, now=CUT1, export=variant)))
    assert out[0] == out[1]
    deliveries = [r for r in finals if isinstance(r, DeliveryReceipt)]
    assert len(out[0][dataset.DELIVERY_RECEIPTS].splitlines()) == len(deliveries) > 0


@pytest.mark.parametrize("fork", [True, False], ids=["fork", "thread"])
def test_a_failure_writing_the_big_files_fails_the_close_and_leaves_nothing(
    store, tmp_path, monkeypatch, fork
):
    w = World()
    w.register(store)
    s = cfg(tmp_path)
    assert ingest(store, s, [w.delivery(key("fail-a"), 300, 3, B1)], now=B1 + 1) == ["accepted"]
    real = epochs_service._big_files

    def half_written(credited, writer, names):
        # One writer fails half-way through its first file; another may finish its own.
        if dataset.DELIVERY_RECEIPTS not in names:
            return real(credited, writer, names)
        writer.sink(dataset.DELIVERY_RECEIPTS).write_raw(b"{}\n", 1)
        raise OSError("no space left on device")

    with monkeypatch.context() as m:
        m.setattr(epochs_service, "_big_files", half_written)
        export = publish.FORK if fork else publish.THREAD
        with pytest.raises((OSError, epochs_service.SettlementError), match="no space left"):
            close_epoch(store, s, now=CUT1, export=export)
    directory = publish.epoch_dir(s.data_dir, 1)
    assert epochs_service.EpochStore(store).last_closed() == 0  # nothing committed
    assert not list(directory.glob(".*.tmp"))  # no half-written file left behind
    assert not (directory / dataset.MANIFEST).exists()
    assert epochs_service._big_files is real
    c = close_epoch(store, s, now=CUT1)  # the next try closes it
    assert [r["sessionId"] for r in lines(c, dataset.DELIVERY_RECEIPTS)] == [
        "0x" + key("fail-a").hex()
    ]

"""Stateful verdicts, registries, the rejection log and retention, on SQLite and PostgreSQL.

Every test runs against both stores through the same service functions (PROTOCOL 3-4).
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as settings_
from hypothesis import strategies as st
from storekit import (
    EPOCH,
    GENESIS,
    GRACE,
    NOW,
    World,
    ingest,
    key,
    settings,
    verdicts,
    wire,
)

from settlement.adapters.db.tables import U64_OFFSET
from settlement.domain.epochs import EpochClock
from settlement.domain.receipts import (
    DeliveryReceipt,
    Domain,
    ViewReceipt,
    recover_signer,
    sign,
)
from settlement.domain.wire import parse_wire, to_wire
from settlement.errors import MalformedReceipt
from settlement.services import ingest as service
from settlement.services import registry as registry_service

UINT64_MAX = 2**64 - 1
CLOCK = EpochClock(GENESIS, EPOCH, GRACE)
B1 = GENESIS + 100  # issuedAt in bucket 1
B2 = GENESIS + EPOCH + GRACE + 100  # issuedAt in bucket 2


def best(store):
    return {(type(x.receipt).__name__, x.bucket): x.receipt for x in store.best_receipts()}


def test_bucket_of_follows_cutoffs():
    b = CLOCK.bucket
    assert b(GENESIS) == 1
    assert b(GENESIS + EPOCH + GRACE - 1) == 1
    assert b(GENESIS + EPOCH + GRACE) == 2
    assert b(GENESIS + 2 * EPOCH + GRACE) == 3
    assert CLOCK.cutoff(0) == GENESIS
    assert CLOCK.cutoff(2) == GENESIS + 2 * EPOCH + GRACE


def test_accepted_duplicate_stale_and_summary(store, world):
    sid = key("s1")
    r1 = world.delivery(sid, 1000, 2, B1)
    r2 = world.delivery(sid, 2000, 3, B1 + 10)
    r0 = world.delivery(sid, 500, 1, B1 + 20)
    first = ingest(store, wire(r1))
    assert verdicts(first) == ["accepted"]
    result = ingest(store, [*wire(r2, r1, r0, r2), "not a receipt"])
    assert verdicts(result) == ["accepted", "stale", "stale", "duplicate", "MALFORMED"]
    assert result.summary == {
        "accepted": 1,
        "duplicate": 1,
        "stale": 2,
        "rejected": 1,
        "MALFORMED": 1,
    }
    assert [i.index for i in result.items] == list(range(5))
    assert best(store) == {("DeliveryReceipt", 1): r2}


def test_same_key_twice_in_one_batch_sees_the_first(store, world):
    sid = key("twice")
    low = world.delivery(sid, 1000, 2, B1)
    high = world.delivery(sid, 3000, 4, B1 + 5)
    view = world.view(sid, 8, B1)
    result = ingest(store, wire(low, low, high, low, view, view))
    assert verdicts(result) == [
        "accepted",
        "duplicate",
        "accepted",
        "stale",
        "accepted",
        "duplicate",
    ]
    assert best(store) == {("DeliveryReceipt", 1): high, ("ViewReceipt", 1): view}
    session = store.session(world.viewer, sid)
    assert session.content_id == world.content and session.quarantined_at is None


@pytest.mark.parametrize("order", ["late_first", "early_first"])
def test_ties_keep_earliest_issued_then_lowest_signature(store, world, order):
    sid = key("tie")
    early = world.delivery(sid, 1000, 2, B1)
    late = world.delivery(sid, 1000, 2, B1 + 30)
    batch = [late, early] if order == "late_first" else [early, late]
    result = ingest(store, wire(*batch))
    assert verdicts(result) == ["accepted", "duplicate"]
    assert best(store) == {("DeliveryReceipt", 1): early}


def test_tie_on_issued_at_keeps_lowest_signature():
    from settlement.domain.ingest import BatchState, SessionState, decide_batch

    w = World()
    sid = key("sigtie")
    base = w.delivery(sid, 1000, 2, B1)
    # RFC 6979 gives one signature per message, so a tie on issuedAt needs a second
    # signature made up here: the rules compare bytes only (verification came before).
    other = replace(base, signature=b"\x00" * 65)
    for order in ([base, other], [other, base]):
        state = BatchState(
            {(w.viewer, sid): SessionState(w.content, GENESIS + 10, 1, None, True)},
            {},
            {},
            set(),
            set(),
            [],
        )
        out = decide_batch([(i, r, 1) for i, r in enumerate(order)], state, NOW)
        assert [v.verdict for v in out] == ["accepted", "duplicate"]
        assert state.delivery[(w.viewer, sid, w.node)][1][3] == b"\x00" * 65


def test_multi_bucket_session_keeps_best_per_bucket_and_detects_crossing(store, world):
    sid = key("long")
    a1 = world.delivery(sid, 1000, 2, B1)
    a2 = world.delivery(sid, 5000, 9, B2)
    low2 = world.delivery(sid, 2000, 4, B2 + 1)  # below bucket 2's best: stale
    late1 = world.delivery(sid, 1500, 3, B1 + 50)  # above bucket 1's best, below bucket 2's
    assert verdicts(ingest(store, wire(a1, a2, low2, late1))) == [
        "accepted",
        "accepted",
        "stale",
        "accepted",
    ]
    assert best(store) == {("DeliveryReceipt", 1): late1, ("DeliveryReceipt", 2): a2}
    assert store.session(world.viewer, sid).last_bucket == 2
    # Crossing the best of ANOTHER bucket (bucket 2: 5000/9) is a conflict.
    cross = world.delivery(sid, 6000, 8, B2 + 2)
    assert verdicts(ingest(store, wire(cross))) == ["CONFLICT"]


def test_conflict_other_content_quarantines_the_whole_session(store, world):
    sid = key("equiv")
    d = world.delivery(sid, 1000, 2, B1)
    other = world.view(sid, 4, B1 + 1, content=world.content2)
    later_ok = world.delivery(sid, 2000, 3, B1 + 2, node=world.node2)
    other_session = world.delivery(key("fine"), 1000, 2, B1)
    result = ingest(store, wire(d, other, later_ok, other_session), now=NOW)
    assert verdicts(result) == ["accepted", "CONFLICT", "CONFLICT", "accepted"]
    assert "contentId" in result.items[1].detail
    # A later batch still meets the quarantine, whatever key of the session it names.
    again = world.view(sid, 5, B1 + 3)
    assert verdicts(ingest(store, wire(again), now=NOW + 5)) == ["CONFLICT"]
    [q] = store.quarantined()
    assert (q.viewer, q.session_id, q.stored_at) == (world.viewer, sid, NOW)
    assert parse_wire(q.evidence_stored) == d
    assert parse_wire(q.evidence_received) == other
    for evidence in (q.evidence_stored, q.evidence_received):
        assert recover_signer(parse_wire(evidence), world.domain) == world.viewer
    assert store.session(world.viewer, sid).quarantined_at == NOW
    assert store.quarantined(stored_before=NOW) == []
    # Credit already stored stands: the accepted receipt is still the bucket's best.
    assert ("DeliveryReceipt", 1) in best(store)


def test_conflict_other_started_at_and_crossing_counters(store, world):
    sid, sid2 = key("st"), key("cross")
    a = world.delivery(sid, 1000, 2, B1)
    b = world.delivery(sid, 1000, 2, B1 + 1, started=GENESIS + 11)
    c = world.delivery(sid2, 1000, 5, B1)
    d = world.delivery(sid2, 2000, 4, B1 + 1)
    result = ingest(store, wire(a, b, c, d))
    assert verdicts(result) == ["accepted", "CONFLICT", "accepted", "CONFLICT"]
    assert "startedAt" in result.items[1].detail
    assert "cross" in result.items[3].detail
    evidence = {q.session_id: q for q in store.quarantined()}
    assert parse_wire(evidence[sid2].evidence_stored) == c
    assert parse_wire(evidence[sid2].evidence_received) == d


def test_max_uint64_round_trips(store, world):
    top = UINT64_MAX
    sid = b"\xff" * 32
    r = world.delivery(sid, top, 2**32 - 1, top, started=top - 1000)
    v = world.view(sid, 1004, top, started=top - 1000)  # watchSeconds <= elapsed
    s = {"max_bitrate": 8 * 2**64, "max_lead_seconds": UINT64_MAX, "genesis": GENESIS}
    result = ingest(store, wire(r, v), now=top, **s)
    assert verdicts(result) == ["accepted", "accepted"]
    stored = {type(x.receipt).__name__: x.receipt for x in store.best_receipts()}
    assert stored == {"DeliveryReceipt": r, "ViewReceipt": v}
    # Conflict evidence and quarantine times at the top of the range round-trip too.
    below = world.delivery(sid, top - 1, 2**32 - 1, top, started=top - 1000)
    assert verdicts(ingest(store, wire(below, r), now=top, **s)) == ["stale", "duplicate"]
    other = world.delivery(sid, top, 0, top, started=top - 999)
    assert verdicts(ingest(store, wire(other), now=top, **s)) == ["CONFLICT"]
    [q] = store.quarantined()
    assert q.stored_at == top and parse_wire(q.evidence_stored) == r
    assert store.session(world.viewer, sid).started_at == top - 1000
    # And zero, the bottom of the range.
    z = world.view(bytes(32), 0, B1, started=GENESIS)
    assert verdicts(ingest(store, wire(z))) == ["accepted"]
    assert store.session(world.viewer, bytes(32)).started_at == GENESIS
    assert U64_OFFSET == 2**63


def test_bulk_load_best_writes_rows(store, world):
    rs = [world.delivery(key(f"bulk{i}"), 10 + i, 1, B1) for i in range(20)]
    rs.append(world.view(key("bulk0"), 3, B1))
    buckets = [CLOCK.bucket(r.issued_at) for r in rs]
    assert store.bulk_load_best(rs, buckets) == 21
    assert len(store.best_receipts()) == 21


def test_simulated_traffic_gets_the_verdicts_its_labels_promise(store, tmp_path):
    """The simulator's stateful bad actors (replays, equivocation, creator self-dealing,
    unknown node and content) get their verdicts through the store, in file order."""
    from settlement.sim.generate import SimConfig, generate, read_lines
    from settlement.sim.world import BAD_KINDS, HONEST

    cfg = SimConfig(
        seed=5,
        receipts=2000,
        nodes=10,
        viewers=200,
        creators=20,
        contents=100,
        distributor=bytes.fromhex(settings().distributor[2:]),
        bad=dict.fromkeys(BAD_KINDS, 0.01),
        workers=1,
    )
    sim = generate(cfg, tmp_path / "sim")
    registry_service.load_registries(store, sim.out_dir / "registries.json")
    p = cfg.params  # the simulator's receipt parameters, row 4 included
    ingestor = service.Ingestor(
        store,
        settings(
            genesis=p.genesis,
            max_lead_seconds=p.max_lead_seconds,
            min_segment_bytes=p.min_segment_bytes,
        ),
    )
    got: list[str] = []
    for batch in read_lines(sim.receipts_path, batch=500):
        got.extend(verdicts(ingestor.ingest(batch, sim.truth["now"])))
    labels = (sim.out_dir / "labels.txt").read_text().split()
    want = ["accepted" if lab == HONEST else BAD_KINDS[lab].reason for lab in labels]
    wrong = [(i, w, g) for i, (w, g) in enumerate(zip(want, got, strict=True)) if w != g]
    assert wrong == []
    assert dict(sorted(Counter(got).items())) == sim.truth["expected"]["ingest"]


def test_malformed_items_of_any_type_get_a_verdict(store):
    items = [None, 7, [], "{", {"kind": "view"}, b"\xff", {"kind": 1.5}]
    result = ingest(store, items)
    assert verdicts(result) == ["MALFORMED"] * len(items)
    assert store.rejection_counts()[("MALFORMED", b"", 0)] == len(items)
    with pytest.raises(MalformedReceipt):
        parse_wire(None)


def test_other_domain_is_signer_mismatch(store, world):
    foreign = Domain.from_hex(1, "0x" + "11" * 20)
    r = ViewReceipt(key("dom"), world.viewer, world.content, GENESIS + 10, 4, B1)
    signed = sign(r, foreign, world.viewer_key)
    assert verdicts(ingest(store, [to_wire(signed)])) == ["SIGNER_MISMATCH"]


def test_random_batches_keep_store_consistent_with_a_model(store, world):
    """Shuffled cumulative receipts of several keys in random batches: the best receipt
    per key and bucket equals the maximum of what was sent."""
    rng = random.Random(7)
    receipts = []
    for s in range(6):
        sid = key(f"model{s}")
        for step in range(1, 6):
            issued = B1 + 400 * step * (s + 1)
            receipts.append(world.delivery(sid, 100 * step, step, issued))
            receipts.append(world.view(sid, 3 * step, issued))
    sent = receipts * 2
    rng.shuffle(sent)
    i = 0
    while i < len(sent):
        n = rng.randint(1, 15)
        ingest(store, wire(*sent[i : i + n]))
        i += n
    stored = {
        (type(x.receipt).__name__, x.receipt.session_id, x.bucket): x.receipt
        for x in store.best_receipts()
    }
    assert stored == service_model(receipts)


def service_model(receipts):
    """Best receipt per (kind, session, bucket) of an equivocation-free single-node set."""
    out = {}
    for r in receipts:
        k = (type(r).__name__, r.session_id, CLOCK.bucket(r.issued_at))
        counters = (
            (r.bytes_served, r.segments_served)
            if type(r) is DeliveryReceipt
            else (r.watch_seconds,)
        )
        cur = out.get(k)
        if cur is None:
            out[k] = r
            continue
        cur_c = (
            (cur.bytes_served, cur.segments_served)
            if type(cur) is DeliveryReceipt
            else (cur.watch_seconds,)
        )
        if counters > cur_c or (
            counters == cur_c and (r.issued_at, r.signature) < (cur.issued_at, cur.signature)
        ):
            out[k] = r
    return out


_example = iter(range(10**9))


@st.composite
def chains(draw):
    """Equivocation-free receipts: per key a chain of non-decreasing counters (ties too)."""
    n = next(_example)
    out = []
    for k in range(draw(st.integers(1, 3))):
        sid = key(f"prop{n}/{k}")
        b = s = w = 0
        for _ in range(draw(st.integers(1, 5))):
            b += draw(st.sampled_from([0, 0, 1, 500]))
            s += draw(st.sampled_from([0, 1]))
            w += draw(st.sampled_from([0, 2]))
            issued = draw(st.sampled_from([B1, B1 + 7, B1 + 300, B2, B2 + 9]))
            node = draw(st.sampled_from([0, 1]))
            out.append(("d", sid, b, s, issued, node))
            if draw(st.booleans()):
                out.append(("v", sid, min(w, 90), 0, issued, 0))
    return out


@settings_(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(spec=chains(), data=st.data())
def test_any_order_and_repetition_ends_in_the_same_best_receipts(store, spec, data):
    w = _world
    nodes = (w.node, w.node2)
    receipts = [
        w.delivery(sid, c1, c2, issued, node=nodes[node])
        if kind == "d"
        else w.view(sid, c1, issued)
        for kind, sid, c1, c2, issued, node in spec
    ]
    sent = data.draw(st.permutations(receipts + data.draw(st.lists(st.sampled_from(receipts)))))
    ingestor = service.Ingestor(store, settings())
    if not store.nodes():
        _world.register(store)
    i = 0
    while i < len(sent):
        n = data.draw(st.integers(1, 6))
        result = ingestor.ingest(wire(*sent[i : i + n]), NOW)
        assert "CONFLICT" not in verdicts(result)
        i += n
    sessions = {r.session_id for r in receipts}
    stored = {
        (
            type(x.receipt).__name__,
            x.receipt.session_id,
            getattr(x.receipt, "node", None),
            x.bucket,
        ): x.receipt
        for x in store.best_receipts()
        if x.receipt.session_id in sessions
    }
    assert stored == keyed_model(receipts)


_world = World()


def keyed_model(receipts):
    """Best receipt per key and bucket: highest counters, then earliest issuedAt, then
    lowest signature (counters of one key never cross here, so "highest" is total)."""
    out = {}
    for r in receipts:
        node = getattr(r, "node", None)
        k = (
            type(r).__name__,
            r.session_id,
            node,
            CLOCK.bucket(r.issued_at),
        )
        counters = (r.bytes_served, r.segments_served) if node else (r.watch_seconds,)
        rank = (counters, -r.issued_at, [-x for x in r.signature])
        if k not in out or rank > out[k][0]:
            out[k] = (rank, r)
    return {k: r for k, (_, r) in out.items()}

"""Properties of settlement.domain.ingest: the batch verdicts (PROTOCOL section 3, 8-11)
and the registry gate, without a database."""

from __future__ import annotations

import copy

from hypothesis import given, settings
from hypothesis import strategies as st

from settlement.domain.ingest import (
    DUPLICATE,
    STALE,
    BatchState,
    RegistrySnapshot,
    SessionState,
    decide_batch,
    registry_gate,
)
from settlement.domain.receipts import ACCEPTED, DeliveryReceipt, Reason, Rejected, ViewReceipt

VIEWER = b"\x11" * 20
NODES = (b"\x21" * 20, b"\x22" * 20)
SESSIONS = (b"\x31" * 32, b"\x32" * 32)
CONTENT = b"\x41" * 32
OTHER_CONTENT = b"\x42" * 32
STARTED = 1_000
NOW = 10_000


def fresh_state(survivors) -> BatchState:
    """The state a store gives a batch of new sessions: each from its first survivor."""
    sessions = {}
    for _, r, bucket in survivors:
        sessions.setdefault(
            (r.viewer, r.session_id), SessionState(r.content_id, r.started_at, bucket, None, True)
        )
    return BatchState(sessions, {}, {}, set(), set(), [])


def snapshot(state: BatchState):
    sessions = {
        k: (s.content_id, s.started_at, s.last_bucket, s.quarantined_at)
        for k, s in state.sessions.items()
    }
    return sessions, copy.deepcopy(state.delivery), copy.deepcopy(state.view)


@st.composite
def monotone_receipts(draw):
    """Receipts of a few keys whose counters never cross (each key's progress is a chain),
    with ties in counters but distinct (issuedAt, signature) as a real history has."""
    out = []
    for n in range(draw(st.integers(1, 12))):
        session = draw(st.sampled_from(SESSIONS))
        bucket = draw(st.integers(1, 2))
        step = draw(st.integers(0, 4))
        issued = STARTED + 10 + n
        sig = bytes([n]) * 65
        if draw(st.booleans()):
            node = draw(st.sampled_from(NODES))
            r = DeliveryReceipt(
                session, VIEWER, node, CONTENT, STARTED, 1000 * step, step, issued, sig
            )
        else:
            r = ViewReceipt(session, VIEWER, CONTENT, STARTED, 4 * step, issued, sig)
        out.append((n, r, bucket))
    return out


@settings(max_examples=300, deadline=None)
@given(monotone_receipts(), st.data())
def test_one_batch_or_many_give_the_same_verdicts_and_state(survivors, data):
    whole = fresh_state(survivors)
    verdicts = decide_batch(survivors, whole, NOW)
    cut = sorted(data.draw(st.sets(st.integers(1, len(survivors)), max_size=3)))
    split = fresh_state(survivors)
    parts = [survivors[a:b] for a, b in zip([0, *cut], [*cut, len(survivors)], strict=True)]
    split_verdicts = [v for part in parts for v in decide_batch(part, split, NOW)]
    assert split_verdicts == verdicts
    assert snapshot(split) == snapshot(whole)


@settings(max_examples=300, deadline=None)
@given(monotone_receipts(), st.randoms(use_true_random=False))
def test_stored_best_receipts_do_not_depend_on_arrival_order(survivors, rnd):
    state = fresh_state(survivors)
    decide_batch(survivors, state, NOW)
    shuffled = list(survivors)
    rnd.shuffle(shuffled)
    other = fresh_state(shuffled)
    decide_batch(shuffled, other, NOW)
    assert (other.delivery, other.view) == (state.delivery, state.view)
    assert not state.quarantines and not other.quarantines


@settings(max_examples=300, deadline=None)
@given(monotone_receipts())
def test_replaying_a_batch_accepts_nothing_and_changes_nothing(survivors):
    state = fresh_state(survivors)
    decide_batch(survivors, state, NOW)
    before = snapshot(state)
    state.delivery_dirty.clear()
    state.view_dirty.clear()
    replay = decide_batch(survivors, state, NOW)
    assert all(v is DUPLICATE or v is STALE for v in replay)
    assert snapshot(state) == before
    assert not state.delivery_dirty and not state.view_dirty


@settings(max_examples=200, deadline=None)
@given(monotone_receipts(), st.sampled_from(["content", "started", "cross"]))
def test_a_conflict_quarantines_the_session_for_good(survivors, how):
    state = fresh_state(survivors)
    decide_batch(survivors, state, NOW)
    _, first, bucket = survivors[0]
    if how == "content":
        bad = ViewReceipt(first.session_id, VIEWER, OTHER_CONTENT, STARTED, 0, STARTED, b"x")
    elif how == "started":
        bad = ViewReceipt(first.session_id, VIEWER, CONTENT, STARTED - 1, 0, STARTED, b"x")
    else:  # more seconds, fewer segments than a stored best: the counters cross
        node = NODES[0]
        state.delivery[(VIEWER, first.session_id, node)] = {bucket: (1000, 1, STARTED, b"s")}
        bad = DeliveryReceipt(first.session_id, VIEWER, node, CONTENT, STARTED, 999, 2, 0, b"x")
    verdicts = decide_batch([(99, bad, bucket), *survivors], state, NOW + 1)
    assert all(type(v) is Rejected and v.reason is Reason.CONFLICT for v in verdicts[:1])
    session = state.sessions[(VIEWER, first.session_id)]
    assert session.quarantined_at == NOW + 1
    assert len(state.quarantines) == 1
    for (_, r, _), v in zip(survivors, verdicts[1:], strict=True):
        if r.session_id == first.session_id:
            assert v == Rejected(Reason.CONFLICT, "the session is quarantined")


def test_a_first_receipt_is_accepted_and_its_equal_twin_a_duplicate():
    r = ViewReceipt(SESSIONS[0], VIEWER, CONTENT, STARTED, 8, STARTED + 8, b"\x02" * 65)
    twin = ViewReceipt(SESSIONS[0], VIEWER, CONTENT, STARTED, 8, STARTED + 9, b"\x01" * 65)
    state = fresh_state([(0, r, 1)])
    assert decide_batch([(0, r, 1), (1, twin, 1)], state, NOW) == [ACCEPTED, DUPLICATE]
    assert state.view[(VIEWER, SESSIONS[0])][1][2] == STARTED + 8  # earliest issuedAt kept
    assert [v.verdict for v in (ACCEPTED, DUPLICATE, STALE)] == ["accepted", "duplicate", "stale"]


def test_registry_gate_checks_in_protocol_order():
    creator = b"\x51" * 20
    snap = RegistrySnapshot(
        1, {NODES[0]: ("a", True), NODES[1]: ("b", False)}, {CONTENT: creator}, frozenset()
    )
    gate = registry_gate(snap, allowlist=False)
    assert gate(VIEWER, NODES[0], CONTENT) is None
    assert gate(VIEWER, None, CONTENT) is None
    assert gate(VIEWER, b"\x99" * 20, OTHER_CONTENT).reason is Reason.UNKNOWN_NODE
    assert "inactive" in gate(VIEWER, NODES[1], CONTENT).detail
    assert gate(VIEWER, NODES[0], OTHER_CONTENT).reason is Reason.UNKNOWN_CONTENT
    assert gate(creator, NODES[0], CONTENT).reason is Reason.SELF_DEALING
    closed = registry_gate(snap, allowlist=True)
    assert closed(VIEWER, NODES[0], CONTENT).reason is Reason.UNKNOWN_VIEWER
    allowed = registry_gate(
        RegistrySnapshot(1, snap.nodes, snap.content, frozenset([VIEWER])), allowlist=True
    )
    assert allowed(VIEWER, NODES[0], CONTENT) is None

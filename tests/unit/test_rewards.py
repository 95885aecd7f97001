"""Properties of the reward rules (PROTOCOL sections 4 and 5)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from settlement.domain.rewards import (
    ClassAmounts,
    RewardParams,
    SessionInput,
    allocate,
    credit_session,
    emitted_pools,
    settle_epoch,
)

addresses = st.binary(min_size=20, max_size=20)
weight_maps = st.dictionaries(addresses, st.integers(0, 10**24), max_size=40)
pools = st.integers(0, 10**30)


@given(pools, weight_maps)
def test_allocate_sums_exactly_and_stays_within_one_unit_of_the_quota(pool, weights):
    out = allocate(pool, weights)
    assert set(out) == set(weights)
    total = sum(weights.values())
    if total == 0:
        assert all(v == 0 for v in out.values())
        return
    assert sum(out.values()) == pool
    for key, w in weights.items():
        floor = pool * w // total
        assert floor <= out[key] <= floor + 1
        if w == 0:
            assert out[key] == 0


@given(pools, weight_maps, st.randoms(use_true_random=False))
def test_allocate_does_not_depend_on_input_order(pool, weights, rnd):
    items = list(weights.items())
    rnd.shuffle(items)
    assert allocate(pool, dict(items)) == allocate(pool, weights)


@given(pools, weight_maps.filter(bool), st.data())
def test_more_weight_never_means_less_reward(pool, weights, data):
    key = data.draw(st.sampled_from(sorted(weights)))
    extra = data.draw(st.integers(1, 10**24))
    before = allocate(pool, weights)[key]
    after = allocate(pool, {**weights, key: weights[key] + extra})[key]
    assert after >= before


def test_allocate_breaks_remainder_ties_by_ascending_address():
    a, b, c = (bytes([0] * 19 + [i]) for i in (1, 2, 3))
    # 10 units over three equal weights: 3 each, the one leftover to the lowest address.
    assert allocate(10, {c: 1, b: 1, a: 1}) == {a: 4, b: 3, c: 3}
    # Largest remainder first: 7 * (1, 2, 4) / 7 is exact; 8 * (1, 2, 4) / 7 leaves 1 unit.
    assert allocate(8, {a: 1, b: 2, c: 4}) == {a: 1, b: 2, c: 5}


def test_allocate_rejects_negative_and_non_integer_inputs():
    with pytest.raises(ValueError):
        allocate(-1, {b"a": 1})
    with pytest.raises(ValueError):
        allocate(10, {b"a": -1})
    with pytest.raises(ValueError):
        allocate(10, {b"a": 1.5})  # type: ignore[dict-item]


@given(st.integers(0, 10**30), st.integers(0, 10_000), st.data())
def test_pool_split_rounds_node_and_viewer_down_and_gives_creators_the_rest(e, bn, data):
    bv = data.draw(st.integers(0, 10_000 - bn))
    p = emitted_pools(RewardParams(emission=e, bps_node=bn, bps_viewer=bv))
    assert p.node == e * bn // 10_000
    assert p.viewer == e * bv // 10_000
    assert p.total() == e


def test_params_refuse_more_than_all_basis_points():
    with pytest.raises(ValueError):
        RewardParams(emission=1, bps_node=6000, bps_viewer=4001)


def _addr(i: int) -> bytes:
    return i.to_bytes(20, "big")


def _id(i: int) -> bytes:
    return i.to_bytes(32, "big")


def test_watch_time_is_clipped_by_delivered_segments_and_credited_later():
    s = SessionInput(
        viewer=_addr(1),
        session_id=_id(1),
        content_id=_id(9),
        delivery_candidates={_addr(2): (1000, 2)},
        view_candidate=20,
    )
    c = credit_session(s, segment_seconds=4)
    assert c is not None
    assert c.delivery_deltas == {_addr(2): (1000, 2)}
    # The view watermark is the raw candidate (20); what was credited, clipped, is 8.
    assert (c.watch_credit, c.view_included, c.view_watermark, c.credited) == (8, True, 20, 8)
    # Next epoch, nothing new: the view candidate (20) is not above its raw watermark, so
    # the session is not included, though 20 is above what was credited (version 1 kept the
    # clipped 8 as the watermark and included it again at every close that read it).
    idle = SessionInput(
        viewer=_addr(1),
        session_id=_id(1),
        content_id=_id(9),
        delivery_watermarks={_addr(2): (1000, 2)},
        delivery_candidates={_addr(2): (1000, 2)},
        view_watermark=20,
        view_candidate=20,
        credited=8,
    )
    assert credit_session(idle, segment_seconds=4) is None
    # One more segment, no new view receipt: the delivery key is included and the view
    # candidate counts again for the clip: 4 s more.
    s2 = SessionInput(
        viewer=_addr(1),
        session_id=_id(1),
        content_id=_id(9),
        delivery_watermarks={_addr(2): (1000, 2)},
        delivery_candidates={_addr(2): (1500, 3)},
        view_watermark=20,
        view_candidate=20,
        credited=8,
    )
    c2 = credit_session(s2, segment_seconds=4)
    assert c2 is not None
    assert (c2.watch_credit, c2.view_included, c2.view_watermark, c2.credited) == (
        4,
        False,
        20,
        12,
    )
    assert (c2.previous_view_watermark, c2.previous_credited) == (20, 8)
    # Nothing new at all: the session is not credited.
    s3 = SessionInput(
        viewer=_addr(1),
        session_id=_id(1),
        content_id=_id(9),
        delivery_watermarks={_addr(2): (1500, 3)},
        delivery_candidates={_addr(2): (1500, 3)},
        view_watermark=20,
        view_candidate=20,
        credited=12,
    )
    assert credit_session(s3, segment_seconds=4) is None
    # A view receipt above the raw watermark but none above the clip: included, no credit.
    s4 = SessionInput(
        viewer=_addr(1),
        session_id=_id(1),
        content_id=_id(9),
        delivery_watermarks={_addr(2): (1500, 3)},
        delivery_candidates={_addr(2): (1500, 3)},
        view_watermark=20,
        view_candidate=30,
        credited=12,
    )
    c4 = credit_session(s4, segment_seconds=4)
    assert c4 is not None
    assert (c4.watch_credit, c4.view_included, c4.view_watermark, c4.credited) == (
        0,
        True,
        30,
        12,
    )


def test_a_worked_epoch():
    viewer, node_a, node_b, creator = _addr(1), _addr(2), _addr(3), _addr(4)
    sessions = [
        SessionInput(
            viewer=viewer,
            session_id=_id(1),
            content_id=_id(7),
            delivery_candidates={node_a: (300, 3), node_b: (100, 1)},
            view_candidate=16,
        )
    ]
    params = RewardParams(emission=1000, segment_seconds=4, max_bytes_per_viewer=200)
    r = settle_epoch(sessions, {_id(7): creator}, {}, ClassAmounts(), params)
    # Bytes 300 + 100 above the 200 cap: allocate(200, {a: 300, b: 100}) = 150 / 50.
    assert r.node_weights == {node_a: 150, node_b: 50}
    assert r.allocations["node"] == {node_a: 450, node_b: 150}
    assert r.viewer_weights == {viewer: 16}
    assert r.allocations["viewer"] == {viewer: 300}
    assert r.creator_weights == {creator: 16}
    assert r.allocations["creator"] == {creator: 100}
    assert r.pools.carried_out.total() == 0
    assert r.balances == {node_a: 450, node_b: 150, viewer: 300, creator: 100}


def test_an_empty_class_carries_its_pool_to_the_next_epoch():
    viewer, node = _addr(1), _addr(2)
    only_bytes = [
        SessionInput(
            viewer=viewer, session_id=_id(1), content_id=_id(7), delivery_candidates={node: (10, 0)}
        )
    ]
    params = RewardParams(emission=1000)
    r = settle_epoch(only_bytes, {}, {}, ClassAmounts(), params)
    assert r.allocations["node"] == {node: 600}
    assert r.pools.carried_out == ClassAmounts(node=0, viewer=300, creator=100)


def test_the_viewer_cap_splits_over_sessions_by_content_then_session_id():
    viewer, node = _addr(1), _addr(2)
    sessions = [
        SessionInput(
            viewer=viewer,
            session_id=_id(s),
            content_id=_id(c),
            delivery_candidates={node: (1, 10)},
            view_candidate=10,
        )
        for s, c in ((5, 1), (4, 2), (3, 3))
    ]
    params = RewardParams(emission=0, segment_seconds=4, max_watch_seconds_per_epoch=20)
    r = settle_epoch(sessions, {}, {}, ClassAmounts(), params)
    # allocate(20, 10/10/10): 6 each and 2 leftovers to the lowest (contentId, sessionId).
    assert r.session_watch == {(viewer, _id(5)): 7, (viewer, _id(4)): 7, (viewer, _id(3)): 6}
    assert r.viewer_weights == {viewer: 20}


def test_a_viewer_watching_own_content_earns_the_creator_nothing():
    viewer, node = _addr(1), _addr(2)
    s = SessionInput(
        viewer=viewer,
        session_id=_id(1),
        content_id=_id(7),
        delivery_candidates={node: (1, 5)},
        view_candidate=20,
    )
    r = settle_epoch([s], {_id(7): viewer}, {}, ClassAmounts(), RewardParams(emission=100))
    assert r.creator_weights == {}
    assert r.pools.carried_out.creator == 10


# --- random epochs ------------------------------------------------------------------


@st.composite
def epoch_sessions(draw):
    n_viewers = draw(st.integers(1, 5))
    n_nodes = draw(st.integers(1, 4))
    sessions = []
    for i in range(draw(st.integers(0, 12))):
        viewer = _addr(100 + draw(st.integers(0, n_viewers - 1)))
        nodes = draw(st.lists(st.integers(0, n_nodes - 1), unique=True, max_size=n_nodes))
        marks, cands = {}, {}
        for n in nodes:
            node = _addr(200 + n)
            b0, s0 = draw(st.integers(0, 10**6)), draw(st.integers(0, 50))
            b1, s1 = b0 + draw(st.integers(0, 10**6)), s0 + draw(st.integers(0, 50))
            if draw(st.booleans()):
                marks[node] = (b0, s0)
            cands[node] = (b1, s1)
        vw = draw(st.integers(0, 200))
        credited = draw(st.integers(0, vw))  # at most the raw watermark it was clipped from
        vc = draw(st.one_of(st.none(), st.integers(vw, vw + 400)))
        sessions.append(
            SessionInput(
                viewer=viewer,
                session_id=_id(i),
                content_id=_id(1000 + draw(st.integers(0, 3))),
                delivery_watermarks=marks,
                delivery_candidates=cands,
                view_watermark=vw,
                view_candidate=vc,
                credited=credited,
            )
        )
    return sessions


reward_params = st.builds(
    RewardParams,
    emission=st.integers(0, 10**24),
    bps_node=st.integers(0, 5000),
    bps_viewer=st.integers(0, 5000),
    segment_seconds=st.integers(1, 6),
    max_bytes_per_viewer=st.integers(0, 3 * 10**6),
    max_watch_seconds_per_epoch=st.integers(0, 600),
)
creator_maps = st.dictionaries(
    st.sampled_from([_id(1000 + i) for i in range(4)]),
    st.sampled_from([_addr(100), _addr(300), _addr(301)]),
)


@settings(max_examples=300)
@given(st.lists(epoch_sessions(), min_size=1, max_size=4), creator_maps, reward_params)
def test_carry_over_conserves_tokens_across_epochs(epochs, creators, params):
    carried = ClassAmounts()
    balances: dict[bytes, int] = {}
    allocated_total = 0
    for sessions in epochs:
        r = settle_epoch(sessions, creators, balances, carried, params)
        for cls in ("node", "viewer", "creator"):
            assert sum(r.allocations[cls].values()) == r.pools.allocated.get(cls)
            assert r.pools.allocated.get(cls) + r.pools.carried_out.get(cls) == r.pools.emitted.get(
                cls
            ) + r.pools.carried_in.get(cls)
        allocated_total += r.pools.allocated.total()
        carried, balances = r.pools.carried_out, r.balances
    assert allocated_total + carried.total() == params.emission * len(epochs)
    assert sum(balances.values()) == allocated_total


@settings(max_examples=200)
@given(epoch_sessions(), creator_maps, reward_params, st.randoms(use_true_random=False))
def test_the_result_does_not_depend_on_session_order(sessions, creators, params, rnd):
    a = settle_epoch(sessions, creators, {}, ClassAmounts(), params)
    shuffled = list(sessions)
    rnd.shuffle(shuffled)
    b = settle_epoch(shuffled, creators, {}, ClassAmounts(), params)
    assert a.allocations == b.allocations
    assert a.balances == b.balances
    assert a.session_watch == b.session_watch


@settings(max_examples=200)
@given(epoch_sessions(), reward_params)
def test_caps_hold_and_watermarks_never_move_down(sessions, params):
    r = settle_epoch(sessions, {}, {}, ClassAmounts(), params)
    by_viewer: dict[bytes, int] = {}
    for (viewer, _sid), seconds in r.session_watch.items():
        by_viewer[viewer] = by_viewer.get(viewer, 0) + seconds
    assert all(v <= params.max_watch_seconds_per_epoch for v in by_viewer.values())
    assert sum(r.node_weights.values()) <= params.max_bytes_per_viewer * len(
        {s.viewer for s in sessions}
    )
    inputs = {(s.viewer, s.session_id): s for s in sessions}
    for c in r.sessions:
        s = inputs[(c.viewer, c.session_id)]
        assert c.view_watermark >= s.view_watermark
        assert c.credited >= s.credited
        for node, mark in c.delivery_watermarks.items():
            old = s.delivery_watermarks.get(node, (0, 0))
            assert mark[0] >= old[0] and mark[1] >= old[1]


def test_random_large_allocation_is_exact():
    rnd = random.Random(7)
    weights = {rnd.randbytes(20): rnd.randrange(10**12) for _ in range(10_000)}
    out = allocate(10**27 + 12345, weights)
    assert sum(out.values()) == 10**27 + 12345

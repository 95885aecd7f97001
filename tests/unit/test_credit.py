"""The columnar credit (domain.credit, numpy) against the rules stated one session at a time
(rewards.credit_row / settle_rows): same watermarks, same weights, same rewards; and the
numpy pitfalls it must avoid (keys ending in zero bytes, sums beyond 64 bits)."""

from __future__ import annotations

import dataclasses
import random

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from settlement.domain.columns import Cols, as_bytes, group_sum, key
from settlement.domain.credit import credit_epoch
from settlement.domain.rewards import (
    ClassAmounts,
    EpochWeights,
    RewardParams,
    credit_row,
    settle_rows,
    settle_weights,
)

NOW = 1_000
NEVER = 2**64 - 1
# Keys that end in zero bytes, or differ only there: an `S` value drops them.
VIEWERS = [b"\x11" * 19 + b"\x00", b"\x11" * 18 + b"\x00\x01", b"\xfe" * 20]
NODES = [b"\x00" * 19 + b"\x01", b"\x22" * 19 + b"\x00", b"\x22" * 20]
CONTENT = [b"\xc0" * 31 + b"\x00", b"\xc1" * 32, b"\xc2" * 32]
# One content's creator is a viewer (no creator weight for its own sessions), one has none.
CREATORS = {CONTENT[0]: b"\xaa" * 20, CONTENT[1]: VIEWERS[0]}


def mat(values: list[bytes], width: int) -> np.ndarray:
    return np.frombuffer(b"".join(values), np.uint8).reshape(len(values), width)


def u64(values: list[int]) -> np.ndarray:
    return np.array(values, dtype=np.uint64)


@st.composite
def epochs(draw):
    """Stored rows of one close: several buckets per key, earlier watermarks, quarantine."""
    rnd = random.Random(draw(st.integers(0, 2**32)))
    big = draw(st.booleans())  # counters near 2**64: sums need more than 64 bits
    top = 2**64 - 1 if big else 1_000
    sessions, deliveries, views, dmarks, vmarks = [], [], [], [], []
    for i in range(draw(st.integers(0, 12))):
        viewer = rnd.choice(VIEWERS)
        sid = bytes([i % 3]) * 31 + bytes([i // 3])  # some end in zero bytes
        q = rnd.choice([NEVER, NEVER, NOW - 1, NOW, NOW + 5])
        sessions.append((viewer, sid, rnd.choice(CONTENT), 100 + i, q))
        for node in rnd.sample(NODES, rnd.randint(0, 3)):
            b = s = 0
            rows = []
            for bucket in sorted(rnd.sample(range(1, 6), rnd.randint(1, 3))):
                b = min(top, b + rnd.choice([0, 1, rnd.randint(0, top)]))
                s = min(2**63 - 1, s + rnd.choice([0, 1, rnd.randint(0, 50)]))
                rows.append((viewer, sid, node, bucket, b, s, 10 + bucket, bytes([bucket]) * 65))
            deliveries += rows
            # Earlier closes moved it to some earlier candidate (a row per close).
            for r in rnd.sample(rows, rnd.randint(0, len(rows))):
                dmarks.append((viewer, sid, node, r[4], r[5]))
        if rnd.random() < 0.7:
            w = 0
            rows = []
            for bucket in sorted(rnd.sample(range(1, 6), rnd.randint(1, 2))):
                w = min(2**63 - 1, w + rnd.choice([0, 3, rnd.randint(0, 400)]))
                rows.append((viewer, sid, bucket, w, 20 + bucket, bytes([bucket + 7]) * 65))
            views += rows
            # Earlier closes: the raw watermark some earlier candidate's seconds, credited
            # at most that (clipped); several rows a key, each column its own maximum.
            for _ in range(rnd.choice([0, 0, 1, 2])):
                raw = rnd.choice([r[3] for r in rows] + [rnd.randint(0, rows[-1][3])])
                vmarks.append((viewer, sid, raw, rnd.choice([raw, rnd.randint(0, raw), 0])))
    rnd.shuffle(deliveries)
    rnd.shuffle(views)
    return sessions, deliveries, views, dmarks, vmarks, big


def columns(sessions, deliveries, views, dmarks, vmarks):
    s = Cols(
        viewer=mat([r[0] for r in sessions], 20),
        session_id=mat([r[1] for r in sessions], 32),
        content_id=mat([r[2] for r in sessions], 32),
        started_at=u64([r[3] for r in sessions]),
        quarantined_at=u64([r[4] for r in sessions]),
    )
    d = Cols(
        viewer=mat([r[0] for r in deliveries], 20),
        session_id=mat([r[1] for r in deliveries], 32),
        node=mat([r[2] for r in deliveries], 20),
        bucket=u64([r[3] for r in deliveries]),
        bytes_served=u64([r[4] for r in deliveries]),
        segments=u64([r[5] for r in deliveries]),
        issued_at=u64([r[6] for r in deliveries]),
        signature=mat([r[7] for r in deliveries], 65),
    )
    v = Cols(
        viewer=mat([r[0] for r in views], 20),
        session_id=mat([r[1] for r in views], 32),
        bucket=u64([r[2] for r in views]),
        watch_seconds=u64([r[3] for r in views]),
        issued_at=u64([r[4] for r in views]),
        signature=mat([r[5] for r in views], 65),
    )
    dm = Cols(
        viewer=mat([r[0] for r in dmarks], 20),
        session_id=mat([r[1] for r in dmarks], 32),
        node=mat([r[2] for r in dmarks], 20),
        bytes_served=u64([r[3] for r in dmarks]),
        segments=u64([r[4] for r in dmarks]),
    )
    vm = Cols(
        viewer=mat([r[0] for r in vmarks], 20),
        session_id=mat([r[1] for r in vmarks], 32),
        watch_seconds=u64([r[2] for r in vmarks]),
        credited=u64([r[3] for r in vmarks]),
    )
    return d, v, s, dm, vm


def reference_rows(sessions, deliveries, views, dmarks, vmarks):
    """Each live session as rewards.SessionRow: candidates picked and watermarks maxed here."""
    out = []
    for viewer, sid, content, _, q in sessions:
        if q < NOW:
            continue
        best = {}
        for r in deliveries:
            if (r[0], r[1]) == (viewer, sid):
                k = (r[4], r[5], -r[3])
                if r[2] not in best or k > best[r[2]]:
                    best[r[2]] = k
        keys = []
        for node, (cb, cs, _) in best.items():
            marks = [m for m in dmarks if m[:3] == (viewer, sid, node)]
            wb = max((m[3] for m in marks), default=0)
            ws = max((m[4] for m in marks), default=0)
            keys.append((node, cb, cs, wb, ws))
        vs = [r[3] for r in views if (r[0], r[1]) == (viewer, sid)]
        vc = max(vs) if vs else None
        vw = max((m[2] for m in vmarks if (m[0], m[1]) == (viewer, sid)), default=0)
        cr = max((m[3] for m in vmarks if (m[0], m[1]) == (viewer, sid)), default=0)
        if keys or vc is not None:
            out.append((viewer, sid, content, keys, vc, vw, cr))
    return out


@settings(max_examples=150, deadline=None)
@given(epochs(), st.integers(1, 6), st.sampled_from([0, 1, 500, 2**64 - 1]))
def test_columnar_credit_equals_the_rules_session_by_session(epoch, seg, bytes_cap):
    sessions, deliveries, views, dmarks, vmarks, _ = epoch
    params = RewardParams(
        emission=10**6 + 7,
        segment_seconds=seg,
        max_bytes_per_viewer=bytes_cap,
        max_watch_seconds_per_epoch=300,
    )
    credit = credit_epoch(
        *columns(sessions, deliveries, views, dmarks, vmarks), now=NOW, segment_seconds=seg
    )
    rows = reference_rows(sessions, deliveries, views, dmarks, vmarks)
    expected = [c for c in (credit_row(r, seg) for r in rows) if c is not None]

    # Watermarks moved, in key order.
    marks = credit.delivery_watermarks().all()
    got = list(
        zip(
            as_bytes(marks["viewer"]),
            as_bytes(marks["session_id"]),
            as_bytes(marks["node"]),
            marks["bytes_served"].tolist(),
            marks["segments"].tolist(),
            strict=True,
        )
    )
    want = sorted(
        (c.viewer, c.session_id, n, b, s)
        for c in expected
        for n, (b, s) in c.delivery_watermarks.items()
    )
    assert got == want
    vmoved = credit.view_watermarks().all()
    assert list(
        zip(
            as_bytes(vmoved["viewer"]),
            as_bytes(vmoved["session_id"]),
            vmoved["watch_seconds"].tolist(),
            vmoved["credited"].tolist(),
            strict=True,
        )
    ) == sorted(
        (c.viewer, c.session_id, c.view_watermark, c.credited)
        for c in expected
        if c.view_watermark > c.previous_view_watermark or c.credited > c.previous_credited
    )
    assert sorted(as_bytes(credit.credited.session_id)) == sorted(c.session_id for c in expected)

    # What is published: every session with an included key, its previous watermarks and
    # credited seconds, zeros included (PROTOCOL 6), in key order.
    pv = credit.published_view_marks().all()
    assert list(
        zip(
            as_bytes(pv["viewer"]),
            as_bytes(pv["session_id"]),
            pv["watch_seconds"].tolist(),
            pv["credited"].tolist(),
            strict=True,
        )
    ) == sorted(
        (c.viewer, c.session_id, c.previous_view_watermark, c.previous_credited) for c in expected
    )
    pd = credit.published_delivery_marks().all()
    assert list(
        zip(
            as_bytes(pd["viewer"]),
            as_bytes(pd["session_id"]),
            as_bytes(pd["node"]),
            pd["bytes_served"].tolist(),
            pd["segments"].tolist(),
            strict=True,
        )
    ) == sorted(
        (c.viewer, c.session_id, n, b, g) for c in expected for n, b, g in c.previous_delivery
    )

    # Weights through the same caps and pools: the same rewards as the reference.
    w = credit.weights(params.max_bytes_per_viewer, params.max_watch_seconds_per_epoch, CREATORS)
    previous = {VIEWERS[2]: 5}
    got_rewards = settle_weights(
        EpochWeights(w.node, w.viewer, w.creator, w.capped_bytes, w.capped_watch),
        CREATORS,
        previous,
        ClassAmounts(1, 2, 3),
        params,
    )
    want_rewards = settle_rows(rows, CREATORS, previous, ClassAmounts(1, 2, 3), params)
    assert got_rewards.allocations == want_rewards.allocations
    assert got_rewards.pools == want_rewards.pools
    assert got_rewards.balances == want_rewards.balances
    assert got_rewards.node_weights == want_rewards.node_weights
    assert got_rewards.viewer_weights == want_rewards.viewer_weights
    assert got_rewards.creator_weights == want_rewards.creator_weights


@settings(max_examples=60, deadline=None)
@given(epochs(), st.randoms(use_true_random=False))
def test_row_order_changes_nothing(epoch, rnd):
    sessions, deliveries, views, dmarks, vmarks, _ = epoch
    a = credit_epoch(
        *columns(sessions, deliveries, views, dmarks, vmarks), now=NOW, segment_seconds=4
    )
    for rows in (sessions, deliveries, views, dmarks, vmarks):
        rnd.shuffle(rows)
    b = credit_epoch(
        *columns(sessions, deliveries, views, dmarks, vmarks), now=NOW, segment_seconds=4
    )
    outputs = (
        "published_deliveries",
        "published_views",
        "published_delivery_marks",
        "published_view_marks",
        "delivery_watermarks",
        "view_watermarks",
    )

    def cols(credit, output):
        return getattr(credit, output)().all()

    def named(credit):
        # The credit's own column sets, by field name.
        return [
            {f.name: getattr(part, f.name) for f in dataclasses.fields(part)}
            for part in (credit.delivery, credit.view, credit.credited)
        ]

    pairs = list(zip(named(a), named(b), strict=True))
    for x, y in [*pairs, *((cols(a, o), cols(b, o)) for o in outputs)]:
        # Indices into the tables read (row, session) follow their order; nothing else may.
        names = set(x) - {"row", "session"}
        assert names == set(y) - {"row", "session"}
        for name in names:
            assert np.array_equal(x[name], y[name]), name


def test_keys_sort_as_unsigned_bytes_even_with_zero_bytes():
    rnd = random.Random(7)
    values = [bytes(rnd.choice([0, 0, 1, 255]) for _ in range(6)) for _ in range(400)]
    m = mat(values, 6)
    order = np.argsort(key(m), kind="stable")
    assert as_bytes(m[order]) == sorted(values)
    assert as_bytes(m) == values


def test_group_sums_are_exact_past_64_bits():
    values = u64([2**64 - 1, 2**64 - 1, 5, 7, 2**63])
    first = np.array([True, False, True, False, True])
    assert [int(x) for x in group_sum(values, first)] == [2**65 - 2, 12, 2**63]
    assert group_sum(u64([1, 2, 3]), np.array([True, True, False])).tolist() == [1, 5]
    assert len(group_sum(u64([]), np.zeros(0, bool))) == 0

"""The set-based close (SQL on SQLite and PostgreSQL) against the reward rules as
`rewards.settle_epoch` states them in Python: same allocations, pools, watermarks and root,
epoch after epoch, with late receipts, several buckets per key and binding caps."""

from __future__ import annotations

import contextlib
import random

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as settings_
from hypothesis import strategies as st
from storekit import (
    BACKENDS,
    EPOCH,
    GENESIS,
    GRACE,
    World,
    close_reads,
    key,
    opened,
    require_pg,
    wire,
)

from settlement.adapters.db.tables import EPOCH_TABLES, U64_OFFSET
from settlement.domain import merkle
from settlement.domain.receipts import DeliveryReceipt
from settlement.domain.rewards import ClassAmounts, SessionInput, settle_epoch
from settlement.services import epochs as epochs_service
from settlement.services import ingest as service
from settlement.services import registry as registry_service
from settlement.services.close import close_epoch, params_of

EPOCHS = 3


def cutoff(e: int) -> int:
    return GENESIS + e * EPOCH + GRACE


def scenario(w: World, seed: int):
    """Cumulative receipts of a few sessions over three epochs, each with an ingest phase
    (the epoch before whose close it arrives: its own bucket, or later for a late one)."""
    rnd = random.Random(seed)
    viewer_keys = [key("rv0"), key("rv1"), key("rv2")]
    out = []
    for i in range(rnd.randint(1, 6)):
        vk = rnd.choice(viewer_keys)
        sid = key(f"ref-{seed}-{i}")
        content = rnd.choice([w.content, w.content2])
        nodes = rnd.sample([w.node, w.node2], rnd.randint(1, 2))
        started = GENESIS + 10
        counters = {n: [0, 0] for n in nodes}
        segs_total = 0
        t = GENESIS + 100
        for _ in range(rnd.randint(1, 4)):
            t += rnd.randint(0, 2 * EPOCH)
            if t >= cutoff(EPOCHS):
                break
            bucket = max(1, (t - GENESIS - GRACE) // EPOCH + 1)
            for n in rnd.sample(nodes, rnd.randint(1, len(nodes))):
                add_s = rnd.randint(0, 5)
                counters[n][0] += rnd.randint(0, 10**6) if add_s else rnd.randint(0, 3)
                counters[n][1] += add_s
                segs_total += add_s
                r = w.delivery(
                    sid, counters[n][0], counters[n][1], t, node=n, content=content,
                    started=started, viewer_key=vk,
                )  # fmt: skip
                out.append((min(EPOCHS, bucket + rnd.choice([0, 0, 0, 1])), r))
            if rnd.random() < 0.8:
                watch = min(segs_total * 4 + rnd.randint(0, 8), t - started)
                r = w.view(sid, watch, t, content=content, started=started, viewer_key=vk)
                out.append((min(EPOCHS, bucket + rnd.choice([0, 0, 1])), r))
    rnd.shuffle(out)
    return out


def reference_sessions(store, epoch, marks_d, marks_v, marks_c, quarantined=frozenset()):
    by_session: dict = {}
    for sr in store.best_receipts(max_bucket=epoch):
        r = sr.receipt
        skey = (r.viewer, r.session_id)
        if skey in quarantined:
            continue
        entry = by_session.setdefault(skey, [r.content_id, {}, None])
        if type(r) is DeliveryReceipt:
            c = entry[1].get(r.node)
            if c is None or (r.bytes_served, r.segments_served) > c:
                entry[1][r.node] = (r.bytes_served, r.segments_served)
        elif entry[2] is None or r.watch_seconds > entry[2]:
            entry[2] = r.watch_seconds
    return [
        SessionInput(
            viewer=v,
            session_id=s,
            content_id=content,
            delivery_watermarks=dict(marks_d.get((v, s), {})),
            delivery_candidates=cands,
            view_watermark=marks_v.get((v, s), 0),
            view_candidate=vc,
            credited=marks_c.get((v, s), 0),
        )
        for (v, s), (content, cands, vc) in by_session.items()
    ]


def check_against_reference(store, tmp_path, seed, caps_seed):
    rnd = random.Random(caps_seed)
    from storekit import settings

    s = settings(
        emission=rnd.randint(0, 10**20),
        bps_node=rnd.randint(0, 5000),
        bps_viewer=rnd.randint(0, 5000),
        max_bytes_per_viewer=2**64 - 1 if rnd.random() < 0.3 else rnd.randint(0, 2 * 10**6),
        max_watch_seconds_per_epoch=2**64 - 1 if rnd.random() < 0.3 else rnd.randint(0, 40),
        data_dir=str(tmp_path / f"data-{seed}-{caps_seed}"),
    )
    w = World()
    w.register(store)
    receipts = scenario(w, seed)
    params = params_of(s)
    creators = {w.content: w.creator, w.content2: w.creator}
    from settlement.domain.receipts import address_of

    rv0 = address_of(key("rv0"))
    marks_d: dict = {}
    marks_v: dict = {}
    marks_c: dict = {}
    balances: dict = {}
    carried = ClassAmounts()
    for e in range(1, EPOCHS + 1):
        batch = [r for phase, r in receipts if phase == e]
        if batch:
            got = service.Ingestor(store, s).ingest(wire(*batch), cutoff(e) - 1)
            # After the registry change below, rv0's new receipts for content2 are refused.
            assert {i.reason for i in got.items if i.verdict == "rejected"} <= {"SELF_DEALING"}
        if e == 2:
            # content2 now belongs to rv0: its earlier watch time earns no creator share.
            registry_service.add_content(store, w.content2, rv0)
            creators = {**creators, w.content2: rv0}
        closed = close_epoch(store, s, e, now=cutoff(e))
        ref = settle_epoch(
            reference_sessions(store, e, marks_d, marks_v, marks_c),
            creators,
            balances,
            carried,
            params,
        )
        sql = {}
        for a, cls, amount in epochs_service.allocations(store, s, e):
            sql.setdefault(cls, {})[a] = amount
        assert sql == {cls: v for cls, v in ref.allocations.items() if v}, f"epoch {e}"
        pools = closed.manifest_obj["pools"]
        for cls in ("node", "viewer", "creator"):
            assert pools[cls]["carriedOut"] == str(ref.pools.carried_out.get(cls))
        assert closed.root == merkle.root_of(merkle.tree_for_balances(ref.balances))
        assert closed.proposes == (ref.changed_balances() and bool(ref.balances))
        for c in ref.sessions:
            k = (c.viewer, c.session_id)
            marks_d.setdefault(k, {}).update(c.delivery_watermarks)
            marks_v[k] = c.view_watermark
            marks_c[k] = c.credited
        balances, carried = ref.balances, ref.pools.carried_out
        assert stored_watermarks(store) == (
            {(v, s_, n): m for (v, s_), nodes in marks_d.items() for n, m in nodes.items()},
            {k: (m, marks_c[k]) for k, m in marks_v.items() if m or marks_c[k]},
        )


def stored_watermarks(store):
    def fn(cur):
        cur.execute(
            "SELECT viewer, session_id, node, MAX(bytes_served), MAX(segments_served) "
            "FROM delivery_watermark GROUP BY viewer, session_id, node"
        )
        d = {(bytes(v), bytes(s), bytes(n)): (b + U64_OFFSET, g) for v, s, n, b, g in cur}
        cur.execute(
            "SELECT viewer, session_id, MAX(watch_seconds), MAX(credited) FROM view_watermark "
            "GROUP BY viewer, session_id"
        )
        return d, {(bytes(v), bytes(s)): (w, c) for v, s, w, c in cur}

    return store._run(fn, write=False)


@pytest.fixture(scope="module")
def sqlite_store(tmp_path_factory):
    with opened("sqlite", tmp_path_factory.mktemp("ref")) as store:
        yield store


def wipe(store):
    from storekit import reset

    reset(store)

    def fn(cur):
        for table in EPOCH_TABLES:
            cur.execute(f"DELETE FROM {table}")

    store._run(fn)


# Closes that read only the sessions touched since the last close (True), every live session
# (False) or either, as the close chooses (None): the reference reads every session.
@settings_(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    seed=st.integers(0, 10**9),
    caps_seed=st.integers(0, 10**9),
    touched_only=st.sampled_from([None, True, False]),
)
def test_sql_close_matches_the_reference_rules_on_sqlite(
    sqlite_store, tmp_path_factory, seed, caps_seed, touched_only
):
    wipe(sqlite_store)
    with close_reads(touched_only):
        check_against_reference(sqlite_store, tmp_path_factory.mktemp("r"), seed, caps_seed)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("seed", [3, 17, 2024])
@pytest.mark.parametrize("touched_only", [True, False])
def test_sql_close_matches_the_reference_rules(backend, seed, touched_only, tmp_path):
    if backend == "postgresql":
        require_pg()
    with contextlib.ExitStack() as stack:
        store = stack.enter_context(opened(backend, tmp_path))
        stack.enter_context(close_reads(touched_only))
        check_against_reference(store, tmp_path, seed, seed + 1)

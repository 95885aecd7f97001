"""A reproducible dataset (PROTOCOL 4 and 6): the same receipts, ingested in the same batches,
closed epoch after epoch, publish the same bytes however the close reads its store.

Random multi-epoch histories (sessions watched past their delivered segments, receipts that
arrive after their epoch closed, duplicates, an equivocation that quarantines a session) go
through the real store and are closed with every read strategy the close has: only the
sessions touched since the last close, or every live session (`storekit.close_reads`), on
SQLite and on PostgreSQL, and with the big files written by forked children or by a thread.
Every run must give the same manifest bytes (so every file's sha256), files and root at
every epoch. In version 1 a session watched past its deliveries stayed above its (clipped)
view watermark, so the closes that read every session included it again and the others did
not: different datasets from one history.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, example, given
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
    pg_reachable,
    reset,
    wire,
)

from settlement.adapters import files as publish
from settlement.adapters.db.tables import EPOCH_TABLES
from settlement.domain import dataset
from settlement.services import ingest as service
from settlement.services.close import close_epoch

SEG = 4
VIEWER_KEYS = [key("repro-viewer-0"), key("repro-viewer-1")]


def cutoff(e: int) -> int:
    return GENESIS + e * EPOCH + GRACE


def bucket_time(e: int) -> int:
    """A moment inside bucket `e` (issuedAt in [cutoff(e-1), cutoff(e)))."""
    return (cutoff(e - 1) if e > 1 else GENESIS) + 200


@dataclass(frozen=True)
class Update:
    """One step of a session: its cumulative counters grow, new receipts are signed."""

    epochs_later: int  # bucket of this step, after the session's previous step
    segments: tuple[int, int]  # segments added per node (the session's nodes only)
    watch: int  # watch seconds added: may run past the delivered segments
    delay: int  # closes missed before its receipts arrive (late receipts)
    resend: bool  # its receipts arrive again a close later (duplicates)


@dataclass(frozen=True)
class SessionPlan:
    viewer: int
    content: int
    nodes: tuple[int, ...]
    start: int  # bucket of its first step
    updates: tuple[Update, ...]
    conflict: int | None  # the close before which an equivocating receipt arrives


@dataclass(frozen=True)
class History:
    epochs: int
    sessions: tuple[SessionPlan, ...]


updates = st.builds(
    Update,
    epochs_later=st.integers(0, 1),
    segments=st.tuples(st.integers(0, 3), st.integers(0, 3)),
    watch=st.integers(0, 30),
    delay=st.sampled_from([0, 0, 1, 2]),
    resend=st.booleans(),
)


@st.composite
def histories(draw: Any) -> History:
    n = draw(st.integers(2, 4))
    plans = []
    for _ in range(draw(st.integers(1, 4))):
        plans.append(
            SessionPlan(
                viewer=draw(st.integers(0, 1)),
                content=draw(st.integers(0, 1)),
                nodes=tuple(draw(st.lists(st.integers(0, 1), max_size=2, unique=True))),
                start=draw(st.integers(1, n)),
                updates=tuple(draw(st.lists(updates, min_size=1, max_size=4))),
                conflict=draw(st.one_of(st.none(), st.none(), st.integers(1, n))),
            )
        )
    return History(n, tuple(plans))


def batches(w: World, h: History) -> dict[int, list[Any]]:
    """The signed receipts of `h` by the close before which they arrive (1..h.epochs)."""
    out: dict[int, list[Any]] = {e: [] for e in range(1, h.epochs + 1)}
    nodes = (w.node, w.node2)
    contents = (w.content, w.content2)
    for i, p in enumerate(h.sessions):
        sid = key(f"repro-{i}")
        vk = VIEWER_KEYS[p.viewer]
        content = contents[p.content]
        started = bucket_time(p.start) - 10
        counters = dict.fromkeys(p.nodes, 0)
        watch = 0
        bucket = p.start
        for k, u in enumerate(p.updates):
            bucket += u.epochs_later
            if bucket > h.epochs:
                break
            issued = bucket_time(bucket) + 10 * k
            signed = []
            for j, n in enumerate(p.nodes):
                counters[n] += u.segments[j]
                segs = counters[n]
                signed.append(
                    w.delivery(
                        sid, 100_000 * segs + k, segs, issued, node=nodes[n],
                        content=content, started=started, viewer_key=vk,
                    )
                )  # fmt: skip
            # Watched past the delivered segments as often as not; at most the elapsed time.
            watch = min(watch + u.watch, issued - started)
            signed.append(
                w.view(sid, watch, issued, content=content, started=started, viewer_key=vk)
            )
            arrive = min(h.epochs, bucket + u.delay)
            out[arrive] += signed
            if u.resend:
                out[min(h.epochs, arrive + 1)] += signed
        if p.conflict is not None:
            # Another contentId for the same session: CONFLICT, the session quarantined from
            # the close after it is stored.
            at = max(p.start, p.conflict)  # not before the session began
            t = bucket_time(at)
            out[at].append(
                w.view(
                    sid, 0, max(t, started), content=contents[1 - p.content], started=started,
                    viewer_key=vk,
                )
            )  # fmt: skip
    return out


def _dataset(closed: Any) -> tuple[str, bytes, dict[str, bytes]]:
    files = {}
    for f in closed.manifest_obj["files"]:
        ext = "json" if f["name"] == dataset.TREE else "ndjson"
        files[f["name"]] = (closed.directory / f"{f['sha256']}.{ext}").read_bytes()
    return closed.root, closed.manifest, files


def wipe(store: Any) -> None:
    reset(store)

    def fn(cur: Any) -> None:
        for table in EPOCH_TABLES:
            cur.execute(f"DELETE FROM {table}")

    store._run(fn)


def run(store: Any, w: World, h: History, data_dir: str, touched_only: bool, export: str) -> Any:
    """Ingest `h` batch by batch and close every epoch: (verdicts, each epoch's dataset)."""
    from storekit import settings

    wipe(store)
    w.register(store)
    s = settings(
        emission=10**18 + 7,
        segment_seconds=SEG,
        max_watch_seconds_per_epoch=40,
        data_dir=data_dir,
    )
    got, published = [], []
    with close_reads(touched_only):
        for e, receipts in batches(w, h).items():
            if receipts:
                result = service.Ingestor(store, s).ingest(wire(*receipts), cutoff(e) - 1)
                got.append([i.reason or i.verdict for i in result.items])
            published.append(_dataset(close_epoch(store, s, e, now=cutoff(e), export=export)))
    return got, published


# Variants: (backend, reads only the touched sessions, big files by a thread).
VARIANTS = [(b, t, False) for b in BACKENDS for t in (True, False)] + [("sqlite", True, True)]

# Watched 20 s past 1 delivered segment in epoch 1, then nothing until another session's
# receipts in epoch 3: a close reading every session included it again in version 1.
PAST_DELIVERIES = History(
    3,
    (
        SessionPlan(0, 0, (0,), 1, (Update(0, (1, 0), 24, 0, False),), None),
        SessionPlan(1, 1, (1,), 3, (Update(0, (2, 0), 4, 0, False),), None),
    ),
)


@settings_(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(h=histories())
@example(h=PAST_DELIVERIES)
def test_every_read_strategy_publishes_the_same_dataset(stores, tmp_path_factory, h):
    if not pg_reachable():
        from storekit import require_pg

        require_pg()  # skips, or fails on CI
    w = World()
    results = {}
    for backend, touched_only, thread in VARIANTS:
        store = stores(backend)
        export = publish.THREAD if thread else publish.FORK
        data_dir = str(tmp_path_factory.mktemp("repro"))
        results[(backend, touched_only, thread)] = run(store, w, h, data_dir, touched_only, export)
    (got, published), *others = results.values()
    allowed = {"accepted", "duplicate", "stale", "CONFLICT"}
    assert {v for batch in got for v in batch} <= allowed, got
    for variant, other in zip(list(results)[1:], others, strict=True):
        assert other[0] == got, variant
        for e, (mine, theirs) in enumerate(zip(published, other[1], strict=True), 1):
            assert theirs[1] == mine[1], f"epoch {e}: manifest of {variant} differs"
            assert theirs == mine, f"epoch {e}: dataset of {variant} differs"

"""The epoch close (PROTOCOL 4-6), its one owner: `close_epoch`.

It runs in one transaction: it reads its inputs through `adapters.db.close_io` (the columns)
and `EpochStore`, credits every key column-wise (`domain.credit`), splits the pools
(`rewards.settle_weights`), builds the Merkle tree, writes the dataset through
`adapters.files` (formats: `domain.dataset`) and the epoch's rows. Everything it publishes
is a function of what it read: same inputs, same bytes. The speed work (threads, forked
export children, gc off) is choreographed here, each piece with its reason.
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import orjson

from settlement import faults
from settlement.adapters import files as publish
from settlement.adapters.db import close_io
from settlement.adapters.db.close_io import SetClose, Tables
from settlement.adapters.db.epochs import EpochStore, StoredEpoch
from settlement.adapters.db.store import Store
from settlement.config import Settings
from settlement.domain import credit, dataset, dataset_columns, merkle
from settlement.domain.columns import Cols
from settlement.domain.credit import CloseCredit, CreditWeights, Rows
from settlement.domain.epochs import EpochClock
from settlement.domain.floor import leaves_under_floor
from settlement.domain.rewards import (
    CLASSES,
    ClassAmounts,
    EpochRewards,
    EpochWeights,
    RewardParams,
    settle_weights,
)
from settlement.errors import ConfigError, InputError, SettlementError


class EpochNotDue(SettlementError):
    """The epoch cannot close yet: its cutoff has not passed or the one before is open."""

    exit_code = 1
    http_status = 409


def clock_of(settings: Settings) -> EpochClock:
    return EpochClock.from_settings(settings)


def params_of(settings: Settings) -> RewardParams:
    try:
        return RewardParams(
            emission=settings.emission,
            bps_node=settings.bps_node,
            bps_viewer=settings.bps_viewer,
            segment_seconds=settings.segment_seconds,
            max_bytes_per_viewer=settings.max_bytes_per_viewer,
            max_watch_seconds_per_epoch=settings.max_watch_seconds_per_epoch,
        )
    except ValueError as error:
        raise ConfigError(f"invalid reward settings: {error}") from None


def published_parameters(settings: Settings) -> dict[str, Any]:
    """Every setting that affects rewards (PROTOCOL 6), as the manifest publishes them.

    The receipt checks' settings are in: they decide which receipts were accepted.
    """
    return {
        "chainId": settings.chain_id,
        "distributor": settings.distributor.lower(),
        "genesis": settings.genesis,
        "epochSeconds": settings.epoch_seconds,
        "graceSeconds": settings.grace_seconds,
        "clockSkew": settings.clock_skew,
        "maxAge": settings.max_age,
        "maxSessionAge": settings.max_session_age,
        "segmentSeconds": settings.segment_seconds,
        "maxBitrate": settings.max_bitrate,
        "maxLeadSeconds": settings.max_lead_seconds,
        "minSegmentBytes": settings.min_segment_bytes,
        "emission": settings.emission,
        "bpsNode": settings.bps_node,
        "bpsViewer": settings.bps_viewer,
        "maxBytesPerViewer": settings.max_bytes_per_viewer,
        "maxWatchSecondsPerEpoch": settings.max_watch_seconds_per_epoch,
        "viewerAllowlist": settings.viewer_allowlist,
    }


@dataclass(frozen=True, slots=True)
class ClosedEpoch:
    epoch: int
    root: str  # 0x hex; ZERO_ROOT when no balance is positive
    data_hash: str  # keccak256 of the manifest bytes
    manifest: bytes
    proposes: bool  # False: no balance changed, nothing to propose
    cumulative_total: int
    directory: Path
    already_closed: bool  # True: this call found it closed and returned the stored result
    stage_s: dict[str, float] = field(default_factory=dict)

    @property
    def manifest_obj(self) -> dict[str, Any]:
        obj: dict[str, Any] = orjson.loads(self.manifest)
        return obj


def closed_epoch(
    stored: StoredEpoch, data_dir: str, already: bool, stages: dict[str, float]
) -> ClosedEpoch:
    return ClosedEpoch(
        epoch=stored.epoch,
        root="0x" + stored.root.hex(),
        data_hash="0x" + stored.data_hash.hex(),
        manifest=stored.manifest,
        proposes=stored.proposes,
        cumulative_total=stored.cumulative_total,
        directory=publish.epoch_dir(data_dir, stored.epoch),
        already_closed=already,
        stage_s=stages,
    )


def _ensure_manifest_file(closed: ClosedEpoch) -> None:
    """A crash between commit and the manifest's rename leaves the file missing: put it back."""
    publish.ensure_file(closed.directory / dataset.MANIFEST, closed.manifest)


def close_epoch(
    store: Store,
    settings: Settings,
    epoch: int | None = None,
    *,
    now: int,
    wait_for_lock: bool = True,
    export: str | None = None,
) -> ClosedEpoch | None:
    """Close `epoch` (default: the one after the last closed) as PROTOCOL 4-6 say.

    Closing a closed epoch returns its stored result. Raises EpochNotDue before its cutoff
    or while the epoch before is open. With wait_for_lock=False, returns None at once when
    another instance holds the close lock (the scheduler's way). `export`: how the big
    files are written, `publish.FORK` or `publish.THREAD` (default: fork where the platform
    has it).
    """
    clock = clock_of(settings)
    params = params_of(settings)
    epochs = EpochStore(store)
    stages: dict[str, float] = {}
    with (
        epochs.connection(for_close=True) as conn,
        epochs.close_lock(conn, wait=wait_for_lock) as got,
    ):
        if not got:
            return None
        t0 = time.perf_counter()
        with epochs.transaction(conn, write=False) as cur:
            last = epochs.last_closed(cur)
            target = last + 1 if epoch is None else epoch
            stored = epochs.get(target, cur) if target >= 1 else None
        if target < 1:
            raise InputError(f"epochs are numbered from 1, got {target}")
        if stored is not None:
            closed = closed_epoch(stored, settings.data_dir, True, stages)
            _ensure_manifest_file(closed)
            return closed
        if target > last + 1:
            raise EpochNotDue(f"epoch {target} cannot close before epoch {last + 1} is closed")
        cutoff = clock.cutoff(target)
        if now < cutoff:
            raise EpochNotDue(
                f"epoch {target} closes at its cutoff {cutoff} (now {now}): {cutoff - now} s to go"
            )
        stages["lock_s"] = time.perf_counter() - t0
        faults.point("close.begin")

        directory = publish.epoch_dir(settings.data_dir, target)
        writer = publish.DatasetWriter(directory)
        result: StoredEpoch | None = None
        try:
            # One transaction: the snapshot every input is read from, and every write. On
            # SQLite it holds the write lock throughout (ingest waits); on PostgreSQL it is
            # REPEATABLE READ and other instances wait on the advisory lock instead.
            with epochs.transaction(conn, write=True, snapshot=True) as cur:
                stored = epochs.get(target, cur)
                if stored is None:
                    if epochs.last_closed(cur) != target - 1:
                        raise EpochNotDue(f"epoch {target - 1} is not closed any more")
                    close_io.begin_close(epochs, cur)
                    prev = epochs.get(target - 1, cur) if target > 1 else None
                    with _no_cycle_collection():
                        result = _compute(
                            epochs,
                            cur,
                            writer,
                            settings,
                            clock,
                            params,
                            target,
                            prev,
                            now,
                            stages,
                            export or publish.default_export(),
                        )
                faults.point("close.commit")
                t = time.perf_counter()
            if result is not None:
                stages["commit_s"] = time.perf_counter() - t
        except BaseException:
            writer.abort()
            raise
        if result is None:
            assert stored is not None
            closed = closed_epoch(stored, settings.data_dir, True, stages)
        else:
            closed = closed_epoch(result, settings.data_dir, False, stages)
        faults.point("close.committed")
        t = time.perf_counter()
        _ensure_manifest_file(closed)  # last: the dataset is complete once it is there
        stages["manifest_s"] = time.perf_counter() - t
        faults.point("close.done")
        return closed


def _compute(
    epochs: EpochStore,
    cur: Any,
    writer: publish.DatasetWriter,
    settings: Settings,
    clock: EpochClock,
    params: RewardParams,
    epoch: int,
    prev: StoredEpoch | None,
    now: int,
    stages: dict[str, float],
    export: str,
) -> StoredEpoch:
    """Everything of one close inside its transaction: reads, rewards, files, writes."""
    reader = epochs.reader(cur)
    t = time.perf_counter()
    nodes, content, viewers = reader.registry()
    prev_by_class = reader.balances(epoch)
    quarantined = reader.quarantine(now)
    floor = epochs.floor(cur)  # the floor in force when the close starts (PROTOCOL 6)
    prev_manifest = epochs.last_manifest(epoch - 1, cur)
    stages["snapshot_s"] = time.perf_counter() - t

    t = time.perf_counter()
    seg = params.segment_seconds
    sc = SetClose(epochs, cur, epoch, lambda tables: _credit(tables, now=now, segment_seconds=seg))
    sc.build()
    stages["credit_s"] = time.perf_counter() - t
    stages.update({f"credit.{k}_s": v for k, v in sc.timings.items()})

    # From here the credit is in memory. Two child processes (forked: they share the
    # columns without copying them) format and write the big files (`_big_files`, run by
    # `publish.ExportWorkers`; a thread instead with export=THREAD); a thread
    # writes the watermarks, then the allocation and balance rows (on PostgreSQL the
    # server's work, the cursor held until joined); this thread sums the weights,
    # allocates, builds the tree and writes the small files. Threads alone would not do:
    # the export and the rewards both need the GIL for much of their work. SQLite writes
    # here, on this thread (its connection stays on it).
    pg = epochs.dialect == "postgresql"
    credited = sc.credit
    assert credited is not None
    workers = publish.ExportWorkers.start(
        writer, _EXPORT_GROUPS, lambda w, names: _big_files(credited, w, names), export
    )
    if workers.forked:
        # The children have their copy-on-write view of the columns: here they would only
        # take room (once freed here, their pages are the children's alone).
        credited.drop_published()
    rows: Future[float] | None = None
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="close") as pool:
        marks = pool.submit(_timed, sc.write_watermarks) if pg else None
        try:
            if not pg:
                stages["watermarks_s"] = _timed(sc.write_watermarks)
            t = time.perf_counter()
            totals = _weights(
                credited,
                params.max_bytes_per_viewer,
                params.max_watch_seconds_per_epoch,
                dict(content),
            )
            stages["totals_s"] = time.perf_counter() - t
            t = time.perf_counter()
            rewards, allocations, balance_rows = _settle(
                totals, content, prev, prev_by_class, params
            )
            stages["allocate_s"] = time.perf_counter() - t

            t = time.perf_counter()
            leaves = leaves_under_floor(rewards.balances, floor.leaves)
            tree = merkle.tree_for_balances(leaves)
            root = merkle.root_of(tree)
            cumulative_total = sum(leaves.values())
            if tree is not None:
                dump = writer.sink(dataset.TREE, "json")
                dump.write_raw(tree.dump_json(), len(tree))
            stages["tree_s"] = time.perf_counter() - t

            t = time.perf_counter()
            prepared = close_io.prepare_rows(epochs, epoch, allocations, balance_rows)
            # The allocation and balance rows go in on the cursor's thread after the
            # watermarks, while the small files are written here.
            rows = (
                pool.submit(_timed, lambda: close_io.write_rows(epochs, cur, prepared))
                if pg
                else None
            )
            _small_files(writer, nodes, content, viewers, quarantined, allocations)
            stages["small_files_s"] = time.perf_counter() - t
            t = time.perf_counter()
            stages["export_s"] = workers.join()
            stages["export_wait_s"] = time.perf_counter() - t
            t = time.perf_counter()
            files = writer.finish_all()
            stages["files_s"] = time.perf_counter() - t

            manifest = dataset.manifest_bytes(
                epoch=epoch,
                start=clock.start(epoch),
                end=clock.end(epoch),
                cutoff=clock.cutoff(epoch),
                parameters=published_parameters(settings),
                pools=_pools(rewards),
                root=root,
                cumulative_total=cumulative_total,
                floor="0x" + floor.data_hash.hex(),
                prev_manifest_hash=(
                    "0x" + dataset.data_hash(prev_manifest).hex()
                    if prev_manifest is not None
                    else dataset.ZERO_HASH
                ),
                files=files,
            )
            stored = StoredEpoch(
                epoch=epoch,
                close_started=now,
                root=bytes.fromhex(root[2:]),
                data_hash=dataset.data_hash(manifest),
                cumulative_total=cumulative_total,
                # PROTOCOL 5: an epoch whose tree equals the one before proposes nothing.
                proposes=tree is not None and (prev is None or prev.root.hex() != root[2:]),
                carried=rewards.pools.carried_out,
                manifest=manifest,
                floor=floor.data_hash,
            )
            if marks is not None and rows is not None:
                t = time.perf_counter()
                stages["watermarks_s"] = marks.result()  # re-raises the watermarks' error
                stages["rows_s"] = rows.result()
                stages["db_wait_s"] = time.perf_counter() - t
        except BaseException:
            # Neither may go on using the cursor or the files.
            workers.abort()
            wait([f for f in (marks, rows) if f is not None])
            raise
    t = time.perf_counter()
    if not pg:
        close_io.write_rows(epochs, cur, prepared)
    epochs.write_epoch(cur, stored)
    sc.drop()
    stages["db_write_s"] = time.perf_counter() - t
    return stored


def _settle(
    totals: Any,
    content: list[tuple[bytes, bytes]],
    prev: StoredEpoch | None,
    prev_by_class: dict[bytes, tuple[int, int, int]],
    params: RewardParams,
) -> tuple[EpochRewards, list[tuple[bytes, str, int]], list[tuple[bytes, int, int, int]]]:
    """Caps, pools and allocation (rewards.settle_weights); the allocation and balance rows."""
    carried_in = prev.carried if prev is not None else ClassAmounts()
    previous_totals = {a: n + v + c for a, (n, v, c) in prev_by_class.items()}
    rewards = settle_weights(
        EpochWeights(
            node=totals.node,
            viewer=totals.viewer,
            creator=totals.creator,
            capped_bytes=totals.capped_bytes,
            capped_watch=totals.capped_watch,
        ),
        dict(content),
        previous_totals,
        carried_in,
        params,
    )
    allocations = sorted(
        (a, cls, amount) for cls in CLASSES for a, amount in rewards.allocations[cls].items()
    )
    changed: dict[bytes, list[int]] = {}
    for a, cls, amount in allocations:
        row = changed.get(a)
        if row is None:
            row = changed[a] = list(prev_by_class.get(a, (0, 0, 0)))
        row[CLASSES.index(cls)] += amount
    balance_rows = sorted((a, n, v, c) for a, (n, v, c) in changed.items())
    return rewards, allocations, balance_rows


@contextlib.contextmanager
def _no_cycle_collection() -> Iterator[None]:
    """The cyclic garbage collector off for a close: it makes a million small objects (rows,
    dicts of accounts) and none in cycles, and each collection would walk them all (about
    a quarter of a second at a million sessions)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _credit(tables: Tables, *, now: int, segment_seconds: int) -> CloseCredit:
    """`domain.credit.credit_epoch`'s steps as the tables arrive (each a function waiting for
    its read): the sessions, the delivery side and the view side each in a thread of their
    own (numpy sorts and searches without the GIL) while the other tables are still read."""
    with ThreadPoolExecutor(max_workers=3, thread_name_prefix="credit") as pool:
        live = pool.submit(lambda: credit.live_sessions(tables["sessions"](), now))

        def delivery_side() -> tuple[Any, ...]:
            deliveries = tables["deliveries"]()
            keyed = credit.delivery_keys(deliveries, tables["delivery_marks"]())
            return credit.delivery_candidates(keyed, deliveries, live.result()[1])

        def view_side() -> tuple[Any, ...]:
            views = tables["views"]()
            keyed = credit.view_keys(views, tables["view_marks"]())
            return credit.view_candidates(keyed, views, live.result()[1])

        d_side = pool.submit(delivery_side)
        v_side = pool.submit(view_side)
        sessions = live.result()
        deliveries = d_side.result()
        views = v_side.result()
    return credit.assemble(
        tables["deliveries"](),
        tables["views"](),
        tables["sessions"](),
        sessions,
        deliveries,
        views,
        segment_seconds,
    )


def _weights(
    c: CloseCredit, max_bytes_per_viewer: int, max_watch_seconds: int, creators: dict[bytes, bytes]
) -> CreditWeights:
    """`CloseCredit.weights`, its two sides in two threads: numpy sorts and gathers without
    the GIL."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="weights") as pool:
        byte_side = pool.submit(c.byte_weights, max_bytes_per_viewer)
        viewer, creator, capped_watch = c.watch_weights(max_watch_seconds, creators)
        node, capped_bytes = byte_side.result()
    return CreditWeights(node, viewer, creator, capped_bytes, capped_watch)


# The big files, written next to the rewards by `publish.ExportWorkers`: forked children
# (they share the columns without copying them, and run numpy, hashlib and file writes
# only), or a thread where the platform has no fork. Two halves of about the same work: the
# delivery receipts are the most bytes, about as many as the other three files together,
# now that every session with an included key has its previous marks published, zeros
# included (a first epoch of a million new sessions, one child each: 3.3 s and 1.9 + 1.0 +
# 0.4 s; the marks split over both children left one at 3.7 s). Once the rewards are done,
# the two children have both cores.
_EXPORT_GROUPS: Final = (
    (dataset.DELIVERY_RECEIPTS,),
    (dataset.VIEW_RECEIPTS, dataset.DELIVERY_WATERMARKS, dataset.VIEW_WATERMARKS),
)

# Rows gathered at a time by the big files' writer (formatted in smaller chunks).
_CHUNK: Final = 65_536


def _big_files(c: CloseCredit, writer: publish.DatasetWriter, names: tuple[str, ...]) -> None:
    """Included receipts and previous watermarks, in key order, formatted column-wise a
    chunk of rows at a time (their stored columns are gathered per chunk, not all at once);
    each file finished as soon as it is complete."""

    def deliveries(d: Cols) -> Iterator[bytes]:
        return dataset_columns.delivery_lines(
            d["viewer"], d["session_id"], d["node"], d["content_id"], d["started_at"],
            d["bytes_served"], d["segments"], d["issued_at"], d["signature"], d["bucket"],
        )  # fmt: skip

    def views(v: Cols) -> Iterator[bytes]:
        return dataset_columns.view_lines(
            v["viewer"], v["session_id"], v["content_id"], v["started_at"],
            v["watch_seconds"], v["issued_at"], v["signature"], v["bucket"],
        )  # fmt: skip

    def delivery_marks(m: Cols) -> Iterator[bytes]:
        return dataset_columns.delivery_mark_lines(
            m["viewer"], m["session_id"], m["node"], m["bytes_served"], m["segments"]
        )

    def view_marks(w: Cols) -> Iterator[bytes]:
        return dataset_columns.view_mark_lines(
            w["viewer"], w["session_id"], w["watch_seconds"], w["credited"]
        )

    files: tuple[tuple[str, Callable[[], Rows], Callable[[Cols], Iterator[bytes]]], ...] = (
        (dataset.DELIVERY_RECEIPTS, c.published_deliveries, deliveries),
        (dataset.VIEW_RECEIPTS, c.published_views, views),
        (dataset.DELIVERY_WATERMARKS, c.published_delivery_marks, delivery_marks),
        (dataset.VIEW_WATERMARKS, c.published_view_marks, view_marks),
    )
    for name, rows, lines in files:
        if name not in names:
            continue
        sink = writer.sink(name, direct=True)
        for part in rows().chunks(_CHUNK):
            for data in lines(part):
                sink.write_raw(data, data.count(b"\n"))
        writer.finish(name)


def _pools(rewards: EpochRewards) -> dict[str, dict[str, int]]:
    p = rewards.pools
    return {
        cls: {
            "emitted": p.emitted.get(cls),
            "carriedIn": p.carried_in.get(cls),
            "allocated": p.allocated.get(cls),
            "carriedOut": p.carried_out.get(cls),
        }
        for cls in CLASSES
    }


def _small_files(
    writer: publish.DatasetWriter,
    nodes: list[tuple[bytes, str, bool]],
    content: list[tuple[bytes, bytes]],
    viewers: list[bytes],
    quarantined: list[tuple[Any, ...]],
    allocations: list[tuple[bytes, str, int]],
) -> None:
    line = dataset.canonical_line
    writer.sink(dataset.REGISTRY_NODES).add_many(
        dataset.node_line(a, label, active) for a, label, active in nodes
    )
    writer.sink(dataset.REGISTRY_CONTENT).add_many(dataset.content_line(c, k) for c, k in content)
    writer.sink(dataset.REGISTRY_VIEWERS).add_many(dataset.viewer_line(a) for a in viewers)
    writer.sink(dataset.QUARANTINE).add_many(
        line(
            {
                "viewer": v,
                "sessionId": s,
                "storedAt": at,
                "detail": detail,
                "evidenceStored": dataset.wire_evidence(
                    None if stored is None else orjson.loads(stored)
                ),
                "evidenceReceived": dataset.wire_evidence(orjson.loads(received)),
            }
        )
        for v, s, at, detail, stored, received in quarantined
    )
    writer.sink(dataset.ALLOCATIONS).add_many(
        dataset.allocation_line(a, cls, amount) for a, cls, amount in allocations
    )

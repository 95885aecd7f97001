"""Epoch close at network scale: one epoch of simulator-shaped sessions, loaded into the store,
then closed (rewards, tree, dataset files, database writes) in a fresh process; then the next
epoch, with a tenth as many new sessions while the first epoch's are all still live.

Usage: scripts/bench settle [--quick] [--store postgres|sqlite] [--sessions N] [--epochs N]

The world (36,000 nodes, 200,000 viewers, creators and content) is the simulator's
`build_world`; sessions follow its shape (1-3 nodes, ABR-ladder bytes per segment, watch
time from the segments). Only each key's best receipt is generated and written straight
into the store's tables by its bulk path (`Store.bulk_load_best`), not through HTTP: the
close reads best receipts only, and signing the millions of receipts behind them would
take minutes, so the rows carry well-formed random 65-byte signatures (the close does not
verify signatures; ingest did). Each close runs in a child process so that its peak RSS is
its own; peak_rss_mb also counts the pages held only by the process the close forks to
write the big files (sampled every 20 ms, and never below the close's own peak RSS). Last line: one JSON object; close_s,
stage_s and peak_rss_mb are the first close's, next_close_s the second's.

A floor measured in the same run makes the figure survive a noisy machine: the same rows
read out of the store (binary COPY to nothing, `close_io.SetClose.read_floor`) plus as many
bytes as the dataset written and hashed to the same disk (`files.DatasetWriter`, O_DIRECT).
`floor_s` and `ratio_vs_floor = close_s / floor_s` are the first close's.

--epochs N: a service that has run for N hours instead. N consecutive hourly epochs, each
with --sessions new sessions (default 100,000; --quick 10,000) that span 1 to 3 epochs, with
retention on after each close, as the scheduler's tick runs it (max_session_age 2 h, max_age
1 h: a session goes 3 h after it started; balance rows a later close superseded go too).
Prints each close's time, its floor, the live sessions it closed over, its balance read
(`snapshot_s_by_epoch`) and the retention step's time and balance rows after it;
`last_close_s / first_close_s` is `ratio_last_vs_first` in the JSON line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import random
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

PG_BASE = "postgresql://postgres@127.0.0.1:5432/test"
PG_SCHEMA = os.environ.get("W2E_BENCH_SCHEMA", "w2e_bench_settle")  # one per concurrent run
GENESIS = 1_767_225_600
EPOCH = 3600
GRACE = 300
SEG = 4
LADDER = (400_000, 800_000, 1_500_000, 3_000_000, 6_000_000, 12_000_000)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --epochs: sessions live at most 2 h (max_session_age) and receipts are taken for 1 h after
# they are issued (max_age): pruning drops a session 3 h after it started.
RETENTION = {"max_session_age": 2 * EPOCH, "max_age": EPOCH}


def bench_settings(url: str, data_dir: str, retention: bool = False):
    from settlement.config import Settings

    return Settings(
        **(RETENTION if retention else {}),
        _env_file=None,
        database_url=url,
        genesis=GENESIS,
        epoch_seconds=EPOCH,
        grace_seconds=GRACE,
        segment_seconds=SEG,
        emission=1000 * 10**18,
        max_watch_seconds_per_epoch=EPOCH,
        data_dir=data_dir,
    )


def pg_url(fresh: bool) -> str:
    import psycopg

    with psycopg.connect(PG_BASE, autocommit=True) as conn:
        if fresh:
            conn.execute(f"DROP SCHEMA IF EXISTS {PG_SCHEMA} CASCADE")
            conn.execute(f"CREATE SCHEMA {PG_SCHEMA}")
    return f"{PG_BASE}?options=-csearch_path%3D{PG_SCHEMA}"


def drop_pg() -> None:
    import psycopg

    with psycopg.connect(PG_BASE, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {PG_SCHEMA} CASCADE")


def cutoff(e: int) -> int:
    return GENESIS + e * EPOCH + GRACE if e > 0 else GENESIS


def load(store, sessions: int, seed: int, epoch: int = 1) -> dict[str, int]:
    """Registries (epoch 1) and the best receipts of `sessions` sessions, all in bucket
    `epoch`: started and last issued between cutoff(epoch - 1) and cutoff(epoch)."""
    from settlement.adapters.db.tables import U64_OFFSET  # noqa: F401 - the store encodes itself
    from settlement.domain.receipts import DeliveryReceipt, ViewReceipt

    world = build(sessions, seed)
    if epoch == 1:
        store.load_registries(
            [(a, f"node-{i}", True) for i, a in enumerate(world.nodes)],
            [
                (c, world.creators[k])
                for c, k in zip(world.contents, world.content_creator, strict=True)
            ],
            [],
        )
    rng = random.Random(seed * 1_000 + epoch)
    nodes, viewers, contents = world.nodes, world.viewers, world.contents
    first, latest = cutoff(epoch - 1), cutoff(epoch) - 1  # every receipt in bucket `epoch`
    counts = {"delivery": 0, "view": 0}
    chunk = 50_000
    t = time.perf_counter()
    for first in range(0, sessions, chunk):
        receipts = []
        for _ in range(min(chunk, sessions - first)):
            viewer = viewers[rng.randrange(len(viewers))]
            content = contents[rng.randrange(len(contents))]
            sid = rng.randbytes(32)
            started = first + rng.randrange(latest + 1 - GRACE - first)
            n_segments = max(1, min(int(rng.lognormvariate(4.0, 1.0)), (latest - started) // SEG))
            seg_bytes = LADDER[rng.randrange(len(LADDER))] * SEG // 8
            n_nodes = min(n_segments, rng.choices((1, 2, 3), cum_weights=(70, 92, 100))[0])
            picked = rng.sample(range(len(nodes)), n_nodes)
            cuts = sorted(rng.sample(range(1, n_segments), n_nodes - 1)) if n_nodes > 1 else []
            bounds = [0, *cuts, n_segments]
            issued = started + n_segments * SEG
            for j, i in enumerate(picked):
                segs = bounds[j + 1] - bounds[j]
                b = segs * seg_bytes - rng.randrange(seg_bytes // 5 + 1)
                receipts.append(DeliveryReceipt(
                    sid, viewer, nodes[i], content, started, b, segs, issued, rng.randbytes(65)
                ))  # fmt: skip
            watch = n_segments * SEG - rng.randrange(SEG)
            receipts.append(
                ViewReceipt(sid, viewer, content, started, watch, issued, rng.randbytes(65))
            )
        for r in receipts:
            counts["delivery" if type(r) is DeliveryReceipt else "view"] += 1
        store.bulk_load_best(receipts, [epoch] * len(receipts))
    log(f"loaded {sessions:,} sessions: {counts['delivery']:,} delivery + {counts['view']:,} "
        f"view best rows ({time.perf_counter() - t:.1f} s, not part of the close)")  # fmt: skip
    return counts


class MemorySampler(threading.Thread):
    """The close's memory, every 20 ms: this process's resident pages plus the pages only
    its children hold (Private_* of /proc/PID/smaps_rollup). The close forks a child to
    write the big files; what it shares with this process is counted once, here."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak_mb = 0.0
        self._done = threading.Event()
        self._page = os.sysconf("SC_PAGE_SIZE")

    def run(self) -> None:
        while not self._done.wait(0.02):
            total = int(Path("/proc/self/statm").read_text().split()[1]) * self._page
            for pid in self._children():
                try:
                    rollup = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
                except OSError:
                    continue  # it has just ended
                for line in rollup:
                    if line.startswith(("Private_Clean:", "Private_Dirty:")):
                        total += int(line.split()[1]) * 1024
            self.peak_mb = max(self.peak_mb, total / 2**20)

    @staticmethod
    def _children() -> list[str]:
        pids: list[str] = []
        for task in Path("/proc/self/task").iterdir():
            with contextlib.suppress(OSError):  # the thread has just ended
                pids += (task / "children").read_text().split()
        return pids

    def stop(self) -> None:
        self._done.set()
        self.join()


def close_child(url: str, data_dir: str, epoch: int, retention: bool = False) -> None:
    """Runs in the child: one close, its timings and peak RSS as JSON on stdout."""
    from settlement.adapters.db.store import open_store
    from settlement.services.close import close_epoch

    store = open_store(url, create=False)
    settings = bench_settings(url, data_dir, retention)
    memory = MemorySampler()
    memory.start()
    t = time.perf_counter()
    closed = close_epoch(store, settings, epoch, now=cutoff(epoch))
    close_s = time.perf_counter() - t
    memory.stop()
    store.close()
    m = json.loads(closed.manifest)
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps({
        "close_s": close_s, "stage_s": closed.stage_s,
        "peak_rss_mb": max(own, memory.peak_mb), "close_rss_mb": own,
        "export_child_rss_mb": child, "root": closed.root,
        "counts": m["counts"], "pools": m["pools"], "cumulative": m["cumulativeTotal"],
        "bytes": sum(int(f["size"]) for f in m["files"]),
    }))  # fmt: skip


def vacuum(store, pg: bool) -> None:
    """What the server has done by the time a real epoch closes (its receipts arrived over an
    hour): autovacuum's statistics, and the visibility and hint bits that the first reader
    of freshly loaded rows would otherwise write; a checkpoint (every 5 minutes by default)
    and the kernel's writeback (within 30 s) of the pages written. Loaded in a minute, the
    rows would otherwise still be flushed to disk while the close runs, beside it on the
    same two cores."""
    if not pg:
        return
    with store.engine.connect() as conn:
        conn.commit()
        conn.connection.driver_connection.autocommit = True
        conn.exec_driver_sql("VACUUM (ANALYZE)")
        conn.exec_driver_sql("CHECKPOINT")
    os.sync()


def read_floor(url: str, epoch: int) -> float:
    """The floor's reads: the rows the close of `epoch` is about to read (the same choice of
    sessions, `SetClose.touched_only`), out of the store to nothing, in a snapshot
    transaction that is rolled back (the touches stay for the close). Seconds."""
    from settlement.adapters.db import close_io
    from settlement.adapters.db.epochs import EpochStore
    from settlement.adapters.db.store import open_store

    store = open_store(url, create=False)
    epochs = EpochStore(store)
    try:
        with epochs.connection(for_close=True) as conn:
            cur = conn.cursor()
            try:
                if epochs.dialect == "sqlite":
                    cur.execute("BEGIN")
                else:
                    cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                close_io.begin_close(epochs, cur)
                reads = close_io.SetClose(epochs, cur, epoch, credit=lambda tables: None)  # type: ignore[arg-type,return-value]
                touched_only = reads.touched_only()
                t = time.perf_counter()
                reads.read_floor(touched_only)
                seconds = time.perf_counter() - t
            finally:
                conn.rollback()
                cur.close()
    finally:
        store.close()
    return seconds


def write_floor(data_dir: str, nbytes: int) -> float:
    """The floor's writes: `nbytes` written and hashed to the dataset's disk as the close's
    big files are (O_DIRECT where it can, sha256, fsync, rename), then removed. Seconds."""
    from settlement.adapters import files as publish

    directory = Path(data_dir) / "floor"
    block = random.Random(0).randbytes(8 << 20)
    t = time.perf_counter()
    writer = publish.DatasetWriter(directory)
    sink = writer.sink("floor", direct=True)
    left = nbytes
    while left > 0:
        n = min(left, len(block))
        sink.write_raw(block[:n] if n < len(block) else block, 0)
        left -= n
    writer.finish_all()
    seconds = time.perf_counter() - t
    import shutil

    shutil.rmtree(directory, ignore_errors=True)
    return seconds


def close(url: str, data_dir: str, epoch: int, retention: bool = False) -> dict:
    """Close `epoch` in a fresh process (its own peak RSS), with its floor measured just
    before (reads) and after (writes); its report, logged."""
    floor_read_s = run_child("--floor-child", url, str(epoch))
    out = subprocess.run(
        [sys.executable, __file__, "--close-child", url, data_dir, str(epoch),
         *(["--retention"] if retention else [])],
        capture_output=True, text=True,
    )  # fmt: skip
    if out.stderr:
        log(out.stderr.rstrip())
    if out.returncode:
        raise SystemExit(f"the close failed (exit {out.returncode}); database kept: {url}")
    r = json.loads(out.stdout.strip().splitlines()[-1])
    log(f"epoch {epoch} published rows: {r['counts']}")
    log(f"dataset: {r['bytes'] / 1e6:.0f} MB; root {r['root']}")
    for name, s in r["stage_s"].items():
        log(f"  {name:<28} {s:7.3f} s")
    r["floor_s"] = floor_read_s + write_floor(data_dir, r["bytes"])
    log(
        f"close of epoch {epoch}: {r['close_s']:.3f} s, floor {r['floor_s']:.3f} s (reads "
        f"{floor_read_s:.3f} s), peak RSS {r['peak_rss_mb']:.0f} MB "
        f"(close {r['close_rss_mb']:.0f} + export child {r['export_child_rss_mb']:.0f})"
    )
    return r


def run_child(*args: str) -> float:
    """A floor measurement in a fresh process; its seconds."""
    out = subprocess.run(
        [sys.executable, __file__, *args], capture_output=True, text=True
    )  # fmt: skip
    if out.returncode:
        raise SystemExit(f"the floor measurement failed: {out.stderr[-2000:]}")
    return float(out.stdout.strip().splitlines()[-1])


def build(sessions: int, seed: int):
    """The simulator's world for `sessions` sessions."""
    from settlement.sim.world import SimConfig, build_world

    cfg = SimConfig(
        seed=seed, sessions=sessions, nodes=36_000, viewers=200_000, creators=2_000, contents=20_000
    )
    t = time.perf_counter()
    with multiprocessing.Pool() as pool:
        world = build_world(cfg, pool)
    log(f"world: {len(world.nodes):,} nodes, {len(world.viewers):,} viewers, "
        f"{len(world.contents):,} contents ({time.perf_counter() - t:.1f} s)")  # fmt: skip
    return world


class Spanning:
    """One session of --epochs: it starts in one epoch and runs for up to 2 h, its receipts'
    counters growing with the time it has run (each node a fixed share of the segments)."""

    __slots__ = ("content", "end", "nodes", "seg_bytes", "short", "sid", "started", "viewer")

    def __init__(self, rng: random.Random, world, epoch: int) -> None:
        self.viewer = world.viewers[rng.randrange(len(world.viewers))]
        self.content = world.contents[rng.randrange(len(world.contents))]
        self.sid = rng.randbytes(32)
        first, last = cutoff(epoch - 1), cutoff(epoch) - 1 - GRACE
        self.started = first + rng.randrange(last + 1 - first)
        span = rng.choices((1, 2, 3), cum_weights=(50, 85, 100))[0]
        lo, hi = (
            cutoff(epoch + span - 2) if span > 1 else self.started + SEG,
            cutoff(epoch + span - 1) - 1,
        )
        limit = self.started + RETENTION["max_session_age"] - 1
        self.end = min(lo + rng.randrange(max(1, hi - lo)), limit)
        picked = rng.sample(
            range(len(world.nodes)), rng.choices((1, 2, 3), cum_weights=(70, 92, 100))[0]
        )
        self.nodes = [(world.nodes[i], rng.randrange(1, 4)) for i in picked]  # (address, weight)
        self.seg_bytes = LADDER[rng.randrange(len(LADDER))] * SEG // 8
        self.short = (rng.randrange(self.seg_bytes // 5 + 1), rng.randrange(SEG))

    def receipts(self, epoch: int) -> list:
        """Its best receipts of bucket `epoch` (empty once it ended before the epoch began)."""
        from settlement.domain.receipts import DeliveryReceipt, ViewReceipt

        if self.end < cutoff(epoch - 1):
            return []
        issued = min(self.end, cutoff(epoch) - 1)
        segments = max(1, (issued - self.started) // SEG)
        weights = sum(w for _, w in self.nodes)
        out = []
        for node, w in self.nodes:
            segs = segments * w // weights
            if segs:
                out.append(DeliveryReceipt(
                    self.sid, self.viewer, node, self.content, self.started,
                    segs * self.seg_bytes - self.short[0], segs, issued, random.randbytes(65),
                ))  # fmt: skip
        watch = max(1, segments * SEG - self.short[1])
        out.append(ViewReceipt(
            self.sid, self.viewer, self.content, self.started, watch, issued, random.randbytes(65)
        ))  # fmt: skip
        return out


def count(store, table: str) -> int:
    with store.engine.connect() as conn:
        return int(conn.exec_driver_sql(f"SELECT COUNT(*) FROM {table}").scalar_one())


LOAD_CHUNK = 20_000


def run_epochs(args, store, url: str, data_dir: str, pg: bool) -> dict:
    """--epochs: N hourly closes of spanning sessions with retention pruning after each."""
    from settlement.services.ingest import compact_balances, prune_sessions

    per_epoch = args.sessions or (10_000 if args.quick else 100_000)
    world = build(per_epoch, args.seed)
    store.load_registries(
        [(a, f"node-{i}", True) for i, a in enumerate(world.nodes)],
        [
            (c, world.creators[k])
            for c, k in zip(world.contents, world.content_creator, strict=True)
        ],
        [],
    )
    rng = random.Random(args.seed)
    random.seed(args.seed)  # the signatures
    settings = bench_settings(url, data_dir, retention=True)
    live: list[Spanning] = []
    runs: list[dict] = []
    for e in range(1, args.epochs + 1):
        live = [s for s in live if s.end >= cutoff(e - 1)]
        live += [Spanning(rng, world, e) for _ in range(per_epoch)]
        receipts = [r for s in live for r in s.receipts(e)]
        # In transactions of LOAD_CHUNK receipts: one pipelined transaction of a few hundred
        # thousand upserts left psycopg waiting in commit while the server waited for the
        # rest of the statement (seen at epoch 2, 100,000 sessions an epoch).
        for i in range(0, len(receipts), LOAD_CHUNK):
            chunk = receipts[i : i + LOAD_CHUNK]
            store.bulk_load_best(chunk, [e] * len(chunk))
        vacuum(store, pg)
        sessions = count(store, "receipt_session")
        marks = count(store, "delivery_watermark") + count(store, "view_watermark")
        log(f"epoch {e}: {len(live):,} sessions with receipts in it, {sessions:,} live in the "
            f"store, {marks:,} watermark rows")  # fmt: skip
        r = close(url, data_dir, e, retention=True)
        r.update(live_sessions=sessions, watermark_rows=marks)
        runs.append(r)
        # Retention as the scheduler's tick runs it after a close, timed apart from it.
        t = time.perf_counter()
        pruned = prune_sessions(store, settings, cutoff(e), e)
        compacted = compact_balances(store, e)
        r["retention_s"] = time.perf_counter() - t
        r["balance_rows"] = count(store, "balance")
        r["balance_accounts"] = count(store, "(SELECT DISTINCT account FROM balance) AS a")
        log(f"pruned {pruned:,} sessions and {compacted:,} superseded balance rows after the "
            f"close of epoch {e} in {r['retention_s']:.2f} s")  # fmt: skip
    first, last = runs[0], runs[-1]
    return {
        "bench": "settle", "store": "postgresql" if pg else "sqlite",
        "sessions": per_epoch, "epochs": args.epochs,
        "close_s": round(first["close_s"], 3),
        "stage_s": {k: round(v, 3) for k, v in first["stage_s"].items()},
        "peak_rss_mb": round(max(r["peak_rss_mb"] for r in runs)),
        "floor_s": round(first["floor_s"], 3),
        "ratio_vs_floor": round(first["close_s"] / first["floor_s"], 3),
        "next_close_s": round(runs[1]["close_s"], 3) if len(runs) > 1 else None,
        "close_s_by_epoch": [round(r["close_s"], 3) for r in runs],
        "floor_s_by_epoch": [round(r["floor_s"], 3) for r in runs],
        "live_sessions_by_epoch": [r["live_sessions"] for r in runs],
        "watermark_rows_by_epoch": [r["watermark_rows"] for r in runs],
        "snapshot_s_by_epoch": [round(r["stage_s"]["snapshot_s"], 3) for r in runs],
        "retention_s_by_epoch": [round(r["retention_s"], 3) for r in runs],
        "balance_rows_by_epoch": [r["balance_rows"] for r in runs],
        "balance_accounts_by_epoch": [r["balance_accounts"] for r in runs],
        "first_close_s": round(first["close_s"], 3),
        "last_close_s": round(last["close_s"], 3),
        "ratio_last_vs_first": round(last["close_s"] / first["close_s"], 3),
        "last_ratio_vs_floor": round(last["close_s"] / last["floor_s"], 3),
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="100,000 sessions instead of 1,000,000")
    ap.add_argument("--store", choices=("postgres", "sqlite"), default="postgres")
    ap.add_argument(
        "--sessions",
        type=int,
        default=None,
        help="sessions of the first epoch (with --epochs: new sessions an epoch)",
    )
    ap.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="close this many consecutive hourly epochs of spanning sessions, "
        "with retention pruning on",
    )
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--keep", action="store_true", help="keep the database and dataset")
    ap.add_argument(
        "--close-child", nargs=3, metavar=("URL", "DATA_DIR", "EPOCH"), help=argparse.SUPPRESS
    )
    ap.add_argument("--retention", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--floor-child", nargs=2, metavar=("URL", "EPOCH"), help=argparse.SUPPRESS)
    args = ap.parse_args()  # fmt: skip
    if args.close_child:
        url, data_dir, epoch = args.close_child
        close_child(url, data_dir, int(epoch), args.retention)
        return
    if args.floor_child:
        url, epoch = args.floor_child
        print(read_floor(url, int(epoch)))
        return
    if args.epochs is not None and args.epochs < 1:
        ap.error("--epochs must be at least 1")
    sessions = args.sessions or (100_000 if args.quick else 1_000_000)
    next_sessions = sessions // 10
    from settlement.adapters.db.store import open_store

    log(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    tmp = tempfile.mkdtemp(prefix="bench-settle-")
    pg = args.store == "postgres"
    url = pg_url(fresh=True) if pg else f"sqlite:///{tmp}/store.db"
    data_dir = str(Path(tmp) / "epochs")
    store = open_store(url, sqlite_synchronous="NORMAL")
    result: dict
    try:
        if args.epochs is not None:
            result = run_epochs(args, store, url, data_dir, pg)
        else:
            counts = load(store, sessions, args.seed)
            vacuum(store, pg)
            log(f"rows: {counts['delivery']:,} delivery + {counts['view']:,} view best receipts")
            r = close(url, data_dir, 1)
            emitted = sum(int(p["emitted"]) for p in r["pools"].values())
            assert int(r["cumulative"]) == emitted, (
                "conservation: a one-epoch close pays its emission"
            )
            # The next epoch: a tenth as many new sessions while every session of epoch 1 is
            # still live (receipts are taken for days). Its close reads the sessions touched
            # since.
            load(store, next_sessions, args.seed, epoch=2)
            vacuum(store, pg)
            r2 = close(url, data_dir, 2)
            assert int(r2["cumulative"]) == 2 * emitted, "conservation over two epochs"
            result = {
                "bench": "settle", "store": "postgresql" if pg else "sqlite",
                "sessions": sessions, "close_s": round(r["close_s"], 3),
                "stage_s": {k: round(v, 3) for k, v in r["stage_s"].items()},
                "peak_rss_mb": round(r["peak_rss_mb"]),
                "next_sessions": next_sessions, "next_live_sessions": sessions + next_sessions,
                "next_close_s": round(r2["close_s"], 3),
                "floor_s": round(r["floor_s"], 3),
                "ratio_vs_floor": round(r["close_s"] / r["floor_s"], 3),
            }  # fmt: skip
    finally:
        store.close()
    log(f"load average at end: {os.getloadavg()[0]:.1f}")
    if not args.keep:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        if pg:
            drop_pg()
    else:
        log(f"kept: {url} and {data_dir}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()

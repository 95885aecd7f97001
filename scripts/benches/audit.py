"""Independent audit at network scale: a 1,000,000-session epoch whose receipts carry real
signatures, closed by the service, then audited from its published files alone.

Usage: scripts/bench audit [--quick] [--store postgres|sqlite] [--sessions N] [--keep]

Sessions have the settle bench's shape (its world: 36,000 nodes, 200,000 viewers; 1-3
nodes a session, ABR-ladder bytes per segment); every best receipt is signed by its
viewer's key under the bench chain's EIP-712 domain. Signing millions of receipts takes
minutes, so they are generated once and cached under .bench-cache/ (fixed-width binary
records, keyed by sessions, seed and domain); the log says how long generation took.

Then, in one run: the receipts go into the store by its bulk path (as the settle bench
loads them), the service closes the epoch in a fresh process (`close_s`), the same
receipts are verified at the verifier's all-core rate (`parallel.verify_batch`, `verify_s`),
and a fresh process audits the published dataset with the auditor and nothing else
(`audit_s`, `peak_rss_mb`: its own peak plus pages only its children hold). The floor is
what an audit cannot avoid: the close once, plus every signature verified.
Last line: {"bench": "audit", "sessions", "receipts", "audit_s", "close_s", "verify_s",
"ratio_vs_floor", "peak_rss_mb"} with ratio_vs_floor = audit_s / (close_s + verify_s).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import random
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import settle  # noqa: E402 - the settle bench's world, settings, close child and sampler

CACHE = ROOT / ".bench-cache" / "audit"
FORMAT = 1  # bump when the records or the session shape change: old caches are ignored
CHAIN_ID = 31337
# The EIP-712 verifyingContract of the bench's receipts (no chain: the dataset is audited
# against its own manifest; the bench settings name this distributor).
DISTRIBUTOR = bytes.fromhex("5fbdb2315678afecb367f032d93f642f64180aa3")
DELIVERY = struct.Struct(">32s20s20s32sQQIQ65s")
VIEW = struct.Struct(">32s20s32sQIQ65s")
CHUNK = 20_000  # sessions per generation task and per load into the store
log = settle.log


# --- generation (cached) ---------------------------------------------------------------------

_world = None  # the generation workers' world, inherited through fork


def _sessions(task: tuple[int, int, int]) -> tuple[bytes, bytes, int, int]:
    """Sessions [first, first + n) of seed `seed`, signed: packed delivery and view records.
    Each task seeds its own generator, so the output does not depend on the workers."""
    from settlement.domain.receipts import DeliveryReceipt, Domain, ViewReceipt, sign

    seed, first, n = task
    world = _world
    assert world is not None
    domain = Domain(CHAIN_ID, DISTRIBUTOR)
    rng = random.Random(f"w2e-bench-audit/{seed}/{first}")
    lo, latest = settle.cutoff(0), settle.cutoff(1) - 1  # every receipt in bucket 1
    ladder, seg, grace = settle.LADDER, settle.SEG, settle.GRACE
    nodes, viewers, secrets = world.nodes, world.viewers, world.viewer_secrets
    contents = world.contents
    deliveries, views = bytearray(), bytearray()
    nd = nv = 0
    for _ in range(n):
        v = rng.randrange(len(viewers))
        viewer, key = viewers[v], secrets[v]
        content = contents[rng.randrange(len(contents))]
        sid = rng.randbytes(32)
        started = lo + rng.randrange(latest + 1 - grace - lo)
        n_segments = max(1, min(int(rng.lognormvariate(4.0, 1.0)), (latest - started) // seg))
        seg_bytes = ladder[rng.randrange(len(ladder))] * seg // 8
        n_nodes = min(n_segments, rng.choices((1, 2, 3), cum_weights=(70, 92, 100))[0])
        picked = rng.sample(range(len(nodes)), n_nodes)
        cuts = sorted(rng.sample(range(1, n_segments), n_nodes - 1)) if n_nodes > 1 else []
        bounds = [0, *cuts, n_segments]
        issued = started + n_segments * seg
        for j, i in enumerate(picked):
            segs = bounds[j + 1] - bounds[j]
            b = segs * seg_bytes - rng.randrange(seg_bytes // 5 + 1)
            r = sign(
                DeliveryReceipt(sid, viewer, nodes[i], content, started, b, segs, issued),
                domain,
                key,
            )
            deliveries += DELIVERY.pack(
                sid, viewer, nodes[i], content, started, b, segs, issued, r.signature
            )
            nd += 1
        watch = n_segments * seg - rng.randrange(seg)
        r = sign(ViewReceipt(sid, viewer, content, started, watch, issued), domain, key)
        views += VIEW.pack(sid, viewer, content, started, watch, issued, r.signature)
        nv += 1
    return bytes(deliveries), bytes(views), nd, nv


def cache_dir(sessions: int, seed: int) -> Path:
    tag = hashlib.sha256(
        f"{FORMAT}/{sessions}/{seed}/{CHAIN_ID}/{DISTRIBUTOR.hex()}".encode()
    ).hexdigest()[:16]
    return CACHE / f"{sessions}-{seed}-{tag}"


def generate(sessions: int, seed: int, world) -> Path:
    """The signed receipts of `sessions` sessions, from the cache or made now (and cached)."""
    global _world
    directory = cache_dir(sessions, seed)
    meta = directory / "meta.json"
    if meta.exists():
        m = json.loads(meta.read_text())
        log(
            f"signed receipts from the cache {directory.relative_to(ROOT)}: {m['delivery']:,} "
            f"delivery + {m['view']:,} view (generated once in {m['generation_s']:.0f} s)"
        )
        return directory
    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    _world = world
    tasks = [(seed, first, min(CHUNK, sessions - first)) for first in range(0, sessions, CHUNK)]
    t = time.perf_counter()
    nd = nv = 0
    with (
        multiprocessing.get_context("fork").Pool() as pool,
        open(tmp / "delivery.bin", "wb") as fd,
        open(tmp / "view.bin", "wb") as fv,
    ):
        for i, (d, v, a, b) in enumerate(pool.imap(_sessions, tasks)):
            fd.write(d)
            fv.write(v)
            nd, nv = nd + a, nv + b
            if (i + 1) % 10 == 0:
                log(f"  signed {min((i + 1) * CHUNK, sessions):,} sessions")
    seconds = time.perf_counter() - t
    (tmp / "meta.json").write_text(
        json.dumps(
            {"sessions": sessions, "seed": seed, "delivery": nd, "view": nv,
             "generation_s": seconds, "cores": os.cpu_count()}
        )
    )  # fmt: skip
    tmp.rename(directory)
    log(
        f"generated and signed {nd + nv:,} receipts ({nd:,} delivery + {nv:,} view) of "
        f"{sessions:,} sessions in {seconds:.1f} s on {os.cpu_count()} cores; cached in "
        f"{directory.relative_to(ROOT)}"
    )
    return directory


def read_receipts(directory: Path, per: int = 100_000) -> Iterator[list]:
    """The cached receipts, `per` records at a time (deliveries, then views)."""
    from settlement.domain.receipts import DeliveryReceipt, ViewReceipt

    for name, fmt, cls in (
        ("delivery.bin", DELIVERY, DeliveryReceipt),
        ("view.bin", VIEW, ViewReceipt),
    ):
        with open(directory / name, "rb") as f:
            while block := f.read(fmt.size * per):
                yield [cls(*t) for t in fmt.iter_unpack(block)]


# --- the run ---------------------------------------------------------------------------------


def bench_settings(url: str, data_dir: str):
    return settle.bench_settings(url, data_dir).model_copy(
        update={"chain_id": CHAIN_ID, "distributor": "0x" + DISTRIBUTOR.hex()}
    )


def load(store, world, directory: Path) -> int:
    store.load_registries(
        [(a, f"node-{i}", True) for i, a in enumerate(world.nodes)],
        [(c, world.creators[k]) for c, k in zip(world.contents, world.content_creator, strict=True)],
        [],
    )  # fmt: skip
    t = time.perf_counter()
    n = 0
    for receipts in read_receipts(directory, CHUNK * 2):
        store.bulk_load_best(receipts, [1] * len(receipts))
        n += len(receipts)
    log(f"loaded {n:,} best receipts into the store ({time.perf_counter() - t:.1f} s, not timed)")
    return n


def close(url: str, data_dir: str) -> dict:
    """The service's close of epoch 1 in a fresh process (the settle bench's close child,
    with this bench's domain)."""
    out = subprocess.run(
        [sys.executable, __file__, "--close-child", url, data_dir],
        capture_output=True, text=True,
    )  # fmt: skip
    if out.stderr:
        log(out.stderr.rstrip())
    if out.returncode:
        raise SystemExit(f"the close failed (exit {out.returncode})")
    r = json.loads(out.stdout.strip().splitlines()[-1])
    log(f"close: {r['close_s']:.3f} s, published rows {r['counts']}, root {r['root']}")
    return r


def close_child(url: str, data_dir: str) -> None:
    from settlement.adapters.db.store import open_store
    from settlement.services.close import close_epoch

    store = open_store(url, create=False)
    memory = settle.MemorySampler()
    memory.start()
    t = time.perf_counter()
    closed = close_epoch(store, bench_settings(url, data_dir), 1, now=settle.cutoff(1))
    close_s = time.perf_counter() - t
    memory.stop()
    store.close()
    m = json.loads(closed.manifest)
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({
        "close_s": close_s, "stage_s": closed.stage_s, "root": closed.root,
        "data_hash": closed.data_hash, "counts": m["counts"],
        "peak_rss_mb": max(own, memory.peak_mb),
    }))  # fmt: skip


def verify_all(directory: Path) -> tuple[float, int]:
    """Every signed receipt through the verifier on all cores: (seconds, receipts).
    Loading them from the cache is not timed; verification is, chunk by chunk."""
    from settlement.domain.receipts import Domain, Params
    from settlement.parallel import shutdown_pool, verify_batch

    domain = Domain(CHAIN_ID, DISTRIBUTOR)
    params = Params.from_settings(bench_settings("sqlite://", "unused"))
    now = settle.cutoff(1)
    verify_batch(next(read_receipts(directory, 5_000)), domain, params, now)  # start the pool
    seconds, n = 0.0, 0
    for receipts in read_receipts(directory, 200_000):
        t = time.perf_counter()
        verdicts = verify_batch(receipts, domain, params, now)
        seconds += time.perf_counter() - t
        bad = [v for v in verdicts if not v.accepted]
        if bad:
            raise SystemExit(f"{len(bad)} generated receipts were rejected: {bad[0]}")
        n += len(receipts)
    shutdown_pool()
    log(f"verified {n:,} signatures on {os.cpu_count()} cores in {seconds:.3f} s "
        f"({n / seconds:,.0f}/s)")  # fmt: skip
    return seconds, n


def audit(data_dir: str, profile: bool = False) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--audit-child", data_dir, *(["--profile"] if profile else [])],
        capture_output=True, text=True,
    )  # fmt: skip
    if out.stderr:
        log(out.stderr.rstrip())
    if out.returncode:
        raise SystemExit(f"the audit failed (exit {out.returncode})")
    r = json.loads(out.stdout.strip().splitlines()[-1])
    log(f"audit: {r['audit_s']:.3f} s, ok {r['ok']}, {r['signatures_checked']:,} signatures "
        f"checked of {r['receipts']:,} receipts, peak RSS {r['peak_rss_mb']:.0f} MB")  # fmt: skip
    return r


def stages(profiler) -> None:
    """The auditor's stages by cumulative time in this process (work in the verify pool
    shows as the wait of the stage that maps it), and the heaviest functions."""
    import pstats

    st = pstats.Stats(profiler)
    rows = []
    for (path, _, name), (_, _, _, cum, _) in st.stats.items():  # type: ignore[attr-defined]
        if "services/audit/" in path or path.endswith(("domain/published.py", "domain/credit.py",
                          "domain/rewards.py", "domain/merkle.py", "parallel.py")):  # fmt: skip
            rows.append((cum, f"{Path(path).stem}.{name}"))
    log("audit stages (cumulative s, this process):")
    for cum, name in sorted(rows, reverse=True)[:25]:
        log(f"  {name:<40} {cum:8.3f}")


def audit_child(data_dir: str, profile: bool = False) -> None:
    """Runs in the child: the auditor on the published folder, timed, with its peak memory."""
    from settlement.services.audit import ChainView, audit, open_source

    class Unproposed(ChainView):
        """The bench's distributor before anything is proposed: the audit recomputes the
        dataset against its own manifest (the chain checks are a few events at any size)."""

        def __init__(self) -> None:
            super().__init__(None)

        @property
        def chain_id(self) -> int:
            return CHAIN_ID

        @property
        def address(self) -> str:
            return "0x" + DISTRIBUTOR.hex()

        def events(self, refresh: bool = False) -> list:
            return []

        def root(self) -> str:
            return "0x" + "00" * 32

    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
    memory = settle.MemorySampler()
    memory.start()
    t = time.perf_counter()
    if profiler is not None:
        profiler.enable()
    report = audit(open_source(data_dir), Unproposed())
    if profiler is not None:
        profiler.disable()
    audit_s = time.perf_counter() - t
    memory.stop()
    if profiler is not None:
        stages(profiler)
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    (summary,) = report.epochs
    print(json.dumps({
        "audit_s": audit_s, "ok": report.ok, "mismatches": [str(m) for m in report.mismatches[:5]],
        "receipts": summary.receipts, "signatures_checked": summary.signatures_checked,
        "peak_rss_mb": max(own, memory.peak_mb),
    }))  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="100,000 sessions instead of 1,000,000")
    ap.add_argument("--sessions", type=int, default=None)
    ap.add_argument("--store", choices=("postgres", "sqlite"), default="postgres")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--keep", action="store_true", help="keep the database and dataset")
    ap.add_argument(
        "--profile", action="store_true", help="log the audit's stages (cProfile; slows it)"
    )
    ap.add_argument(
        "--audit-only",
        metavar="DATA_DIR",
        help="audit a kept dataset (--keep) again, nothing else: for profiling",
    )
    ap.add_argument("--close-child", nargs=2, metavar=("URL", "DATA_DIR"), help=argparse.SUPPRESS)
    ap.add_argument("--audit-child", metavar="DATA_DIR", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.close_child:
        close_child(*args.close_child)
        return
    if args.audit_child:
        audit_child(args.audit_child, args.profile)
        return
    if args.audit_only:
        audit(args.audit_only, args.profile)
        return
    sessions = args.sessions or (100_000 if args.quick else 1_000_000)
    from settlement.adapters.db.store import open_store

    log(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    world = settle.build(sessions, args.seed)
    directory = generate(sessions, args.seed, world)
    tmp = tempfile.mkdtemp(prefix="bench-audit-")
    pg = args.store == "postgres"
    if pg:
        settle.PG_SCHEMA = os.environ.get("W2E_BENCH_SCHEMA", "w2e_bench_audit")
    url = settle.pg_url(fresh=True) if pg else f"sqlite:///{tmp}/store.db"
    data_dir = str(Path(tmp) / "epochs")
    store = open_store(url, sqlite_synchronous="NORMAL")
    try:
        receipts = load(store, world, directory)
        del world
        settle.vacuum(store, pg)
    finally:
        store.close()
    try:
        c = close(url, data_dir)
        published = int(c["counts"]["delivery_receipts"]) + int(c["counts"]["view_receipts"])
        assert published == receipts, f"published {published} receipts of {receipts} loaded"
        verify_s, verified = verify_all(directory)
        a = audit(data_dir, args.profile)
        if not a["ok"]:
            raise SystemExit(f"the audit of an honest epoch failed: {a['mismatches']}")
        if a["signatures_checked"] != verified:
            raise SystemExit(
                f"the audit checked {a['signatures_checked']} of {verified} signatures"
            )
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
            if pg:
                settle.drop_pg()
        else:
            log(f"kept: {url} and {data_dir}")
    floor = c["close_s"] + verify_s
    log(f"floor: close {c['close_s']:.3f} s + verify {verify_s:.3f} s = {floor:.3f} s; "
        f"audit {a['audit_s']:.3f} s")  # fmt: skip
    log(f"load average at end: {os.getloadavg()[0]:.1f}")
    print(json.dumps({
        "bench": "audit", "sessions": sessions, "receipts": verified,
        "audit_s": round(a["audit_s"], 3), "close_s": round(c["close_s"], 3),
        "verify_s": round(verify_s, 3), "ratio_vs_floor": round(a["audit_s"] / floor, 3),
        "peak_rss_mb": round(a["peak_rss_mb"]),
    }))  # fmt: skip


if __name__ == "__main__":
    main()

"""Ingest throughput of the real server against the store's and the verifier's own ceilings.

Usage: scripts/bench ingest [--quick] [--store sqlite|postgres] [--receipts N] [--clients C]
                            [--workers W] [--keepalive] [--no-rate-limit]
                            [--startup-timeout S]

One run, three measurements on the same simulator receipts (cached in the temp dir):
  server   `settlement serve` (uvicorn, one worker per core) on a fresh database with the
           simulator's registries, fed over loopback in batches of 1,000 by a separate load
           process (pre-serialized bodies, 4 concurrent clients, each carrying whole sessions
           in order, a fresh connection per batch: see load_main), with the shared rate
           limit on (a limit no batch reaches, so every batch pays its admission statement in
           the store; --no-rate-limit turns it off to measure that); every verdict of PROTOCOL
           section 3 is decided, signatures recovered, kept receipts committed before each
           answer, and the verdict counts are checked against the simulator's truth.
  store    the same rows written straight into a fresh database by the store's bulk path
           (Store.bulk_load_best, 1,000 receipts a transaction).
  verify   raw coincurve recovery of the same receipts' precomputed digests on every core,
           just before and just after the server run (the better one counts: the machine
           may be shared, and a busy neighbour only ever lowers a measurement).
peak_rss_mb sums the peak RSS (VmHWM) of the server's processes: supervisor and workers.
Last line: one JSON object; ratio_vs_verify_ceiling = server / verify ceiling.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import multiprocessing
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))  # support.server

import orjson
from support.server import HOST, ServerProcess

ROOT = Path(__file__).resolve().parents[2]
PG_BASE = "postgresql://postgres@127.0.0.1:5432/test"
PG_SCHEMA = "w2e_bench_ingest"
DAY = 86_400


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --- receipts: generated once, cached ------------------------------------------------------


def receipts_dir(n: int) -> Path:
    # Receipts must be inside the server's time window (issuedAt >= now - max_age), so the
    # cache is keyed by day: sessions start two days back, valid for the next five days.
    start = (int(time.time()) // DAY - 2) * DAY
    out = Path(tempfile.gettempdir()) / "w2e-bench-cache" / f"ingest-{n}-{start}"
    if not (out / "truth.json").exists():
        log(f"simulating {n:,} receipts into {out} (cached for the next runs)")
        subprocess.run(
            [sys.executable, "-m", "settlement.cli", "simulate", "--out", str(out),
             "--receipts", str(n), "--start", str(start)],
            check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
    return out


def read_lines(path: Path) -> list[bytes]:
    with path.open("rb") as f:
        return [line.rstrip(b"\n") for line in f if line.strip()]


# --- load process ----------------------------------------------------------------------------


def load_main(port: int, path: str, batch: int, clients: int, keepalive: bool, commands, results):
    """Post batches over `clients` concurrent connections, a slice at a time, on command.

    Each connection carries whole sessions, in file order, like a node that sends its own
    players' receipts: concurrency never reorders a session, so the verdicts can be checked
    against the simulator's truth. A command is a number of batches per client; each slice
    reports its wall time, CPU, batch latencies and verdict counts.
    """
    shards: list[list[bytes]] = [[] for _ in range(clients)]
    for line in read_lines(Path(path)):
        try:
            doc = orjson.loads(line)
            key = (str(doc.get("viewer")), str(doc.get("sessionId")))
        except (orjson.JSONDecodeError, AttributeError):
            key = ("", "")
        shards[hash(key) % clients].append(line)
    queues: list[list[tuple[bytes, int]]] = [
        [
            (b'{"receipts":[' + b",".join(lines[i : i + batch]) + b"]}", len(lines[i : i + batch]))
            for i in range(0, len(lines), batch)
        ]
        for lines in shards
    ]
    del shards
    positions = [0] * clients
    lock = threading.Lock()

    def client(c: int, count: int, out: dict) -> None:
        # A fresh connection per batch unless keepalive: uvicorn's workers share one listening
        # socket, so a keep-alive connection stays with the worker that accepted it, and four
        # of them often split 3:1 (one worker saturated, one half idle). A new connection is
        # accepted by whichever worker's event loop is free first, so batches follow capacity.
        conn = http.client.HTTPConnection(HOST, port, timeout=120)
        headers = {"Content-Type": "application/json"}
        if not keepalive:
            headers["Connection"] = "close"
        bodies = queues[c][positions[c] : positions[c] + count]
        positions[c] += len(bodies)
        for body, size in bodies:
            while True:
                t0 = time.perf_counter()
                conn.request("POST", "/v1/receipts", body, headers)
                resp = conn.getresponse()
                data = resp.read()
                dt = time.perf_counter() - t0
                if not keepalive:
                    conn.close()
                if resp.status not in (429, 503):
                    break
                with lock:
                    out["retries"][resp.status] += 1
                time.sleep(float(resp.getheader("Retry-After") or 1) / 10)
            with lock:
                out["latencies"].append(dt)
                if resp.status != 200:
                    out["problems"].append(f"HTTP {resp.status} {data[:200]!r}")
                    continue
                doc = orjson.loads(data)
                if len(doc["results"]) != size:
                    out["problems"].append(f"{len(doc['results'])} verdicts for {size}")
                out["summary"].update(doc["summary"])
        conn.close()

    results.put("ready")
    while (count := commands.get()) is not None:
        out: dict = {"latencies": [], "summary": Counter(), "problems": [], "retries": Counter()}
        threads = [threading.Thread(target=client, args=(c, count, out)) for c in range(clients)]
        t0 = time.perf_counter()
        cpu0 = time.process_time()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        out["elapsed"] = time.perf_counter() - t0
        out["cpu"] = time.process_time() - cpu0
        out["left"] = sum(len(q) - p for q, p in zip(queues, positions, strict=True))
        results.put(out)


class Load:
    """The load process: started once, then driven slice by slice."""

    def __init__(self, port: int, path: Path, batch: int, clients: int, keepalive: bool) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.commands, self.results = ctx.Queue(), ctx.Queue()
        self.proc = ctx.Process(
            target=load_main,
            args=(port, str(path), batch, clients, keepalive, self.commands, self.results),
        )

    def __enter__(self) -> Load:
        self.proc.start()
        self._get()  # "ready": bodies built
        return self

    def slice(self, batches_per_client: int) -> dict:
        self.commands.put(batches_per_client)
        return self._get()

    def _get(self):
        while True:
            try:
                return self.results.get(timeout=0.5)
            except queue.Empty:
                if not self.proc.is_alive():
                    raise RuntimeError(f"load process exited with {self.proc.exitcode}") from None

    def __exit__(self, *exc: object) -> None:
        if self.proc.is_alive():
            self.commands.put(None)
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()


def decided_of(summary: dict[str, int]) -> int:
    return sum(summary.get(k, 0) for k in ("accepted", "duplicate", "stale", "rejected"))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# --- verify ceiling -------------------------------------------------------------------------


def _recover_share(pairs: list[tuple[bytes, bytes]]) -> tuple[int, float, float]:
    from coincurve import PublicKey

    t0 = time.perf_counter()
    for sig, digest in pairs:
        with contextlib.suppress(ValueError):  # no key: as costly as a recovery
            PublicKey.from_signature_and_message(sig, digest, hasher=None)
    return len(pairs), t0, time.perf_counter()


def digest_pairs(lines: list[bytes], limit: int) -> list[tuple[bytes, bytes]]:
    """(64-byte signature + recovery id, EIP-712 digest) of up to `limit` receipts."""
    from settlement.config import Settings
    from settlement.domain.receipts import Domain, MalformedReceipt, digest
    from settlement.domain.wire import parse_wire

    settings = Settings()
    domain = Domain.from_hex(settings.chain_id, settings.distributor)
    pairs = []
    for line in lines[:limit]:
        try:
            r = parse_wire(line)
        except MalformedReceipt:
            continue
        v = r.signature[64]
        if v in (27, 28):
            pairs.append((r.signature[:64] + bytes([v - 27]), digest(r, domain)))
    return pairs


class VerifyCeiling:
    """Bare recovery on every core, measured in slices between the server's slices."""

    def __init__(self, pairs: list[tuple[bytes, bytes]], workers: int, per_slice: int) -> None:
        self.pairs, self.workers, self.per_slice = pairs, workers, per_slice
        self.pool = multiprocessing.get_context("spawn").Pool(workers)
        self.pool.map(_recover_share, [pairs[:200]] * workers)  # warm: imports, first calls
        self.offset = 0
        self.count = 0
        self.seconds = 0.0
        self.slices: list[float] = []

    def slice(self) -> None:
        chunk = self.pairs[self.offset : self.offset + self.per_slice]
        if len(chunk) < self.per_slice:
            self.offset, chunk = 0, self.pairs[: self.per_slice]
        self.offset += len(chunk)
        parts = self.pool.map(
            _recover_share, [chunk[i :: self.workers] for i in range(self.workers)]
        )
        n = sum(p[0] for p in parts)
        wall = max(p[2] for p in parts) - min(p[1] for p in parts)
        self.count += n
        self.seconds += wall
        self.slices.append(n / wall)

    @property
    def rate(self) -> float:
        return self.count / self.seconds

    def close(self) -> None:
        self.pool.terminate()
        self.pool.join()


# --- databases ------------------------------------------------------------------------------


def fresh_database(store: str, workdir: Path, name: str) -> str:
    if store == "sqlite":
        path = workdir / f"{name}.db"
        for suffix in ("", "-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)
        return f"sqlite:///{path}"
    import psycopg

    schema = f"{PG_SCHEMA}_{name}"
    with psycopg.connect(PG_BASE, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        conn.execute(f"CREATE SCHEMA {schema}")
    return f"{PG_BASE}?options=-csearch_path%3D{schema}"


def postgres_cpu() -> dict[int, int]:
    """CPU ticks so far of each postgres process on this machine, by pid."""
    ticks = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text()
                if "(postgres)" in stat:
                    fields = stat.rsplit(")", 1)[1].split()
                    ticks[int(entry.name)] = int(fields[11]) + int(fields[12])
    return ticks


def postgres_cpu_since(before: dict[int, int]) -> float:
    """CPU seconds the postgres processes alive now used since `before` (others' too)."""
    now = postgres_cpu()
    return sum(t - before.get(pid, 0) for pid, t in now.items()) / os.sysconf("SC_CLK_TCK")


class RssSampler(threading.Thread):
    """The server's total RSS twice a second: bounded memory shows as a plateau."""

    def __init__(self, server: ServerProcess) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.samples: list[float] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.5):
            self.samples.append(self.server.rss_mb())


def drop_database(store: str, url: str) -> None:
    if store == "postgres":
        import psycopg

        schema = url.rsplit("%3D", 1)[1]
        with psycopg.connect(PG_BASE, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def setup_registries(url: str, registries: dict) -> None:
    from settlement.adapters.db.store import open_store
    from settlement.services.registry import load_registries

    with open_store(url) as store:
        load_registries(store, registries)


def store_ceiling(url: str, lines: list[bytes], batch: int) -> float:
    """Rows per second of the store's bulk path (Store.bulk_load_best), `batch` rows a transaction.

    The rows are the parsed receipts with their buckets; parsing is outside the timing.
    """
    from settlement.adapters.db.store import open_store
    from settlement.config import Settings
    from settlement.domain.epochs import EpochClock
    from settlement.domain.receipts import MalformedReceipt
    from settlement.domain.wire import parse_wire

    clock = EpochClock.from_settings(Settings())
    receipts = []
    for line in lines:
        try:
            receipts.append(parse_wire(line))
        except MalformedReceipt:
            continue
    # The bulk path takes any row: receipts ingest would refuse as too old go to bucket 1.
    buckets = [clock.bucket(max(r.issued_at, clock.genesis)) for r in receipts]
    with open_store(url) as store:
        t0 = time.perf_counter()
        rows = 0
        for i in range(0, len(receipts), batch):
            rows += store.bulk_load_best(receipts[i : i + batch], buckets[i : i + batch])
        elapsed = time.perf_counter() - t0
    log(f"store ceiling: {len(receipts):,} receipts -> {rows:,} best rows in {elapsed:.2f} s")
    return len(receipts) / elapsed


# --- main -------------------------------------------------------------------------------------


@contextlib.contextmanager
def _started(server: ServerProcess, timeout: float) -> Iterator[ServerProcess]:
    """The server, started within `timeout` seconds and always stopped."""
    server.start(timeout)
    try:
        yield server
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="40,000 receipts instead of 300,000")
    parser.add_argument("--store", choices=["sqlite", "postgres"], default="postgres")
    parser.add_argument("--receipts", type=int, default=None)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=4, help="concurrent connections")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--keepalive",
        action="store_true",
        help="keep each client's connection (default: one per batch)",
    )
    parser.add_argument(
        "--slices", type=int, default=6, help="server/ceiling alternations (default 6)"
    )
    parser.add_argument(
        "--no-rate-limit",
        action="store_true",
        help="W2E_RATE_LIMIT=0: no admission statement per batch (default: a limit never hit)",
    )
    parser.add_argument(
        "--startup-timeout",
        type=float,
        default=120.0,
        help="seconds `settlement serve` may take to answer /readyz (a loaded machine imports "
        "slowly; default 120)",
    )
    args = parser.parse_args()
    n = args.receipts or (40_000 if args.quick else 300_000)

    sim = receipts_dir(n)
    receipts_path = sim / "receipts.ndjson"
    registries = json.loads((sim / "registries.json").read_text())
    truth = json.loads((sim / "truth.json").read_text())
    lines = read_lines(receipts_path)
    pairs = digest_pairs(lines, 60_000)
    per_client = -(-len(lines) // args.batch // args.clients)  # batches per client, about
    steps = max(1, min(args.slices, per_client))
    step = -(-per_client // steps)

    with tempfile.TemporaryDirectory(prefix="w2e-bench-ingest-") as tmp:
        workdir = Path(tmp)
        url = fresh_database(args.store, workdir, "server")
        ceiling = VerifyCeiling(pairs, args.workers, per_slice=4_000 * args.workers)
        try:
            setup_registries(url, registries)
            env = {
                **os.environ,
                "W2E_DATABASE_URL": url,
                # On, but never reached: each batch pays the rate-window upsert.
                "W2E_RATE_LIMIT": "0" if args.no_rate_limit else "1000000",
                "W2E_RATE_BURST": "1000000",
                "W2E_MAX_INFLIGHT_BATCHES": str(max(8, args.clients)),
            }
            server = ServerProcess(env, workers=args.workers, log=workdir / "server.log")
            with (
                _started(server, args.startup_timeout),
                Load(server.port, receipts_path, args.batch, args.clients, args.keepalive) as load,
            ):
                log(f"server: {args.workers} workers on {server.url}, store {args.store}")
                # The machine may be shared: alternate short slices of the server run and of
                # the verify ceiling, so that both see the same neighbours on average.
                cpu0, db0, load0 = server.cpu_seconds(), postgres_cpu(), os.getloadavg()[0]
                sampler = RssSampler(server)
                sampler.start()
                slices = []
                left = 1
                while left:
                    ceiling.slice()
                    slices.append(load.slice(step))
                    left = slices[-1]["left"]
                ceiling.slice()
                server_cpu = server.cpu_seconds() - cpu0
                sampler.done.set()
                db_cpu = postgres_cpu_since(db0) if args.store == "postgres" else 0.0
                load1 = os.getloadavg()[0]
                peak_rss = server.peak_rss_mb()
        finally:
            ceiling.close()
            if (workdir / "server.log").exists():
                tail = (workdir / "server.log").read_text()[-2000:]
                if "Traceback" in tail:
                    log(tail)
            drop_database(args.store, url)
        problems = [p for sl in slices for p in sl["problems"]]
        if problems:
            log(f"problems ({len(problems)}): " + "; ".join(problems[:10]))
        summary: Counter[str] = Counter()
        for sl in slices:
            summary.update(sl["summary"])
        elapsed = sum(sl["elapsed"] for sl in slices)
        latencies = [x for sl in slices for x in sl["latencies"]]
        retries = sum((Counter(sl["retries"]) for sl in slices), Counter())
        decided = decided_of(summary)
        rate = decided / elapsed
        p50 = percentile(latencies, 0.50) * 1000
        p99 = percentile(latencies, 0.99) * 1000
        slice_rates = " ".join(f"{decided_of(sl['summary']) / sl['elapsed']:,.0f}" for sl in slices)
        log(
            f"server: {decided:,} of {len(lines):,} receipts decided in {elapsed:.2f} s = "
            f"{rate:,.0f}/s (slices: {slice_rates}); batch p50 {p50:.1f} ms p99 {p99:.1f} ms; "
            f"peak RSS {peak_rss:.0f} MB; retries {dict(retries)}"
        )
        per = {
            "server": server_cpu / decided * 1e6,
            "database": db_cpu / decided * 1e6,
            "client": sum(sl["cpu"] for sl in slices) / decided * 1e6,
        }
        log(
            f"CPU per receipt: server {per['server']:.0f} us, "
            + (
                f"PostgreSQL {per['database']:.0f} us (every postgres process: an upper bound on "
                "a shared server), "
                if args.store == "postgres"
                else "(SQLite runs inside the server), "
            )
            + f"load client "
            f"{per['client']:.0f} us; at full use of {os.cpu_count()} idle cores that is "
            f"{(os.cpu_count() or 1) * 1e6 / sum(per.values()):,.0f} receipts/s (an estimate, "
            f"for a shared machine; the JSON line reports only what was measured)"
        )
        half = len(sampler.samples) // 2
        if half:
            log(
                f"server RSS: {sampler.samples[0]:.0f} MB at start, max "
                f"{max(sampler.samples[:half]):.0f} MB in the first half of the run, "
                f"{max(sampler.samples[half:]):.0f} MB in the second; 1-minute load average "
                f"{load0:.1f} before, {load1:.1f} after ({os.cpu_count()} cores; above that, "
                f"other jobs share the machine)"
            )
        verdicts = {k: v for k, v in summary.items() if v and k != "rejected"}
        same = "equal to" if verdicts == truth["expected"]["ingest"] else "NOT equal to"
        log(f"server verdicts {same} the simulator's truth: {dict(sorted(verdicts.items()))}")

        url = fresh_database(args.store, workdir, "ceiling")
        try:
            setup_registries(url, registries)
            store_rate = store_ceiling(url, lines, args.batch)
        finally:
            drop_database(args.store, url)
        log(f"store ceiling: {store_rate:,.0f} receipts/s")
    verify_rate = ceiling.rate
    log(
        f"verify ceiling: {verify_rate:,.0f} recoveries/s on {args.workers} processes "
        f"(slices: {' '.join(f'{r:,.0f}' for r in ceiling.slices)})"
    )
    print(
        json.dumps(
            {
                "bench": "ingest",
                "store": args.store,
                "rate_limit": not args.no_rate_limit,
                "receipts_per_s": round(rate),
                "p50_ms": round(p50, 1),
                "p99_ms": round(p99, 1),
                "store_ceiling_per_s": round(store_rate),
                "verify_ceiling_per_s": round(verify_rate),
                "ratio_vs_verify_ceiling": round(rate / verify_rate, 3),
                "peak_rss_mb": round(peak_rss, 1),
            }
        )
    )


if __name__ == "__main__":
    main()

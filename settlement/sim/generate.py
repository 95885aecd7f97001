"""Seeded traffic generator: a network of nodes, viewers, creators and content, honest
sessions with cumulative receipts, and bad actors whose expected verdicts are known.

Writes receipts.ndjson (wire format), labels.txt (`honest` or the bad-actor kind of each
line), registries.json (nodes, content -> creator, viewers) and truth.json (counts per
kind, the reason each must get, and the expected summaries of `settlement receipts
verify` and of an ingest from an empty store).

Same configuration and seed, same output bytes, whatever the number of workers: the
output is a sequence of chunks, each generated from its own seed derived from the
run's seed and the chunk's index, written in index order.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from settlement.sim.bad_actors import Chunk
from settlement.sim.sessions import init_worker, worker_state
from settlement.sim.world import (
    BAD_KINDS,
    LABELS_FILE,
    RECEIPTS_FILE,
    REGISTRIES_FILE,
    TRUTH_FILE,
    SimConfig,
    build_world,
)

CHUNK_RECEIPTS = 10_000  # receipts per chunk: one seed, one task for a worker
CHUNK_SESSIONS = 250  # honest sessions per chunk with --sessions


def _gen_chunk(
    task: tuple[int, int | None, int | None, dict[str, int] | None],
) -> tuple[bytes, bytes, dict[str, int], int, float]:
    index, receipts, sessions, bad = task
    cpu = time.process_time()
    chunk = Chunk(index)
    cfg: SimConfig = worker_state["cfg"]
    if receipts is not None:
        assert bad is not None
        chunk.honest_sessions(receipts=receipts - sum(bad.values()))
    else:
        chunk.honest_sessions(sessions=sessions)
        honest = len(chunk.honest)
        rest = 1 - sum(cfg.bad.values())
        bad = {k: math.floor(f * honest / rest + 0.5) for k, f in cfg.bad.items()}
    chunk.bad_actors(bad)
    lines, labels = chunk.output()
    return lines, labels, dict(chunk.counts), len(chunk.honest), time.process_time() - cpu


# --- the run -------------------------------------------------------------------------


def _split(total: int, parts: list[int]) -> list[int]:
    """`total` over chunks in proportion to `parts`, summing to `total` exactly."""
    whole = sum(parts)
    out, done, cum = [], 0, 0
    for p in parts:
        cum += p
        upto = total * cum // whole if whole else 0
        out.append(upto - done)
        done = upto
    return out


def _tasks(cfg: SimConfig) -> list[tuple[int, int | None, int | None, dict[str, int] | None]]:
    if cfg.receipts is not None:
        n = cfg.receipts
        sizes = [CHUNK_RECEIPTS] * (n // CHUNK_RECEIPTS) + (
            [n % CHUNK_RECEIPTS] if n % CHUNK_RECEIPTS else []
        )
        per_kind = {k: _split(math.floor(f * n + 0.5), sizes) for k, f in cfg.bad.items()}
        return [
            (i, size, None, {k: per_kind[k][i] for k in cfg.bad}) for i, size in enumerate(sizes)
        ]
    s = cfg.sessions or 0
    sizes = [CHUNK_SESSIONS] * (s // CHUNK_SESSIONS) + (
        [s % CHUNK_SESSIONS] if s % CHUNK_SESSIONS else []
    )
    return [(i, None, size, None) for i, size in enumerate(sizes)]


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class SimResult:
    out_dir: Path
    receipts: int
    honest: int
    kinds: dict[str, int]
    seconds: float  # wall
    cpu_seconds: float  # spent generating chunks, all workers: the cost without neighbours
    workers: int
    truth: dict[str, Any]

    @property
    def receipts_path(self) -> Path:
        return self.out_dir / RECEIPTS_FILE


def generate(
    cfg: SimConfig, out_dir: str | Path, *, progress: Callable[[int], None] | None = None
) -> SimResult:
    """Write receipts.ndjson, labels.txt, registries.json and truth.json into `out_dir`."""
    cfg.validate()
    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tasks = _tasks(cfg)
    workers = max(1, min(cfg.workers or _cores(), len(tasks) or 1))
    kinds: Counter[str] = Counter()
    honest = total = 0
    tmp = out / (RECEIPTS_FILE + ".partial")
    tmp_labels = out / (LABELS_FILE + ".partial")
    with tmp.open("wb") as f, tmp_labels.open("wb") as f_labels:
        files = (f, f_labels)
        if workers == 1:
            world = build_world(cfg)
            init_worker(cfg, world)
            total, honest, cpu = _drain(map(_gen_chunk, tasks), files, kinds, progress)
        else:
            # forkserver: the caller may run threads (a server, a test), which fork would copy
            method = "forkserver" if sys.platform.startswith("linux") else "spawn"
            ctx = multiprocessing.get_context(method)
            if cfg.nodes + cfg.viewers + cfg.creators > 20_000:
                with ctx.Pool(workers) as pool:
                    world = build_world(cfg, pool)
            else:
                world = build_world(cfg)
            with ctx.Pool(workers, initializer=init_worker, initargs=(cfg, world)) as pool:
                total, honest, cpu = _drain(pool.imap(_gen_chunk, tasks), files, kinds, progress)
    tmp.replace(out / RECEIPTS_FILE)
    tmp_labels.replace(out / LABELS_FILE)
    (out / REGISTRIES_FILE).write_bytes(
        orjson.dumps(world.registries(), option=orjson.OPT_INDENT_2)
    )
    truth = _truth(cfg, total, honest, kinds)
    (out / TRUTH_FILE).write_bytes(
        orjson.dumps(truth, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
    )
    return SimResult(out, total, honest, dict(kinds), time.perf_counter() - t0, cpu, workers, truth)


def _drain(
    results: Iterable[tuple[bytes, bytes, dict[str, int], int, float]],
    files: tuple[Any, Any],
    kinds: Counter[str],
    progress: Callable[[int], None] | None,
) -> tuple[int, int, float]:
    total = honest = 0
    cpu = 0.0
    for data, labels, counts, n_honest, chunk_cpu in results:
        cpu += chunk_cpu
        files[0].write(data)
        files[1].write(labels)
        kinds.update(counts)
        honest += n_honest
        total += n_honest + sum(counts.values())
        if progress is not None:
            progress(total)
    return total, honest, cpu


def _truth(cfg: SimConfig, total: int, honest: int, kinds: Counter[str]) -> dict[str, Any]:
    p = cfg.params
    verify: Counter[str] = Counter({"accepted": honest})
    ingest: Counter[str] = Counter({"accepted": honest})
    for kind, spec in BAD_KINDS.items():
        n = kinds.get(kind, 0)
        if n:
            verify["accepted" if not spec.stateless else spec.reason] += n
            ingest[spec.reason] += n
    return {
        "seed": cfg.seed,
        "chainId": cfg.chain_id,
        "distributor": "0x" + cfg.distributor.hex(),
        "start": cfg.start,
        "now": cfg.now,
        "params": {
            "genesis": p.genesis,
            "clockSkew": p.clock_skew,
            "maxAge": p.max_age,
            "maxSessionAge": p.max_session_age,
            "segmentSeconds": p.segment_seconds,
            "maxBitrate": p.max_bitrate,
            "maxLeadSeconds": p.max_lead_seconds,
            "minSegmentBytes": p.min_segment_bytes,
        },
        "receipts": total,
        "honest": honest,
        "kinds": {
            kind: {
                "count": kinds.get(kind, 0),
                "reason": spec.reason,
                "stateless": spec.stateless,
                "what": spec.what,
            }
            for kind, spec in BAD_KINDS.items()
        },
        # `verify`: what `settlement receipts verify --now <now>` answers (no state, no
        # registries): exact. `ingest`: a service with registries.json loaded, an empty
        # store, this file posted in order and clock at `now`.
        "expected": {
            "verify": dict(sorted(verify.items())),
            "ingest": dict(sorted(ingest.items())),
        },
    }


def read_lines(path: str | Path, batch: int = 10_000) -> Iterator[list[Any]]:
    """The wire objects of an NDJSON file, `batch` at a time (a line that is not JSON stays text)."""
    part: list[Any] = []
    with Path(path).open("rb") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                part.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                part.append(line.decode("utf-8", "replace"))
            if len(part) >= batch:
                yield part
                part = []
    if part:
        yield part

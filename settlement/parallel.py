"""Process pools and fork helpers, used by the edges and services (the domain stays pure).

Each user keeps a section of its own: receipt verification, then the close's export children.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Final

import orjson

from settlement.domain.receipts import (
    ACCEPTED,
    Domain,
    Params,
    Reason,
    Receipt,
    Rejected,
    Verdict,
    verify,
)
from settlement.domain.wire import verify_wire

if TYPE_CHECKING:
    from concurrent.futures import ProcessPoolExecutor

__all__ = [
    "can_fork",
    "fork_child",
    "join_child",
    "kill_child",
    "map_tasks",
    "shutdown_pool",
    "verify_batch",
    "verify_wire_batch",
]


# --- receipt verification: batches over a process pool --------------------------------------------------------------------------

INLINE_BELOW: Final = 4096  # below this a pool's pickling and wake-ups cost more than they save
_pool: ProcessPoolExecutor | None = None
_pool_workers = 0
_pool_lock = threading.Lock()


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _get_pool(workers: int) -> ProcessPoolExecutor:
    """The module's process pool, started on first use and reused by every later batch."""
    global _pool, _pool_workers
    with _pool_lock:
        if _pool is None or _pool_workers != workers:
            import atexit
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            if _pool is not None:
                _pool.shutdown(wait=True)
            # forkserver: forking a parent that may run threads (servers, tests) is unsafe
            method = "forkserver" if sys.platform.startswith("linux") else "spawn"
            _pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method))
            _pool_workers = workers
            if not getattr(_get_pool, "_atexit", False):
                atexit.register(shutdown_pool)
                _get_pool._atexit = True  # type: ignore[attr-defined]
        return _pool


def shutdown_pool() -> None:
    """Stop the batch pool (tests and long-lived processes that want the cores back)."""
    global _pool, _pool_workers
    with _pool_lock:
        if _pool is not None:
            _pool.shutdown(wait=True, cancel_futures=True)
            _pool = None
            _pool_workers = 0


# Verdicts cross the process boundary as (reason or None, detail): a few bytes each.
def _pack(verdicts: Iterable[Verdict]) -> list[tuple[str, str] | None]:
    return [None if type(v) is not Rejected else (v.reason.value, v.detail) for v in verdicts]


def _unpack(packed: list[tuple[str, str] | None]) -> list[Verdict]:
    return [ACCEPTED if p is None else Rejected(Reason(p[0]), p[1]) for p in packed]


def _verify_chunk(
    receipts: Sequence[Receipt], domain: Domain, params: Params, now: int
) -> list[tuple[str, str] | None]:
    return _pack(verify(r, domain, params, now) for r in receipts)


def _verify_wire_chunk(
    items: Sequence[Any], domain: Domain, params: Params, now: int
) -> list[tuple[str, str] | None]:
    return _pack(verify_wire(item, domain, params, now) for item in items)


def _run_batch(
    chunk_fn: Any,
    items: Sequence[Any],
    domain: Domain,
    params: Params,
    now: int,
    workers: int | None,
    inline_below: int,
) -> list[Verdict]:
    workers = _cores() if workers is None else max(1, workers)
    if workers == 1 or len(items) < inline_below:
        return _unpack(chunk_fn(items, domain, params, now))
    pool = _get_pool(workers)
    # A few chunks per worker keeps cores busy when one chunk runs slower than another.
    size = max(256, -(-len(items) // (workers * 4)))
    chunks = [items[i : i + size] for i in range(0, len(items), size)]
    futures = [pool.submit(chunk_fn, chunk, domain, params, now) for chunk in chunks]
    out: list[Verdict] = []
    for future in futures:  # submission order == input order
        out.extend(_unpack(future.result()))
    return out


def verify_batch(
    receipts: Sequence[Receipt],
    domain: Domain,
    params: Params,
    now: int,
    *,
    workers: int | None = None,
    inline_below: int = INLINE_BELOW,
) -> list[Verdict]:
    """verify() of each receipt, in input order, on every core when the batch is large."""
    return _run_batch(_verify_chunk, receipts, domain, params, now, workers, inline_below)


def verify_wire_batch(
    items: Sequence[Any],
    domain: Domain,
    params: Params,
    now: int,
    *,
    workers: int | None = None,
    inline_below: int = INLINE_BELOW,
) -> list[Verdict]:
    """verify_wire() of each wire item (JSON bytes/str or dict), in input order.

    Workers parse too: raw lines are cheaper to ship than parsed receipts.
    """
    return _run_batch(_verify_wire_chunk, items, domain, params, now, workers, inline_below)


# --- the auditor: one task per chunk of a published file ---------------------------------------


def map_tasks(
    fn: Callable[..., Any], tasks: Sequence[tuple[Any, ...]], *, workers: int | None = None
) -> list[Any]:
    """fn(*task) of each task, in input order, on the verify pool's processes (the auditor
    recovers every published signature, the same work as ingest's). `fn` must be a module
    function (it is pickled by name); one task, or one worker, runs here."""
    workers = _cores() if workers is None else max(1, workers)
    if workers == 1 or len(tasks) <= 1:
        return [fn(*t) for t in tasks]
    pool = _get_pool(workers)
    futures = [pool.submit(fn, *t) for t in tasks]
    return [f.result() for f in futures]


# --- fork helpers (the close's export children) -----------------------------------------------


def can_fork() -> bool:
    """Whether this platform forks (not Windows)."""
    return hasattr(os, "fork")


def fork_child(work: Callable[[], Any], *, nice: int = 0) -> tuple[int, int]:
    """A forked child running `work`: (its pid, the read end of the pipe it reports through).

    The child shares the parent's memory copy-on-write; `work` must only read it and must
    take no lock another thread may have held at the fork (no database connection, no
    logging handler). It reports `work()` as JSON, or {"error": ...} whatever went wrong,
    and leaves by os._exit: no finalizer of the parent's objects runs in it. `nice`: its
    priority below the parent's.
    """
    read, write = os.pipe()
    pid = os.fork()
    if pid:
        os.close(write)
        return pid, read
    code = 1
    try:
        if nice:
            os.nice(nice)
        os.close(read)
        report = orjson.dumps(work())
        code = 0
    except BaseException as error:  # reported to the parent, whatever it is
        report = orjson.dumps({"error": f"{type(error).__name__}: {error}"})
    finally:
        try:
            with os.fdopen(write, "wb") as out:
                out.write(report)
        finally:
            os._exit(code)


def join_child(pid: int, fd: int) -> tuple[Any, int]:
    """Wait for a `fork_child`: (its report, its exit status); the report is
    {"error": ...} when it said nothing."""
    with os.fdopen(fd, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    report = orjson.loads(data) if data else {"error": f"exit status {status}"}
    return report, status


def kill_child(pid: int, fd: int) -> None:
    """Stop a `fork_child` at once and reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    os.close(fd)

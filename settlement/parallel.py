"""Process pools and fork helpers, used by edges and services (never by the domain)."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable
from typing import Any

import orjson

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

"""Small helpers for things on 127.0.0.1 that a user command (the demo's in-process API) also
needs: a free port, and polling with backoff until something is ready."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

from settlement.adapters.chain.tx import FIRST_POLL


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    delay = FIRST_POLL
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.1)

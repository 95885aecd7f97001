"""The process supervisor of `settlement serve`: one child process per component, each
restarted with backoff when it dies, all stopped on SIGTERM or SIGINT.

Children stay in serve's process group, so a signal to the group (a terminal's Ctrl-C, an
orchestrator stopping the group) reaches them and uvicorn's workers at once; serve also
forwards SIGTERM to each child, for a signal sent to its pid alone. Each child asks the
kernel for SIGTERM when serve dies (PR_SET_PDEATHSIG), so a killed serve leaves no orphan.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Sequence

log = logging.getLogger("settlement.serve")

CONFIG_EXIT = 2  # a child's bad settings or keys: a restart cannot fix them


@dataclasses.dataclass
class Child:
    """One component's process and its restart state."""

    name: str
    argv: Sequence[str]
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0  # monotonic
    failures: int = 0  # exits in a row that came soon after a start
    next_start: float = 0.0  # monotonic time of the next (re)start


class Supervisor:
    """Runs `children` until stopped. `first_backoff` doubles after each exit that came
    within `stable_after` seconds of its start, up to `max_backoff`; a child that ran
    longer restarts after `first_backoff`. A child exiting with code 2 (bad settings or
    keys) stops everything: serve exits 2."""

    def __init__(
        self,
        children: Sequence[Child],
        *,
        first_backoff: float = 1.0,
        max_backoff: float = 60.0,
        stable_after: float = 60.0,
        stop_timeout: float = 35.0,
    ) -> None:
        self.children = list(children)
        self.first_backoff = first_backoff
        self.max_backoff = max_backoff
        self.stable_after = stable_after
        self.stop_timeout = stop_timeout
        self.exit_code = 0
        self._stop = threading.Event()

    def request_stop(self, *_: object) -> None:
        self._stop.set()

    def run(self) -> int:
        """Start every child, keep them running until SIGTERM or SIGINT, stop them; the exit code."""
        previous = {
            sig: signal.signal(sig, self.request_stop) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            return self._run_without_signals()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _run_without_signals(self) -> int:
        """run() without its signal handlers (which only the main thread may set): stopped by
        request_stop()."""
        try:
            for child in self.children:
                self._start(child)
            while not self._stop.is_set():
                self._tick(time.monotonic())
                self._stop.wait(0.1)
        finally:
            self._stop_all()
        return self.exit_code

    def _tick(self, now: float) -> None:
        for child in self.children:
            if child.process is not None:
                code = child.process.poll()
                if code is None:
                    continue
                self._exited(child, code, now)
            elif now >= child.next_start and not self._stop.is_set():
                self._start(child)

    def _exited(self, child: Child, code: int, now: float) -> None:
        assert child.process is not None
        ran = now - child.started
        child.process = None
        how = f"signal {-code}" if code < 0 else f"code {code}"
        if code == CONFIG_EXIT:
            log.error(
                "%s exited with %s (bad settings or keys, see its error above): stopping serve",
                child.name,
                how,
            )
            self.exit_code = CONFIG_EXIT
            self._stop.set()
            return
        child.failures = child.failures + 1 if ran < self.stable_after else 1
        delay = min(self.max_backoff, self.first_backoff * 2 ** (child.failures - 1))
        child.next_start = now + delay
        log.warning(
            "%s exited with %s after %.1f s; restarting in %.1f s", child.name, how, ran, delay
        )

    def _start(self, child: Child) -> None:
        child.process = subprocess.Popen(
            list(child.argv), env=child.env, preexec_fn=functools.partial(_die_with, os.getpid())
        )
        child.started = time.monotonic()
        log.info("started %s (pid %d)", child.name, child.process.pid)

    def _stop_all(self) -> None:
        live = [c for c in self.children if c.process is not None and c.process.poll() is None]
        for child in live:
            assert child.process is not None
            with contextlib.suppress(ProcessLookupError):
                child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout
        for child in live:
            assert child.process is not None
            try:
                child.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error(
                    "%s did not stop within %.0f s: killing it", child.name, self.stop_timeout
                )
                child.process.kill()
                child.process.wait()
            log.info("stopped %s (%s)", child.name, _how(child.process.returncode))
            child.process = None


def _how(code: int) -> str:
    return f"signal {-code}" if code < 0 else f"exit {code}"


def _die_with(parent: int) -> None:  # pragma: no cover - in the child between fork and exec
    """Linux: SIGTERM to this child when serve (`parent`) dies, however it dies (SIGKILL too)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the process group still reaches it
        pass
    if os.getppid() != parent:  # serve died before prctl: do not outlive it
        os.kill(os.getpid(), signal.SIGTERM)

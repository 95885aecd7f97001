"""`settlement serve` as a child process on 127.0.0.1, for tests and benches that need the real
server.

The child leads its own process group, so one signal to the group reaches uvicorn's
workers too, and nothing is left running whatever the caller's outcome.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

import httpx

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class ServerProcess:
    """One `settlement serve` run; `env` is the child's whole environment (W2E_* settings)."""

    def __init__(
        self,
        env: Mapping[str, str],
        *,
        workers: int = 1,
        port: int | None = None,
        log: Path | None = None,
    ) -> None:
        self.env = dict(env)
        self.workers = workers
        self.port = port or free_port()
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self, timeout: float = 30.0) -> ServerProcess:
        out = self.log.open("ab") if self.log else subprocess.DEVNULL
        argv = [sys.executable, "-m", "settlement.cli", "serve", "--host", HOST]
        argv += ["--port", str(self.port), "--workers", str(self.workers)]
        # The API alone: serve would also run the scheduler, submitter and watchtower their
        # settings allow, and a test drives those itself.
        argv += ["--api", "--no-scheduler", "--no-submitter", "--no-watchtower"]
        self.proc = subprocess.Popen(
            argv, env=self.env, stdout=out, stderr=out, start_new_session=True
        )
        if self.log:
            out.close()  # type: ignore[union-attr]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"settlement serve exited with {self.proc.returncode}; see {self.log}"
                )
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(self.url + "/readyz", timeout=1.0).status_code == 200:
                    return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"settlement serve not ready after {timeout} s; see {self.log}")

    def pids(self) -> list[int]:
        """Every live process of the server's group: the supervisor and its workers."""
        if self.proc is None:
            return []
        pgid = self.proc.pid
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    stat = (entry / "stat").read_text()
                    # pgrp is the 3rd field after the parenthesised command name
                    if int(stat.rsplit(")", 1)[1].split()[2]) == pgid:
                        found.append(int(entry.name))
        return found

    def rss_mb(self) -> float:
        """Sum over the group's processes of each one's resident set now (VmRSS), in MB."""
        return self._status_kb("VmRSS:") / 1024

    def peak_rss_mb(self) -> float:
        """Sum over the group's processes of each one's peak resident set (VmHWM), in MB."""
        return self._status_kb("VmHWM:") / 1024

    def _status_kb(self, field: str) -> int:
        total_kb = 0
        for pid in self.pids():
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith(field):
                        total_kb += int(line.split()[1])
        return total_kb

    def cpu_seconds(self) -> float:
        """User + system CPU time so far of the group's live processes."""
        ticks = 0
        for pid in self.pids():
            with contextlib.suppress(OSError):
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                ticks += int(fields[11]) + int(fields[12])  # utime, stime
        return ticks / os.sysconf("SC_CLK_TCK")

    def kill(self) -> None:
        """SIGKILL to the whole group: no shutdown code runs, as in a crash."""
        self._signal(signal.SIGKILL)
        self._reap(10.0)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM to the group, SIGKILL after `timeout`; safe to call more than once."""
        if self.proc is None:
            return
        self._signal(signal.SIGTERM)
        if not self._reap(timeout):
            self._signal(signal.SIGKILL)
            self._reap(timeout)

    def _signal(self, sig: signal.Signals) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)

    def _reap(self, timeout: float) -> bool:
        assert self.proc is not None
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        # workers may outlive the supervisor for a moment: wait for the group to empty
        deadline = time.monotonic() + timeout
        while self.pids() and time.monotonic() < deadline:
            time.sleep(0.02)
        return not self.pids()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(
        self, typ: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

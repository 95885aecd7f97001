"""The anvil manager for tests and benches: find the npm-installed binary, run it on a free
port, always reap it."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import requests

from settlement.adapters.chain.local import free_port, wait_until
from settlement.errors import ChainError, ConfigError

__all__ = ["ROOT", "Anvil", "find_anvil", "free_port", "wait_until"]

ROOT = Path(__file__).resolve().parents[2]


def find_anvil(root: str | Path | None = None) -> str | None:
    """anvil's native binary from the npm package (so a kill reaches anvil itself, not the
    Node launcher), else node_modules/.bin/anvil, else anvil on PATH."""
    base = Path(root) if root else ROOT
    modules = base / "node_modules" / "@foundry-rs"
    for native in sorted(modules.glob("anvil-*/bin/anvil")):
        if os.access(native, os.X_OK):
            return str(native)
    launcher = base / "node_modules" / ".bin" / "anvil"
    if launcher.exists():
        return str(launcher)
    return shutil.which("anvil")


class Anvil:
    """An anvil process on 127.0.0.1 for tests, benches and demos; stop() always reaps it."""

    def __init__(
        self,
        binary: str | None = None,
        *,
        port: int | None = None,
        args: Sequence[str] = (),
        startup_timeout: float = 20,
    ) -> None:
        self.binary = binary or find_anvil()
        if self.binary is None:
            raise ConfigError("anvil not found: run scripts/setup (npm ci installs it)")
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = list(args)
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen[bytes] | None = None
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in __exit__

    def start(self) -> Anvil:
        cmd = [self.binary, "--host", "127.0.0.1", "--port", str(self.port), "--silent", *self.args]
        # Own process group: if the Node launcher is used, killing the group reaches anvil too.
        self.process = subprocess.Popen(
            cmd, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ChainError(
                    f"anvil exited with {self.process.returncode}: {self.output()[-500:]}"
                )
            try:
                r = requests.post(
                    self.url,
                    json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []},
                    timeout=1,
                )
                if r.ok:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.02)
        self.stop(kill=True)
        raise ChainError(f"anvil did not answer on {self.url} within {self.startup_timeout} s")

    def output(self) -> str:
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def stop(self, *, kill: bool = False) -> None:
        """SIGTERM (anvil dumps --state on the way out) or, with `kill`, SIGKILL (no dump)."""
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            sig = signal.SIGKILL if kill else signal.SIGTERM
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, sig)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        self.process = None

    def __enter__(self) -> Anvil:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop(kill=True)
        self._log.close()

"""The whole service as separate OS processes for chaos runs: a PostgreSQL schema of its own in
the shared server, anvil on a free port, a deployment made by `settlement deploy`, and the
`settlement` processes (API workers, close scheduler, submitter, watchtower), each in its own
process group so one SIGKILL takes a process and its children, as a crash would.

Keys are made here, funded on anvil, and handed to the processes through W2E_<ROLE>_KEY_ENV
variables naming CHAOS_<ROLE>_KEY: they are never printed or logged.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psycopg
from eth_account import Account

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

from support.anvil import Anvil, free_port  # noqa: E402

from settlement.adapters import chain as c  # noqa: E402

PG_BASE = os.environ.get("W2E_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
ROLES = ("admin", "poster", "guardian", "claimer")
FUND = 10**27  # base units minted to the admin and funded into the distributor
SETTLEMENT = [sys.executable, "-m", "settlement.cli"]

# Fault points (settlement/faults.py): each announces itself in the log the harness reads;
# the sleeps widen the windows a kill is aimed at (a close, a proposal, a correction).
FAULT_RULES = "ingest.commit:sleep=0.05;ingest.done;close.*:sleep=0.25;propose.*:sleep=0.25;correct.*:sleep=0.25"


class Proc:
    """One `settlement` command (or any argv) in its own process group, logging to a file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.name, self.argv, self.env, self.log = name, argv, env, log
        self.popen: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> Proc:
        out = self.log.open("ab")
        self.popen = subprocess.Popen(
            self.argv, env=self.env, stdout=out, stderr=out, start_new_session=True
        )
        out.close()
        self.starts += 1
        return self

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def pids(self) -> list[int]:
        """Every live process of the group: the command and its children (workers, forks)."""
        if self.popen is None:
            return []
        return group_pids(self.popen.pid)

    def kill(self) -> None:
        """SIGKILL to the whole group: no shutdown code runs."""
        self._signal(signal.SIGKILL)
        self._reap(10)

    def stop(self) -> None:
        self._signal(signal.SIGTERM)
        if not self._reap(15):
            self.kill()

    def _signal(self, sig: signal.Signals) -> None:
        if self.popen is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, sig)

    def _reap(self, timeout: float) -> bool:
        if self.popen is None:
            return True
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        deadline = time.monotonic() + timeout
        while group_pids(self.popen.pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        return not group_pids(self.popen.pid)

    def wait(self, timeout: float) -> int | None:
        assert self.popen is not None
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None


def group_pids(pgid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                stat = (entry / "stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[2]) == pgid:
                    found.append(int(entry.name))
    return found


def rss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total / 1024


class Stack:
    """Everything a run needs; `close()` stops every process and drops the schema."""

    def __init__(
        self,
        *,
        epoch_seconds: int = 6,
        grace_seconds: int = 2,
        challenge_period: int = 3,
        api_workers: int = 2,
        faults: bool = True,
        keep: bool = False,
    ) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="w2e-chaos-"))
        self.keep = keep
        self.schema = f"chaos_{secrets.token_hex(4)}"
        self.db_url = f"{PG_BASE}?options=-csearch_path%3D{self.schema}"
        self.fault_log = self.dir / "faults.log"
        self.api_workers = api_workers
        self.anvil: Anvil | None = None
        self.procs: dict[str, Proc] = {}
        self.epoch_seconds, self.grace_seconds = epoch_seconds, grace_seconds
        self.challenge_period = challenge_period
        self.faults = faults
        self.keys = {role: Account.create() for role in (*ROLES, "relayer")}
        self.api_port = free_port()
        self.api_url = f"http://127.0.0.1:{self.api_port}"
        self.admin_token = secrets.token_hex(16)
        self.env: dict[str, str] = {}
        self.deployment: dict[str, object] = {}
        self.chain_id = 31337
        self.distributor = "0x" + "5f" * 20  # the deployed one once start_chain ran

    # -- set-up -------------------------------------------------------------------------------

    def start_db(self) -> None:
        """The schema and the environment of every process (no chain: enough for a soak)."""
        with psycopg.connect(PG_BASE, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {self.schema}")
        env = {k: v for k, v in os.environ.items() if not k.startswith("W2E_")}
        env.update(
            {
                "W2E_DATABASE_URL": self.db_url,
                "W2E_DATA_DIR": str(self.dir / "epochs"),
                "W2E_GENESIS": str(int(time.time())),
                "W2E_EPOCH_SECONDS": str(self.epoch_seconds),
                "W2E_GRACE_SECONDS": str(self.grace_seconds),
                "W2E_SCHEDULER_INTERVAL": "0.5",
                "W2E_CHAIN_ID": str(self.chain_id),
                "W2E_DISTRIBUTOR": self.distributor,
                "W2E_DEPLOYMENT_FILE": str(self.dir / "deployment.json"),
                "W2E_CHAIN_POLL_INTERVAL": "0.1",
                "W2E_CHALLENGE_PERIOD": str(self.challenge_period),
                "W2E_RATE_LIMIT": "0",
                "W2E_ADMIN_TOKEN": self.admin_token,
                "W2E_LOG_CHUNK_BLOCKS": "100000",
            }
        )
        self.env = env

    def start_chain(self) -> None:
        """start_db, then anvil, funded keys and a deployment by `settlement deploy`."""
        # --block-time 1: time moves on the chain without transactions, so validAt passes.
        self.anvil = Anvil(args=["--block-time", "1"]).start()
        chain = c.connect(rpc_url=self.anvil.url)
        self.chain_id = chain.chain_id
        for account in self.keys.values():
            chain.set_balance(account.address, 10**22)
        self.start_db()
        env = self.env
        env["W2E_RPC_URL"] = self.anvil.url
        for role in ROLES:
            env[f"W2E_{role.upper()}_KEY_ENV"] = f"CHAOS_{role.upper()}_KEY"
            env[f"CHAOS_{role.upper()}_KEY"] = "0x" + bytes(self.keys[role].key).hex()
        if self.faults:
            env["W2E_FAULTS"] = f"log={self.fault_log};{FAULT_RULES}"
        self.env = env
        out = self.run(["deploy", "--mint", str(FUND), "--fund", str(FUND)], "deploy", timeout=120)
        self.deployment = json.loads(out)
        self.distributor = str(self.deployment["distributor"])
        env["W2E_DISTRIBUTOR"] = self.distributor

    def run(self, args: list[str], name: str, timeout: float = 300) -> str:
        """A one-shot `settlement` command; its stdout (stderr goes to its log)."""
        with (self.dir / f"{name}.log").open("ab") as log:
            done = subprocess.run(
                [*SETTLEMENT, *args],
                env=self.env,
                stdout=subprocess.PIPE,
                stderr=log,
                timeout=timeout,
                check=False,
            )
        if done.returncode != 0:
            raise RuntimeError(f"settlement {args[0]} exited {done.returncode}; see {log.name}")
        return done.stdout.decode()

    def define(self) -> None:
        d = self.distributor
        rpc = self.anvil.url if self.anvil else ""
        self.procs = {
            "api": Proc(
                "api",
                [
                    *SETTLEMENT,
                    "serve",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.api_port),
                    "--workers",
                    str(self.api_workers),
                    # The API alone: the scheduler, submitter and watchtower are processes of
                    # their own here, each killed on its own.
                    "--no-scheduler",
                    "--no-submitter",
                    "--no-watchtower",
                ],
                self.env,
                self.dir / "api.log",
            ),
            "scheduler": Proc(
                "scheduler",
                [*SETTLEMENT, "epochs", "schedule"],
                self.env,
                self.dir / "scheduler.log",
            ),
            "submitter": Proc(
                "submitter",
                [*SETTLEMENT, "submit", "--loop", "--interval", "0.5"],
                self.env,
                self.dir / "submitter.log",
            ),
            "watchtower": Proc(
                "watchtower",
                [
                    *SETTLEMENT,
                    "audit",
                    "--watch",
                    "--rpc",
                    rpc,
                    "--distributor",
                    d,
                    "--interval",
                    "1",
                    "--from-block",
                    str(self.deployment.get("block", 0)),
                ],
                self.env,
                self.dir / "watchtower.log",
            ),
        }

    def start_api(self) -> None:
        """Start (or restart) the API and wait until it answers /readyz (it migrates first)."""
        self.procs["api"].start()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if not self.procs["api"].alive():
                raise RuntimeError(f"settlement serve exited; see {self.dir / 'api.log'}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.api_url + "/readyz", timeout=2).status_code == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError("settlement serve not ready after 120 s")

    def restart(self, name: str) -> None:
        proc = self.procs[name]
        proc.kill()  # whatever is left of the group
        if name == "api":
            self.start_api()
        else:
            proc.start()

    # -- tear-down ----------------------------------------------------------------------------

    def close(self) -> None:
        for proc in self.procs.values():
            with contextlib.suppress(Exception):
                proc.stop()
        if self.anvil is not None:
            self.anvil.stop(kill=True)
        with contextlib.suppress(psycopg.Error), psycopg.connect(PG_BASE, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {self.schema} CASCADE")
        if not self.keep:
            shutil.rmtree(self.dir, ignore_errors=True)

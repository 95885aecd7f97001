"""The demo's plumbing: its clock, its in-process API server, throwaway keys and work
directory (settlement.sim.demo is the flow)."""

from __future__ import annotations

import contextlib
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from settlement.adapters import chain as c
from settlement.errors import InputError, SettlementError
from settlement.sim.world import World


class Clock:
    """Wall and CPU seconds per step; CPU counts every thread of this process (the API's too),
    so it says what a step costs whatever else the machine runs."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}

    def start(self) -> tuple[float, float]:
        return time.perf_counter(), time.process_time()

    def stop(self, step: str, mark: tuple[float, float], extra_cpu: float = 0.0) -> None:
        self.wall[step] = self.wall.get(step, 0.0) + time.perf_counter() - mark[0]
        self.cpu[step] = self.cpu.get(step, 0.0) + time.process_time() - mark[1] + extra_cpu


class Server:
    """uvicorn serving `app` on 127.0.0.1:`port` in a thread; `stop` always joins it."""

    def __init__(self, app: Any, port: int) -> None:
        import uvicorn

        self.url = f"http://127.0.0.1:{port}"
        config = uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="warning", access_log=False
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="demo-api", daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        c.wait_until(lambda: self.server.started or not self.thread.is_alive(), 30, "the API")
        if not self.server.started:
            raise SettlementError("the demo API did not start; see the log above")
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(30)


def throwaway_keys(chain: c.Chain) -> tuple[c.Key, c.Key, c.Key]:
    """Admin, poster and relayer keys made for this run and funded with the dev chain's own
    `anvil_setBalance`: the demo needs no key from anyone, and none outlives the process."""
    from eth_account import Account

    admin, poster, relayer = (
        c.Key(Account.create(), f"demo-{role}") for role in ("admin", "poster", "relayer")
    )
    for key in (admin, poster, relayer):
        chain.set_balance(key.address, 10**20)
        # A chain that is not a dev chain answers anvil_setBalance with an error, not money.
        if chain.w3.eth.get_balance(key.address) < 10**20:  # type: ignore[arg-type]
            raise InputError(
                "demo --rpc needs a dev chain that funds accounts with anvil_setBalance (anvil)"
            )
    return admin, poster, relayer


@contextlib.contextmanager
def workdir(directory: str | None) -> Iterator[Path]:
    if directory is not None:
        path = Path(directory)
        if path.exists() and any(path.iterdir()):
            raise InputError(
                f"--dir {path} is not empty: the demo starts from nothing, give a new one"
            )
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="w2e-demo-") as tmp:
        yield Path(tmp)


def own_keys(world: World, accounts: dict[str, str]) -> dict[str, c.Key]:
    """The simulated world's own keys of `accounts` (they never leave this process)."""
    from eth_account import Account

    secrets_of = {
        "0x" + a.hex(): s
        for addrs, keys in (
            (world.nodes, world.node_secrets),
            (world.viewers, world.viewer_secrets),
            (world.creators, world.creator_secrets),
        )
        for a, s in zip(addrs, keys, strict=True)
    }
    return {a: c.Key(Account.from_key(secrets_of[a]), f"demo-{cls}") for a, cls in accounts.items()}

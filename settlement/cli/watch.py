"""`settlement audit --watch`: the watchtower as a long-running command (its options are the
audit command's; this module runs it)."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from settlement.services.watchtower import VerdictRecorder, Watchtower

log = logging.getLogger("settlement.watchtower")


def run_watch(
    *,
    rpc: str | None,
    distributor: str | None,
    data: str | None,
    from_block: int | None,
    interval: float,
    metrics_port: int | None,
    metrics_host: str,
    pause_on_failure: bool,
    once: bool = False,
    recorder: VerdictRecorder | None = None,
) -> None:
    """Follow the distributor's proposals until interrupted: audit each pending root (the
    manifest check, then the full audit) and, with the guardian key, revoke one that fails.
    `recorder` keeps each verdict (serve's watchtower child: the store, for the explorer).
    Exit 2 on bad settings or keys, 3 on chain errors at start."""
    from settlement.cli.options import setup_command_logging
    from settlement.config import load_settings
    from settlement.errors import SettlementError

    # One line per event, text or JSON, every URL cut to scheme://host:port (not through
    # cli.common: it reaches the store, and the auditor's commands must not). httpx's line
    # per request would bury the verdicts: settlement.logs keeps it at WARNING.
    setup_command_logging(logging.INFO, component="watchtower")
    try:
        from settlement.services.watchtower import WatchMetrics, open_watchtower, run_step

        settings = load_settings()
        metrics = WatchMetrics()
        tower = open_watchtower(
            settings,
            data=data,
            rpc_url=rpc,
            distributor=distributor,
            from_block=from_block,
            pause_on_failure=pause_on_failure,
            metrics=metrics,
            recorder=recorder,
        )
        log.info(
            "watching %s from block %d%s%s",
            tower.distributor.address,
            tower.state.next_block,
            f", guardian {tower.guardian.address}" if tower.guardian else ", no guardian key",
            " (pause on failure)" if pause_on_failure else "",
        )
        if recorder is not None:
            log.info("verdicts recorded for the explorer")
        if once:
            run_step(tower)
            return
        if metrics_port is not None:
            from settlement.cli.options import serve_metrics

            serve_metrics(metrics_port, metrics_host, metrics.registry)
            log.info("metrics on http://%s:%d/metrics", metrics_host, metrics_port)
        _loop(tower, interval)
    except SettlementError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(error.exit_code) from None


def _loop(tower: Watchtower, interval: float) -> None:
    """One tick every `interval` seconds (a tick's audit may outlast many) until Ctrl-C or
    SIGTERM. Not an APScheduler job in jobs.py: that module loads the store stack, and the
    auditor and its watchtower reach no store adapter (tests/unit/test_architecture.py);
    one job on one thread needs no scheduler either."""
    import signal
    import threading

    from settlement.services.watchtower import run_step

    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.is_set():
            started = time.monotonic()
            run_step(tower)
            stop.wait(max(0.0, interval - (time.monotonic() - started)))
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)

"""The scheduler and submitter children of `settlement serve`: an APScheduler job each, its
metrics on a port of its own, stopped cleanly by SIGTERM or SIGINT (once or many times:
serve forwards SIGTERM and a group signal may arrive too)."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from typing import Any

import typer

log = logging.getLogger("settlement.serve")


class CloseMetrics:
    """The close scheduler's state as Prometheus metrics (default registry)."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        self.closed = Counter("w2e_epochs_closed", "epochs closed by this scheduler")
        self.last_closed = Gauge("w2e_last_closed_epoch", "the latest closed epoch in the store")
        self.close_seconds = Histogram(
            "w2e_close_seconds",
            "wall time of one epoch's close (sum of its stages)",
            buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
        )
        self.errors = Counter(
            "w2e_scheduler_errors", "failed scheduler ticks (a close or a prune), retried"
        )
        self.ticks = Gauge("w2e_scheduler_ticks", "scheduler ticks since this process started")
        self._errors_seen = 0

    def on_close(self, closed: Any) -> None:
        self.closed.inc()
        self.last_closed.set(closed.epoch)
        self.close_seconds.observe(sum(closed.stage_s.values()))

    def follow(self, job: Any) -> None:
        """Copy what the job counted since the last call (its ticks and kept errors)."""
        self.ticks.set(job.ticks)
        errors = len(job.errors)
        if errors > self._errors_seen:
            self.errors.inc(errors - self._errors_seen)
            self._errors_seen = errors


def run_job(component: str, metrics_port: int | None) -> None:
    """Run the close scheduler or the root submitter until SIGTERM or SIGINT."""
    from settlement.config import load_settings
    from settlement.errors import SettlementError

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        settings = load_settings()
        with contextlib.ExitStack() as stack:
            metrics: CloseMetrics | None = None
            job: Any
            if component == "scheduler":
                from settlement.adapters.db.epochs import EpochStore
                from settlement.adapters.db.store import open_store
                from settlement.jobs import CloseScheduler

                store = stack.enter_context(
                    open_store(
                        settings.database_url,
                        create=False,
                        sqlite_synchronous=settings.sqlite_synchronous,
                    )
                )
                from settlement.services.genesis import pin_genesis

                # Without W2E_GENESIS or a deployment record the genesis is the store's
                # (pinned by serve before it started this child): never the class default.
                settings = pin_genesis(settings, store, say=log.info)
                metrics = CloseMetrics()
                metrics.last_closed.set(EpochStore(store).last_closed())
                job = CloseScheduler(store, settings, on_close=metrics.on_close)
            else:
                from settlement.jobs import ChainScheduler
                from settlement.services.submit_loop import open_submitter

                submitter = stack.enter_context(open_submitter(settings))
                job = ChainScheduler(submitter, settings.submitter_interval)
            if metrics_port:
                from settlement.cli.options import serve_metrics

                serve_metrics(metrics_port, settings.metrics_host)
            job.start()
            log.info("%s running", component)
            try:
                while not stop.wait(0.5):
                    if metrics is not None:
                        metrics.follow(job)
            finally:
                job.shutdown()  # waits for a tick in progress (a close) to finish
            log.info("%s stopped", component)
    except SettlementError as error:
        log.error("%s: %s", component, error)
        raise typer.Exit(error.exit_code) from None

"""APScheduler wiring: close every due epoch, in order, and tick the root submitter, from
background schedulers.

Several instances may run against one PostgreSQL: a close holds a PostgreSQL advisory lock,
and an instance that finds it taken skips that tick (the holder closes the epoch, the next
tick finds it closed). SQLite stores are for one process: its lock is in-process only.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from settlement.adapters.db.epochs import EpochStore
from settlement.adapters.db.store import Store
from settlement.config import Settings
from settlement.services.close import ClosedEpoch, clock_of, close_epoch
from settlement.services.ingest import compact_balances, prune_sessions

if TYPE_CHECKING:
    from settlement.services.submit import Submitter

log = logging.getLogger(__name__)


# A catch-up longer than this many epochs says so, and reports progress this often.
CATCH_UP_NOTICE = 10
PROGRESS_SECONDS = 5.0


def close_due(
    store: Store,
    settings: Settings,
    now: int,
    *,
    wait_for_lock: bool = False,
    say: Callable[[str], None] | None = None,
) -> list[ClosedEpoch]:
    """Close every epoch whose cutoff has passed at `now`, oldest first.

    Returns the epochs this call closed (not those it found closed). Stops early, without
    error, when another instance holds the close lock. A catch-up of more than
    CATCH_UP_NOTICE epochs tells `say` so at its start, every PROGRESS_SECONDS, and at its end.
    """
    due = clock_of(settings).last_due(now)
    epochs = EpochStore(store)
    done: list[ClosedEpoch] = []
    last = epochs.last_closed()
    if last >= 1:
        # Returns the stored result, and puts back its manifest.json if a crash came
        # between the commit and the file's rename.
        close_epoch(store, settings, last, now=now, wait_for_lock=wait_for_lock)
    behind = due - last
    loud = say is not None and behind > CATCH_UP_NOTICE
    if loud:
        assert say is not None
        say(
            f"catching up {behind} due epochs ({last + 1}-{due}; genesis {settings.genesis}, "
            f"{settings.epoch_seconds} s epochs): each is closed and published, empty or not"
        )
    started = reported = time.monotonic()
    try:
        while True:
            last = epochs.last_closed()
            if last >= due:
                return done
            closed = close_epoch(store, settings, last + 1, now=now, wait_for_lock=wait_for_lock)
            if closed is None:  # another instance is closing: its epoch, not ours
                return done
            if not closed.already_closed:
                done.append(closed)
            if loud and time.monotonic() - reported >= PROGRESS_SECONDS:
                reported = time.monotonic()
                assert say is not None
                say(f"closed epoch {closed.epoch} of {due} ({len(done)} so far)")
    finally:
        if loud and done:
            assert say is not None
            empty = sum(1 for c in done if not c.proposes)
            say(
                f"closed {len(done)} epochs ({done[0].epoch}-{done[-1].epoch}, {empty} of "
                f"them without new rewards) in {time.monotonic() - started:.0f} s"
            )


class _DropSkippedRuns(logging.Filter):
    """APScheduler's "maximum number of running instances reached": a tick still running
    (a catch-up, a transaction being mined) is expected, and the tick logs what it does."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "maximum number of running instances reached" not in record.getMessage()


def _quiet_skipped_runs() -> None:
    logger = logging.getLogger("apscheduler.scheduler")
    if not any(isinstance(f, _DropSkippedRuns) for f in logger.filters):
        logger.addFilter(_DropSkippedRuns())


class CloseScheduler:
    """A BackgroundScheduler with one job: `close_due` every `settings.scheduler_interval` s.

    `clock` gives unix seconds (a test passes a fake one); `on_close` sees each closed epoch.
    """

    def __init__(
        self,
        store: Store,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.time,
        on_close: Callable[[ClosedEpoch], None] | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock
        self.on_close = on_close
        self.errors: list[BaseException] = []
        self.ticks = 0
        self._lock = threading.Lock()
        self._compacted_through = 0  # balance rows compacted through this closed epoch
        _quiet_skipped_runs()
        self._scheduler = BackgroundScheduler(timezone="UTC")
        self._scheduler.add_job(
            self.tick,
            IntervalTrigger(seconds=settings.scheduler_interval),
            id="close-due-epochs",
            max_instances=1,  # a tick still running makes the next one wait, not overlap
            coalesce=True,
            next_run_time=None,
        )

    @staticmethod
    def _say(message: str) -> None:
        log.info("%s", message)

    def tick(self) -> list[ClosedEpoch]:
        with self._lock:
            self.ticks += 1
        now = int(self.clock())
        try:
            closed = close_due(self.store, self.settings, now, say=self._say)
        except Exception as error:  # the job must survive: log, keep, retry next tick
            log.exception("closing due epochs failed; retrying at the next tick")
            with self._lock:
                self.errors.append(error)
            return []
        for c in closed:
            if len(closed) <= CATCH_UP_NOTICE:  # a catch-up said it in one summary line
                log.info("closed epoch %d root %s", c.epoch, c.root)
            if self.on_close is not None:
                self.on_close(c)
        self.prune(now)
        return closed

    def prune(self, now: int) -> int:
        """Retention (PROTOCOL 3): drop sessions no receipt can reach any more, once the
        buckets they touched are closed, so storage follows live sessions; and balance rows
        a later close superseded, so the close's balance read follows the accounts."""
        try:
            last = EpochStore(self.store).last_closed()
            pruned = prune_sessions(self.store, self.settings, now, last)
            compacted = None
            if last > self._compacted_through:  # once per closed epoch, not every tick
                compacted = compact_balances(self.store, last)
                if compacted is not None:
                    self._compacted_through = last
        except Exception as error:  # the job must survive: log, keep, retry next tick
            log.exception("pruning expired sessions failed; retrying at the next tick")
            with self._lock:
                self.errors.append(error)
            return 0
        if pruned:
            log.info("pruned %d expired sessions", pruned)
        if compacted:
            log.debug("compacted %d superseded balance rows", compacted)
        return pruned

    def start(self) -> None:
        self._scheduler.start()
        # First run now rather than one interval after start.
        self._scheduler.modify_job("close-due-epochs", next_run_time=datetime.now(UTC))

    def shutdown(self, wait: bool = True) -> None:
        self._scheduler.shutdown(wait=wait)


class ChainScheduler:
    """A BackgroundScheduler with one job every `interval` s: a submitter tick (reconcile,
    accept what is due, propose the latest closed epoch) then the Claimed indexer.

    One per store: two submitters on one poster key would race for its nonces.
    """

    def __init__(self, submitter: Submitter, interval: float) -> None:
        self.submitter = submitter
        self.ticks = 0
        _quiet_skipped_runs()
        self._scheduler = BackgroundScheduler(timezone="UTC")
        self._scheduler.add_job(
            self.tick,
            IntervalTrigger(seconds=interval),
            id="submit-roots",
            max_instances=1,  # a tick waiting on a transaction delays the next, never overlaps
            coalesce=True,
            next_run_time=None,
        )

    def tick(self) -> None:
        # Imported here: only a chain scheduler loads the chain stack (web3), not the closes.
        from settlement.services.claims import index_claims
        from settlement.services.funding import refresh_margin
        from settlement.services.submit_loop import run_step

        self.ticks += 1
        sub = self.submitter
        run_step(sub)
        try:
            index_claims(sub.store, sub.distributor, sub.deployment_block)
        except Exception:  # the job must survive: log and retry next tick
            log.exception("indexing Claimed events failed; retrying at the next tick")
        try:  # after the claims index, which the margin reads
            refresh_margin(sub.store, sub.settings, sub.distributor)
        except Exception:  # the job must survive: log and retry next tick
            log.exception("reading the distributor's funding margin failed; retrying next tick")

    def start(self) -> None:
        self._scheduler.start()
        self._scheduler.modify_job("submit-roots", next_run_time=datetime.now(UTC))

    def shutdown(self, wait: bool = True) -> None:
        self._scheduler.shutdown(wait=wait)


def run_until_interrupted(scheduler: CloseScheduler | ChainScheduler) -> None:
    """Start a scheduler and block the calling (CLI) thread until Ctrl-C, then shut it down."""
    scheduler.start()
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        scheduler.shutdown()

"""The loop: one `step` a tick reads new proposals, audits the pending one once, and acts on
a failure (revoke, pause, alert)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from settlement.adapters.chain import (
    PROPOSAL_EVENTS,
    ChainEvent,
    Distributor,
    PendingRoot,
    read_events,
    rpc_errors,
)
from settlement.adapters.keys import Key
from settlement.errors import (
    ChainError,
    ContractRevert,
    DataUnavailable,
    RpcUnavailable,
    SettlementError,
)
from settlement.services.watchtower.metrics import WatchMetrics
from settlement.services.watchtower.proposals import (
    PendingAudit,
    Proposal,
    Verdict,
    VerdictRecorder,
)

# The logger of the module this package was: operators filter on that name.
log = logging.getLogger("settlement.services.watchtower")

_FOLLOWED: Final = (*PROPOSAL_EVENTS, "RootAccepted", "RootRevoked")


@dataclass
class WatchState:
    """What the watchtower knows: every proposal since `next_block`'s start, the verdicts."""

    next_block: int
    proposals: dict[tuple[int, int], Proposal] = field(default_factory=dict)
    verdicts: dict[tuple[int, int], Verdict] = field(default_factory=dict)
    # Proposals whose failure was handled (revoked, or alerted): acted on once.
    handled: set[tuple[int, int]] = field(default_factory=set)
    # Failed proposals nothing has stopped yet (no key, accepted, revoke not sent): the alert.
    unstopped: set[tuple[int, int]] = field(default_factory=set)
    pending: Proposal | None = None


@dataclass(frozen=True, slots=True)
class Action:
    """What one tick did about one proposal, for the log and the tests."""

    proposal: Proposal
    verdict: Verdict
    did: str  # "left" | "revoked" | "revoked+paused" | "alert"
    message: str


class Watchtower:
    """One `step` per tick: read new events, audit the pending proposal once, act on a
    failure. Not thread-safe: one loop runs it (`cli.watch`)."""

    def __init__(
        self,
        distributor: Distributor,
        audit: PendingAudit,
        *,
        from_block: int,
        guardian: Key | None = None,
        pause_on_failure: bool = False,
        unavailable_margin: int = 120,
        metrics: WatchMetrics | None = None,
        say: Callable[[str], None] | None = None,
        recorder: VerdictRecorder | None = None,
    ) -> None:
        self.distributor = distributor
        self.recorder = recorder
        self.chain = distributor.chain
        self.audit = audit
        self.guardian = guardian
        self.pause_on_failure = pause_on_failure
        self.unavailable_margin = unavailable_margin
        self.metrics = metrics or WatchMetrics()
        self.say = say or (lambda message: log.info("%s", message))
        self.state = WatchState(next_block=from_block)
        # The window gauge runs on between ticks (an audit can take minutes): chain time
        # at the last read, advanced by this process's clock.
        self._chain_time = (0, time.monotonic())
        self.metrics.window_left.set_function(self._window_left)

    # -- time -------------------------------------------------------------------------------

    def _read_chain_time(self) -> int:
        with rpc_errors(self.chain.url):
            ts = int(self.chain.w3.eth.get_block("latest")["timestamp"])
        self._chain_time = (ts, time.monotonic())
        return ts

    def chain_now(self) -> float:
        ts, at = self._chain_time
        return ts + (time.monotonic() - at)

    def _window_left(self) -> float:
        p = self.state.pending
        if p is None:
            return 0.0
        return max(0.0, p.valid_at - self.chain_now())

    # -- one tick ---------------------------------------------------------------------------

    def step(self) -> list[Action]:
        head = self.chain.block_number()
        if head >= self.state.next_block:
            for e in read_events(self.distributor, self.state.next_block, head, names=_FOLLOWED):
                if e.name in PROPOSAL_EVENTS:
                    p = Proposal.of(e)
                    self.state.proposals[p.key] = p
                    self.metrics.seen.inc()
                    self.say(f"seen {p}: {p.data_uri}, valid at {p.valid_at}")
                else:
                    self.say(f"{e.name} {e.args['root']} of epoch {e.args['epoch']}")
                    self._settled(e)
            self.state.next_block = head + 1
        self._read_chain_time()
        pending = self.distributor.pending_root()
        current = self._proposal_of(pending)
        self.state.pending = current
        actions: list[Action] = []
        if current is not None and current.key not in self.state.verdicts:
            verdict = self._audit(current)
            if verdict is not None:
                self.state.verdicts[current.key] = verdict
                self._record(current, verdict)
        # Act on every failed proposal not yet handled: the one pending, and one that was
        # accepted (or revoked by someone else) while this tower audited it.
        for key, verdict in sorted(self.state.verdicts.items()):
            if not verdict.ok and key not in self.state.handled:
                actions.append(self._on_failure(self.state.proposals[key], verdict))
                self.state.handled.add(key)
            elif verdict.ok and key not in self.state.handled:
                p = self.state.proposals[key]
                actions.append(Action(p, verdict, "left", f"{p}: audit ok, left to be accepted"))
                self.state.handled.add(key)
        for a in actions:
            if a.did == "left":  # failures went to the log (error/warning) as they happened
                self.say(a.message)
        self.metrics.last_step.set(time.time())
        return actions

    def _settled(self, e: ChainEvent) -> None:
        """A failed proposal revoked (by anyone) is stopped; an accepted correction stops
        every failed root before it (its leaves replace theirs)."""
        latest = [p for p in self.state.proposals.values() if p.key < (e.block_number, e.log_index)]
        if not latest:
            return
        last = max(latest, key=lambda p: p.key)
        if e.name == "RootRevoked":
            self.state.unstopped.discard(last.key)
        elif e.name == "RootAccepted" and last.correction and last.root == e.args["root"]:
            self.state.unstopped = {k for k in self.state.unstopped if k > last.key}
        self.metrics.alert.set(1 if self.state.unstopped else 0)

    def _alert(self, p: Proposal) -> None:
        self.state.unstopped.add(p.key)
        self.metrics.alert.set(1)

    def _proposal_of(self, pending: PendingRoot | None) -> Proposal | None:
        """The event that proposed the pending root (the latest such, as a root may be
        proposed again after a revoke)."""
        if pending is None:
            return None
        found = [p for p in self.state.proposals.values() if p.is_pending(pending)]
        if not found:
            self.say(
                f"pending root {pending.root} of epoch {pending.epoch} has no proposal event "
                f"since block {min(self.state.proposals, default=(self.state.next_block, 0))[0]}"
                ": start the watchtower from an earlier block (--from-block)"
            )
            return None
        return max(found, key=lambda p: p.key)

    def _audit(self, p: Proposal) -> Verdict | None:
        """Audit `p`; None when its data could not be read and there is time to try again."""
        self.say(f"auditing {p}: {p.valid_at - self.chain_now():.0f} s left in its window")
        t = time.perf_counter()
        try:
            verdict = self.audit(p)
        except (DataUnavailable, ChainError) as error:
            # Not an answer about the data: the files or the chain's events could not be
            # read (network, RPC down). A good root must not be revoked for a blip, so it is
            # tried again while there is time; only inside the margin does it count.
            what = "dataset" if isinstance(error, DataUnavailable) else "chain"
            left = p.valid_at - self.chain_now()
            if left > self.unavailable_margin:
                self.say(f"{p}: {what} unavailable ({error}); trying again, {left:.0f} s left")
                return None
            verdict = Verdict(False, f"{what} unavailable {left:.0f} s before validAt: {error}")
        except SettlementError as error:
            verdict = Verdict(False, f"the audit could not complete: {error}")
        except Exception as error:  # a dataset that crashes the auditor is not shown correct
            log.exception("the audit of %s crashed", p)
            verdict = Verdict(False, f"the audit crashed: {type(error).__name__}: {error}")
        seconds = time.perf_counter() - t
        self.metrics.audited.inc()
        self.metrics.last_audited_epoch.set(p.epoch)
        self.metrics.last_audit_seconds.set(seconds)
        if not verdict.ok:
            self.metrics.failed.inc()
        self.say(
            f"audit of {p}: {'ok' if verdict.ok else 'FAILED'} in {seconds:.1f} s, "
            f"{p.valid_at - self.chain_now():.0f} s left in its window"
        )
        return verdict

    def _record(self, p: Proposal, verdict: Verdict) -> None:
        """Keep the verdict where the explorer reads it; a store that cannot take it is
        logged, never a reason to stop watching (or to skip the revoke that follows)."""
        if self.recorder is None:
            return
        try:
            self.recorder(p, verdict)
        except Exception as error:
            log.error("could not record the verdict on %s: %s: %s", p, type(error).__name__, error)

    def _on_failure(self, p: Proposal, verdict: Verdict) -> Action:
        """Revoke `p` if it is still pending (and pause with --pause-on-failure)."""
        why = verdict.summary.strip().splitlines()
        reason = why[0] if why else "audit failed"
        if self.guardian is None:
            self._alert(p)
            msg = f"ALERT: {p} failed its audit ({reason}); no guardian key: not revoked"
            log.error("%s", msg)
            return Action(p, verdict, "alert", msg)
        if not p.is_pending(self.distributor.pending_root()):
            # Accepted (or revoked by someone else) while it was audited: claims against a
            # bad accepted root only a pause stops.
            self._alert(p)
            msg = f"ALERT: {p} failed its audit ({reason}) and is no longer pending"
            did = "alert"
            if self.pause_on_failure:
                self._pause()
                msg += "; paused the distributor so a correction can follow"
            log.error("%s", msg)
            return Action(p, verdict, did, msg)
        try:
            mined = self.chain.transact(self.guardian, self.distributor.revoke_root())
        except ContractRevert as error:  # NoPendingRoot: accepted in between
            self._alert(p)
            msg = f"ALERT: {p} failed its audit ({reason}); revokeRoot refused: {error}"
            if self.pause_on_failure:
                self._pause()
                msg += "; paused the distributor"
            log.error("%s", msg)
            return Action(p, verdict, "alert", msg)
        except ChainError:
            # Not sent or not mined (no gas, RPC down): the failure stays unhandled, so the
            # next tick tries again while the root is still pending.
            self._alert(p)
            raise
        self.state.unstopped.discard(p.key)
        self.metrics.alert.set(1 if self.state.unstopped else 0)
        self.metrics.revoked.inc()
        if self.state.pending == p:
            self.state.pending = None
        did = "revoked"
        msg = f"revoked {p} in block {mined.block_number} ({mined.tx_hash}): {reason}"
        if self.pause_on_failure:
            self._pause()
            did = "revoked+paused"
            msg += "; paused the distributor so a correction can follow"
        log.warning("%s", msg)
        return Action(p, verdict, did, msg)

    def _pause(self) -> None:
        assert self.guardian is not None
        if self.distributor.paused():
            return
        self.chain.transact(self.guardian, self.distributor.pause())
        self.metrics.paused.inc()


def run_step(tower: Watchtower) -> list[Action]:
    """One tick for a job: an unreachable RPC or a refused transaction is logged and tried
    again at the next tick (the verdicts already reached are kept)."""
    try:
        return tower.step()
    except RpcUnavailable as error:
        log.warning("watchtower: %s", error)
    except ChainError as error:
        log.error("watchtower: %s", error)
    return []

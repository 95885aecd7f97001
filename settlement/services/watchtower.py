"""The watchtower (`settlement audit --watch`): follows the distributor's proposals, audits
each pending root inside its challenge window, and with the guardian key revokes one that
fails (optionally pausing too, so a correction can follow). Its state is Prometheus metrics.

What "audit" means is a function passed in (`PendingAudit`): the auditor of
`services.audit` on the proposal's dataset. This module decides when to audit and what to do
with the verdict, never how to recompute a root.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge

from settlement.adapters import files as publish
from settlement.adapters.chain import (
    GUARDIAN_ROLE,
    PROPOSAL_EVENTS,
    ChainEvent,
    Distributor,
    PendingRoot,
    read_events,
    rpc_errors,
)
from settlement.adapters.keys import Key
from settlement.config import Settings
from settlement.domain import dataset
from settlement.errors import (
    ChainError,
    ConfigError,
    ContractRevert,
    DataUnavailable,
    DeploymentMissing,
    RpcUnavailable,
    SettlementError,
    redact,
)
from settlement.services import audit as auditor
from settlement.services.audit import ChainView

log = logging.getLogger(__name__)

_FOLLOWED: Final = (*PROPOSAL_EVENTS, "RootAccepted", "RootRevoked")


@dataclass(frozen=True, slots=True)
class Proposal:
    """One RootProposed or CorrectionProposed event: what the watchtower audits."""

    epoch: int
    root: str
    cumulative_total: int
    data_hash: str
    valid_at: int
    data_uri: str
    correction: bool
    block_number: int
    log_index: int
    tx_hash: str

    @classmethod
    def of(cls, e: ChainEvent) -> Proposal:
        return cls(
            epoch=int(e.args["epoch"]),
            root=e.args["root"],
            cumulative_total=int(e.args["cumulativeTotal"]),
            data_hash=e.args["dataHash"],
            valid_at=int(e.args["validAt"]),
            data_uri=e.args["dataURI"],
            correction=e.name == "CorrectionProposed",
            block_number=e.block_number,
            log_index=e.log_index,
            tx_hash=e.tx_hash,
        )

    @property
    def key(self) -> tuple[int, int]:
        return (self.block_number, self.log_index)

    def is_pending(self, pending: PendingRoot | None) -> bool:
        return (
            pending is not None
            and pending.root == self.root
            and pending.data_hash == self.data_hash
            and pending.valid_at == self.valid_at
        )

    def __str__(self) -> str:
        what = "correction" if self.correction else "root"
        return f"{what} {self.root} of epoch {self.epoch} (block {self.block_number})"


@dataclass(frozen=True, slots=True)
class Verdict:
    """An audit's answer on one proposal: `ok`, and when not, what did not match (the
    auditor's first mismatches, one a line)."""

    ok: bool
    summary: str = ""


# The audit of one pending proposal. Raises DataUnavailable when it could not read the data
# (tried again next tick; a failure once the window is about to close). Any other
# SettlementError is a failure: a dataset that breaks the auditor cannot be shown correct.
PendingAudit = Callable[[Proposal], Verdict]


class WatchMetrics:
    """The watchtower's Prometheus metrics, in a registry of its own (one watchtower a
    process; tests make several)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.seen = Counter(
            "w2e_watchtower_roots_seen", "proposals (roots and corrections) seen", registry=r
        )
        self.audited = Counter(
            "w2e_watchtower_roots_audited", "pending proposals audited", registry=r
        )
        self.failed = Counter(
            "w2e_watchtower_roots_failed", "pending proposals whose audit failed", registry=r
        )
        self.revoked = Counter(
            "w2e_watchtower_roots_revoked",
            "failed proposals revoked by this watchtower",
            registry=r,
        )
        self.paused = Counter(
            "w2e_watchtower_pauses",
            "pauses sent by this watchtower (--pause-on-failure)",
            registry=r,
        )
        self.last_audited_epoch = Gauge(
            "w2e_watchtower_last_audited_epoch", "epoch of the last proposal audited", registry=r
        )
        self.last_audit_seconds = Gauge(
            "w2e_watchtower_last_audit_seconds", "seconds the last audit took", registry=r
        )
        self.window_left = Gauge(
            "w2e_watchtower_window_seconds_left",
            "seconds until the pending root's validAt (chain time; 0: none pending or past)",
            registry=r,
        )
        self.alert = Gauge(
            "w2e_watchtower_alert",
            "1 while a failed root is not stopped: no guardian key, the revoke not sent yet, "
            "or accepted (until a correction is accepted)",
            registry=r,
        )
        self.last_step = Gauge(
            "w2e_watchtower_last_step_timestamp", "unix time of the last completed tick", registry=r
        )

    def value(self, name: str) -> float:
        """A metric's current value by its exposed name (counters: NAME_total)."""
        v = self.registry.get_sample_value(name)
        return 0.0 if v is None else v


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
    ) -> None:
        self.distributor = distributor
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
        except DataUnavailable as error:
            left = p.valid_at - self.chain_now()
            if left > self.unavailable_margin:
                self.say(f"{p}: dataset unavailable ({error}); trying again, {left:.0f} s left")
                return None
            verdict = Verdict(False, f"dataset unavailable {left:.0f} s before validAt: {error}")
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


# -- audits ---------------------------------------------------------------------------------


def manifest_audit(read: Callable[[str], bytes] = publish.read_uri) -> PendingAudit:
    """The check every proposal gets first, in milliseconds: the manifest at its dataURI
    hashes to its dataHash and names its epoch, root and total (and `corrects` exactly for
    a correction). What it cannot see (the dataset behind the manifest) the full audit does.
    """

    def check(p: Proposal) -> Verdict:
        raw = read(p.data_uri)
        found = "0x" + dataset.data_hash(raw).hex()
        if found != p.data_hash:
            return Verdict(
                False,
                f"manifest at {redact(p.data_uri)}: keccak256 is {found}, the proposal's "
                f"dataHash is {p.data_hash}",
            )
        try:
            m = orjson.loads(raw)
            named = {
                "epoch": int(m["epoch"]),
                "root": str(m["root"]).lower(),
                "cumulativeTotal": int(m["cumulativeTotal"]),
                "corrects": "corrects" in m,
            }
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            return Verdict(False, f"manifest at {redact(p.data_uri)} is not a manifest: {error}")
        expected = {
            "epoch": p.epoch,
            "root": p.root,
            "cumulativeTotal": p.cumulative_total,
            "corrects": p.correction,
        }
        wrong = [
            f"{k}: manifest {named[k]}, proposal {expected[k]}"
            for k in expected
            if named[k] != expected[k]
        ]
        return Verdict(not wrong, "\n".join(f"manifest vs proposal, {w}" for w in wrong))

    return check


def chained(*audits: PendingAudit) -> PendingAudit:
    """Run `audits` in order; the first failure is the verdict (cheap checks go first)."""

    def run(p: Proposal) -> Verdict:
        for audit in audits:
            verdict = audit(p)
            if not verdict.ok:
                return verdict
        return Verdict(True)

    return run


class FullAudit:
    """The auditor (`services.audit`) on a pending proposal: every manifest back to the
    first replayed, the epochs the proposal would add (after the accepted one, up to its
    own) audited in full, signatures included, and the proposal's root and total checked
    against its manifest.

    The auditor sees the chain as the proposal would leave it: proposals revoked before it
    are left out with their revocations (they changed nothing; the tower may have revoked
    them itself, and a bad root revoked must not fail every later audit of its epoch).
    """

    def __init__(
        self,
        distributor: Distributor,
        *,
        from_block: int,
        data: str | None = None,
        workers: int | None = None,
    ) -> None:
        self.distributor = distributor
        self.from_block = from_block
        self.data = data
        self.workers = workers

    def __call__(self, p: Proposal) -> Verdict:
        accepted = self.distributor.current_epoch()
        epochs = [p.epoch] if p.correction else list(range(accepted + 1, p.epoch + 1))
        source = auditor.open_source(self.data or auditor.split_data_uri(p.data_uri)[0])
        try:
            report = auditor.audit(
                source,
                _AsProposed(self.distributor, self.from_block, p),
                epochs or [p.epoch],
                workers=self.workers,
            )
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()  # an HTTP source's downloads: one dataset a proposal, for days
        shown = [str(m) for m in report.mismatches[:5]]
        more = len(report.mismatches) - len(shown) + report.suppressed
        if more:
            shown.append(f"... and {more} more")
        return Verdict(report.ok, "\n".join(shown))


def _as_proposed(events: list[ChainEvent], p: Proposal) -> list[ChainEvent]:
    """`events` up to `p`'s own proposal, less the proposals revoked before it and their
    RootRevoked (each proposal is revoked, accepted or pending before the next one)."""
    out: list[ChainEvent] = []
    open_at: int | None = None  # index in `out` of the proposal still pending
    for e in events:
        if (e.block_number, e.log_index) > p.key:
            break
        if e.name in PROPOSAL_EVENTS:
            open_at = len(out)
        elif e.name == "RootRevoked" and open_at is not None:
            del out[open_at : open_at + 1]
            open_at = None
            continue
        elif e.name == "RootAccepted":
            open_at = None
        out.append(e)
    return out


class _AsProposed(ChainView):
    """The auditor's view of the distributor, its events the chain as `p` would leave it."""

    def __init__(self, distributor: Distributor, from_block: int, p: Proposal) -> None:
        super().__init__(distributor, from_block)
        self.proposal = p

    def events(self, refresh: bool = False) -> list[ChainEvent]:
        return _as_proposed(super().events(refresh), self.proposal)


# -- wiring for the CLI ---------------------------------------------------------------------


def open_watchtower(
    settings: Settings,
    audit: PendingAudit | None = None,
    *,
    data: str | None = None,
    rpc_url: str | None = None,
    distributor: str | None = None,
    from_block: int | None = None,
    pause_on_failure: bool = False,
    metrics: WatchMetrics | None = None,
    say: Callable[[str], None] | None = None,
) -> Watchtower:
    """A Watchtower over `rpc_url` (default W2E_RPC_URL) and `distributor` (default: the
    deployment record's), from `from_block` (default: the deployment's block, else 0), with
    the guardian key when one is configured (W2E_GUARDIAN_KEYSTORE or the variable
    W2E_GUARDIAN_KEY_ENV names); without one it audits and alerts but cannot revoke.
    `audit` defaults to the manifest check then the full audit, of the files at each
    proposal's dataURI or under `data` (a folder or an http(s) base)."""
    from settlement.adapters.chain import connect, load_deployment
    from settlement.adapters.keys import load_optional_key

    chain = connect(settings, rpc_url=rpc_url)
    if chain.embedded:
        raise ConfigError(
            "no RPC: the watchtower follows a live chain; give --rpc URL or set W2E_RPC_URL"
        )
    deployment = None
    if distributor is None or from_block is None:
        try:
            deployment = load_deployment(settings.deployment_file, chain)
        except DeploymentMissing:
            if distributor is None:
                raise
    address = distributor or (deployment.distributor if deployment else "")
    start = from_block if from_block is not None else (deployment.block if deployment else 0)
    d = Distributor(chain, address)
    if not d.has_code():
        raise ConfigError(
            f"no contract at {address} on chain {chain.chain_id}: check --distributor"
        )
    guardian = load_optional_key(settings, "guardian")
    tower = Watchtower(
        d,
        audit or chained(manifest_audit(), FullAudit(d, from_block=start, data=data)),
        from_block=start,
        guardian=guardian,
        pause_on_failure=pause_on_failure,
        metrics=metrics,
        say=say,
    )
    if guardian is None and pause_on_failure:
        raise ConfigError(
            "--pause-on-failure needs the guardian key: set W2E_GUARDIAN_KEYSTORE or the "
            "variable W2E_GUARDIAN_KEY_ENV names"
        )
    if guardian is None:
        tower.say(
            "no guardian key: failed roots are reported (metric w2e_watchtower_alert), not revoked"
        )
    elif not d.has_role(GUARDIAN_ROLE, guardian.address):
        raise ConfigError(
            f"the guardian key ({guardian.address}) does not hold GUARDIAN_ROLE on {address}: "
            "it could not revoke; check W2E_GUARDIAN_KEYSTORE / W2E_GUARDIAN_KEY_ENV"
        )
    return tower

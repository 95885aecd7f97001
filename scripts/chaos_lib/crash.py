"""`scripts/chaos crash`: SIGKILL a random service process at a random moment, aimed in turn at
each phase (ingest, a close, a proposal between its send and its receipt, a correction),
restart it, check every invariant (checks.py), repeat.

Kills are aimed through the fault points (settlement/faults.py): the harness waits for the
target process to announce the phase, then kills it inside the point's short sleep. What a
kill really hit is read back from the announcements, not assumed: a kill counts for a phase
only if the process's last announced point was inside it when the signal went.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from settlement.adapters import chain as c
from settlement.adapters.db import submitter as sdb
from settlement.adapters.db.store import open_store
from settlement.domain.merkle import MerkleTree
from settlement.errors import SettlementError

from .checks import CheckResult, check_all
from .stack import SETTLEMENT, Proc, Stack
from .traffic import Acked, Players, World

# Points that mean "inside" a phase; anything else (or nothing) is idle for that process.
INSIDE = {
    "ingest.commit": "ingest",
    "close.begin": "close",
    "close.commit": "close",
    "close.committed": "close",
    "propose.prepared": "proposal (signed, not sent)",
    "propose.sent": "proposal (sent, no receipt)",
}
# Where a killed `settlement correct` was, by its last announced point.
CORRECTION_STAGE = {
    None: "before publishing",
    "correct.published": "published, not proposed",
    "propose.prepared": "signed, not sent",
    "propose.sent": "sent, no receipt",
    "propose.mined": "mined, not accepted",
}
AIM = {
    "ingest": ("api", ("ingest.commit",)),
    "close": ("scheduler", ("close.begin", "close.commit", "close.committed")),
    "proposal": ("submitter", ("propose.sent", "propose.prepared")),
}
PLAN = ("ingest", "close", "proposal", "random", "correction")
CORRECTION_AIMS = ("correct.published", "propose.prepared", "propose.sent")


class FaultLog:
    """Reads the announcements `t pid name` the fault points append to one file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines: list[tuple[float, int, str]] = []
        self.offset = 0

    def poll(self) -> None:
        if not self.path.exists():
            return
        with self.path.open("rb") as f:
            f.seek(self.offset)
            data = f.read()
        end = data.rfind(b"\n") + 1
        self.offset += end
        for line in data[:end].decode().splitlines():
            t, pid, name = line.split()
            self.lines.append((float(t), int(pid), name))

    def wait_for(
        self,
        pids: set[int],
        names: tuple[str, ...],
        since: float,
        timeout: float,
        alive: Callable[[], bool] = lambda: True,
    ) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            gone = not alive()  # read before the poll: a point announced before exit counts
            self.poll()
            for t, pid, name in reversed(self.lines):
                if t < since:
                    break
                if pid in pids and name in names:
                    return True
            if gone:  # it exited (e.g. a correction refused): nothing left to aim at
                return False
            time.sleep(0.005)
        return False

    def last(self, pids: set[int], before: float) -> str | None:
        self.poll()
        for t, pid, name in reversed(self.lines):
            if t <= before and pid in pids:
                return name
        return None


@dataclass
class CrashReport:
    iterations: int = 0
    kills_by_phase: Counter[str] = field(default_factory=Counter)
    kills_by_process: Counter[str] = field(default_factory=Counter)
    aimed_missed: int = 0  # aimed kills whose phase did not come within the wait
    claims: int = 0
    checks: list[CheckResult] = field(default_factory=list)
    final: CheckResult | None = None
    seconds: float = 0.0
    acked_count: int = 0
    incidents: list[str] = field(default_factory=list)


class Crash:
    def __init__(
        self,
        stack: Stack,
        iterations: int,
        seed: int,
        audit_every: int,
        budget_s: float | None = None,
    ) -> None:
        self.stack = stack
        self.budget_s = budget_s  # no new iteration after this many seconds: finish instead
        self.iterations = iterations
        self.rng = random.Random(seed)
        self.audit_every = audit_every
        self.log = FaultLog(stack.fault_log)
        self.report = CrashReport()
        self.acked = Acked()
        self.world: World | None = None
        self.players: Players | None = None
        self.chain: c.Chain | None = None
        self.distributor: c.Distributor | None = None
        self.last_landed = ""
        self.corrections = 0

    # -- set-up ---------------------------------------------------------------------------

    def start(self) -> None:
        s = self.stack
        s.start_chain()
        assert s.anvil is not None
        self.chain = c.connect(rpc_url=s.anvil.url, poll_interval=0.05)
        self.distributor = c.Distributor(self.chain, str(s.deployment["distributor"]))
        self.world = World.make(self.chain.chain_id, str(s.deployment["distributor"]))
        from settlement.services.registry import load_registries

        with open_store(s.db_url) as store:  # migrates the schema, then the registries
            load_registries(store, self.world.registries)
        s.define()
        s.start_api()
        for name in ("scheduler", "submitter", "watchtower"):
            s.procs[name].start()
        self.players = Players(self.world, s.api_url, self.acked).start()

    def key(self, role: str) -> c.Key:
        return c.Key(self.stack.keys[role], role)

    def guardian(self, call: c.Call) -> None:
        """A pause or unpause: the watchtower holds the guardian key too (a revoke of its own
        takes a nonce), so the next nonce is read from the chain each time."""
        assert self.chain is not None
        key = self.key("guardian")
        self.chain.nonces.resync(key.address)
        self.chain.transact(key, call)

    # -- one kill -------------------------------------------------------------------------

    def kill(self, proc: Proc, aimed: tuple[str, ...] | None) -> str:
        """SIGKILL `proc`'s group, aimed at the announcement of one of `aimed` (or at a random
        moment); returns the phase the kill really landed in."""
        since = time.time()
        if aimed:
            pids = set(proc.pids())
            # API workers and forked children: any process of the group counts.
            hit = self.log.wait_for(pids, aimed, since, timeout=60, alive=proc.alive)
            if not hit:
                self.report.aimed_missed += 1
            else:
                # inside the point's sleep (stack.FAULT_RULES: 0.05 s at ingest, else 0.25 s)
                time.sleep(self.rng.uniform(0, 0.02 if aimed == ("ingest.commit",) else 0.15))
        else:
            time.sleep(self.rng.uniform(0.1, 3.0))
        pids = set(proc.pids())
        at = time.time()
        proc.kill()
        last = self.log.last(pids, at)
        if proc.name == "correct":
            return f"correction ({CORRECTION_STAGE.get(last, last)})"
        phase = INSIDE.get(last or "", f"idle ({proc.name})")
        self.report.kills_by_process[proc.name] += 1
        return phase

    def iteration(self, i: int, phase: str) -> None:
        s = self.stack
        if phase == "correction":
            landed = self.correction()
        else:
            if phase == "random":
                name = self.rng.choice(sorted(s.procs))
                aimed = None
            else:
                name, aimed = AIM[phase]
                if phase == "proposal":  # either side of the broadcast, in turn
                    aimed = aimed[i // len(PLAN) % 2 :][:1]
            landed = self.kill(s.procs[name], aimed)
            s.restart(name)
        self.report.kills_by_phase[landed] += 1
        self.last_landed = landed
        self.claim_some()
        audit = self.audit_every > 0 and (i + 1) % self.audit_every == 0
        self.report.checks.append(check_all(s, self.acked, audit=audit))

    # -- a correction, killed in the middle ------------------------------------------------

    def correction(self) -> str:
        """Pause, run `settlement correct --wait`, SIGKILL it mid-way, run it again until the
        correction is accepted, unpause. The submitter is stopped meanwhile: one process per
        poster key (it would otherwise drive the same proposal row)."""
        s, d, chain = self.stack, self.distributor, self.chain
        assert d is not None and chain is not None
        s.procs["submitter"].stop()
        for _ in range(10):
            self._no_pending_root()
            if d.root() == "0x" + "00" * 32:  # nothing accepted yet: nothing to correct
                s.procs["submitter"].start()
                return "idle (no root to correct yet)"
            self.guardian(d.pause())
            if d.pending_root() is None:
                break
            # A root mined just before the pause (its transaction was already out): ordinary
            # acceptance waits for an unpause, and a correction cannot go over it. Again.
            self.guardian(d.unpause())
        else:
            raise RuntimeError("could not pause without a pending root in 10 tries")
        proc = Proc("correct", [*SETTLEMENT, "correct", "--wait"], s.env, s.dir / "correct.log")
        proc.start()
        # In turn: after publishing, after signing, after sending (each point comes after
        # the one before, so aiming at a later one lets the run go further).
        aim = CORRECTION_AIMS[self.corrections % len(CORRECTION_AIMS)]
        self.corrections += 1
        landed = self.kill(proc, (aim,))
        for _ in range(6):  # a run may fail on its own (an epoch closed meanwhile): again
            again = Proc("correct", proc.argv, s.env, s.dir / "correct.log").start()
            if again.wait(300) == 0:
                break
        else:  # a finding, not a reason to stop the run: reported, counted as a problem
            self.report.incidents.append(
                f"settlement correct did not succeed in 6 runs; see {s.dir / 'correct.log'}"
            )
        self.guardian(d.unpause())
        s.procs["submitter"].start()
        return landed

    def _no_pending_root(self) -> None:
        """Wait until no root is pending, accepting a due one (anyone may)."""
        d, chain = self.distributor, self.chain
        assert d is not None and chain is not None
        deadline = time.monotonic() + 60
        while (pending := d.pending_root()) is not None:
            if time.time() > pending.valid_at + 1:
                with contextlib.suppress(SettlementError):
                    chain.transact(self.key("relayer"), d.accept_root())
            if time.monotonic() > deadline:
                raise RuntimeError("a pending root was not accepted within 60 s")
            time.sleep(0.5)

    # -- claims: some accounts claim against the accepted root -----------------------------

    def claim_some(self) -> None:
        d = self.distributor
        assert d is not None
        try:
            root = d.root()
            if root == "0x" + "00" * 32 or d.paused():
                return
            with open_store(self.stack.db_url, create=False, pool_size=1) as store:
                row = sdb.SubmitterStore(store).latest_accepted(root)
            if row is None or row.dump_path is None:
                return
            tree = MerkleTree.load(Path(row.dump_path).read_bytes())
            for account, _ in self.rng.sample(tree.values, min(2, len(tree.values))):
                info = c.claim_info(d, tree, account)
                if info.claimable > 0:
                    c.send_claim(self.key("relayer"), d, info)
                    self.report.claims += 1
        except SettlementError:
            pass  # a root accepted or a pause between the reads: claim next time

    # -- the run ----------------------------------------------------------------------------

    def run(self) -> CrashReport:
        t0 = time.monotonic()
        try:
            self.start()
            time.sleep(self.stack.epoch_seconds + self.stack.grace_seconds)  # a first close
            plan = list(PLAN)
            for i in range(self.iterations):
                if self.budget_s is not None and time.monotonic() - t0 > self.budget_s:
                    print(f"time budget spent: stopping after {i} iterations", flush=True)
                    break
                if i % len(plan) == 0:
                    head, tail = plan[:3], plan[3:]
                    self.rng.shuffle(head)
                    plan = head + tail
                self.iteration(i, plan[i % len(plan)])
                self.report.iterations = i + 1
                last = self.report.checks[-1]
                print(
                    f"iteration {i + 1}/{self.iterations}: {plan[i % len(plan)]} -> "
                    f"{self.last_landed}; acknowledged {self.acked.count}, epochs "
                    f"{last.epochs_closed}, accepted epoch {last.accepted_epoch}, "
                    f"problems {len(last.problems)}",
                    flush=True,
                )
            self.finish()
        finally:
            if self.players is not None:
                self.players.stop()
            self.report.seconds = time.monotonic() - t0
            self.stack.close()
        return self.report

    def finish(self) -> None:
        """Traffic stops; wait for the last receipts' epoch to close and its root to be
        accepted (or 90 s); then every check, the auditor included."""
        assert self.players is not None and self.distributor is not None
        self.players.stop()
        s = self.stack
        time.sleep(s.epoch_seconds + s.grace_seconds + 2)  # the last receipts' epoch closes
        from settlement.adapters.db.epochs import EpochStore

        with open_store(s.db_url, create=False, pool_size=1) as store:
            # epochs without new balances propose nothing: wait for the last that does
            target = max(
                (e.epoch for e in EpochStore(store).list(limit=100_000) if e.proposes), default=0
            )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if self.distributor.current_epoch() >= target:
                    break
            except SettlementError:
                pass
            time.sleep(1)
        self.report.final = check_all(s, self.acked, audit=True)

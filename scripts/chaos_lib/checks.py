"""The invariants a crash must never break, read from the database, the chain and the published
files (not from any process's memory):

- every receipt acknowledged with a 200 and accepted/duplicate is stored (its key's best
  stored receipt has counters at least as high);
- closed epochs are 1..N with no gap or repeat, each with its manifest.json;
- no (root, epoch) proposed twice on chain (RootProposed and CorrectionProposed);
- no root of the service revoked (only a watchtower revokes here: an honest root revoked is
  a false alarm or a root posted before anyone could check it);
- the distributor's cumulativeTotal equals the service's for the accepted root;
- no account claimed more than its leaf in the accepted root;
- the independent auditor (`settlement audit --rpc --distributor`) exits 0.
"""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from settlement.adapters import chain as c
from settlement.adapters.db import submitter as sdb
from settlement.adapters.db.epochs import EpochStore
from settlement.adapters.db.store import open_store
from settlement.domain.merkle import MerkleTree

from .stack import SETTLEMENT, Stack
from .traffic import Acked, counters, receipt_key

ZERO = "0x" + "00" * 32


@dataclass
class CheckResult:
    lost: int = 0
    duplicate_proposals: int = 0
    audit_failures: int = 0
    problems: list[str] = field(default_factory=list)
    epochs_closed: int = 0
    roots_proposed: int = 0
    revoked: int = 0
    accepted_epoch: int = 0
    audited: bool = False

    @property
    def ok(self) -> bool:
        return not self.problems


def _distributor(stack: Stack) -> c.Distributor:
    assert stack.anvil is not None
    chain = c.connect(rpc_url=stack.anvil.url)
    return c.Distributor(chain, str(stack.deployment["distributor"]))


def check_all(stack: Stack, acked: Acked, *, audit: bool) -> CheckResult:
    out = CheckResult()
    with open_store(stack.db_url, create=False, pool_size=1) as store:
        _stored(store, acked, out)
        _epochs(stack, store, out)
        d = _distributor(stack)
        _proposals(stack, d, out)
        _totals_and_claims(store, d, out)
    if audit:
        out.audited = True
        _audit(stack, out)
    return out


def _stored(store: object, acked: Acked, out: CheckResult) -> None:
    # What was acknowledged first, then the database: a receipt answered 200 was committed
    # before its answer, so it is in any read that starts after the answer was recorded.
    with acked.lock:
        items = list(acked.by_key.items())
    best: dict[tuple[str, bytes, bytes, bytes], tuple[int, ...]] = {}
    for s in store.best_receipts():  # type: ignore[attr-defined]
        k, v = receipt_key(s.receipt), counters(s.receipt)
        if k not in best or v > best[k]:
            best[k] = v
    for k, want in items:
        have = best.get(k)
        if have is None or any(h < w for h, w in zip(have, want, strict=True)):
            out.lost += 1
            if out.lost <= 5:
                out.problems.append(
                    f"acknowledged receipt lost: {k[0]} viewer 0x{k[1].hex()} session "
                    f"0x{k[2].hex()[:16]}..: acknowledged {want}, stored {have}"
                )


def _epochs(stack: Stack, store: object, out: CheckResult) -> None:
    epochs = EpochStore(store)  # type: ignore[arg-type]
    rows = sorted(e.epoch for e in epochs.list(limit=100_000))
    out.epochs_closed = len(rows)
    if rows != list(range(1, len(rows) + 1)):
        out.problems.append(f"closed epochs are not 1..{len(rows)}: {rows[:20]}...")
    # manifest.json is written last; a crash after the commit is repaired by the next
    # scheduler tick, so the last one may still be missing for a moment.
    for e in rows[:-1]:
        if not (Path(stack.env["W2E_DATA_DIR"]) / f"epoch-{e:08d}" / "manifest.json").exists():
            out.problems.append(f"epoch {e} is closed but its manifest.json is missing")


def _proposals(stack: Stack, d: c.Distributor, out: CheckResult) -> None:
    seen: dict[tuple[str, int], int] = {}
    events = c.read_events(
        d,
        int(stack.deployment["block"]),
        names=("RootProposed", "CorrectionProposed", "RootRevoked"),
    )
    for e in events:
        if e.name == "RootRevoked":
            out.revoked += 1
            out.problems.append(
                f"root {e.args['root']} of epoch {e.args['epoch']} revoked in block "
                f"{e.block_number}: the watchtower failed it (see watchtower.log)"
            )
            continue
        k = (e.args["root"], e.args["epoch"])
        seen[k] = seen.get(k, 0) + 1
    out.roots_proposed = len(events) - out.revoked
    for (root, epoch), n in seen.items():
        if n > 1:
            out.duplicate_proposals += n - 1
            out.problems.append(f"root {root} of epoch {epoch} proposed {n} times")


def _totals_and_claims(store: object, d: c.Distributor, out: CheckResult) -> None:
    root = d.root()
    if root == ZERO:
        return
    rows = sdb.SubmitterStore(store)  # type: ignore[arg-type]
    row = rows.latest_accepted(root)
    deadline = time.monotonic() + 20
    while row is None and time.monotonic() < deadline:
        # Accepted on chain by someone else (anyone may call acceptRoot): the service marks
        # its row accepted when it next reads the chain's events.
        time.sleep(1)
        row = rows.latest_accepted(root)
    if row is None:
        statuses = [(r.id, r.kind, r.epoch, r.status) for r in rows.by_root(root)]
        out.problems.append(
            f"the distributor's root {root} is no accepted proposal of the service after "
            f"20 s (its rows: {statuses or 'none'})"
        )
        return
    out.accepted_epoch = row.epoch
    on_chain = d.cumulative_total()
    if on_chain != row.cumulative_total:
        out.problems.append(
            f"on-chain cumulativeTotal {on_chain} != the service's {row.cumulative_total} "
            f"(root {root}, epoch {row.epoch})"
        )
    if row.kind == sdb.ROOT:
        stored = EpochStore(store).get(row.epoch)  # type: ignore[arg-type]
        if stored is None or stored.cumulative_total != on_chain:
            out.problems.append(
                f"epoch {row.epoch}'s stored total {stored and stored.cumulative_total} != "
                f"on-chain {on_chain}"
            )
    if row.dump_path is None:
        return
    tree = MerkleTree.load(Path(row.dump_path).read_bytes())
    leaves = dict(tree.values)
    scan = c.scan_claims(d, 0)
    for account, claimed in scan.claimed.items():
        if claimed > leaves.get(account.lower(), 0):
            out.problems.append(f"{account} claimed {claimed} > its leaf {leaves.get(account)}")


def _audit(stack: Stack, out: CheckResult) -> None:
    assert stack.anvil is not None
    argv = [*SETTLEMENT, "audit", "--rpc", stack.anvil.url]
    argv += ["--distributor", str(stack.deployment["distributor"]), "--json"]
    argv += ["--from-block", str(stack.deployment["block"])]
    done = subprocess.run(argv, env=stack.env, capture_output=True, timeout=900, check=False)
    if done.returncode != 0:
        out.audit_failures += 1
        detail = done.stdout.decode()[-2000:] or done.stderr.decode()[-2000:]
        try:
            report = json.loads(done.stdout)
            detail = json.dumps(report.get("mismatches", report))[:2000]
        except (ValueError, AttributeError):
            pass
        out.problems.append(f"settlement audit exited {done.returncode}: {detail}")

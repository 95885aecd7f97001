"""scripts/chaos crash [--iterations N] [--seed S] | soak --minutes M [--rate R].

Last line: one JSON object (field names stay stable). Exit 0 when every check passed, 1
when one failed (a receipt lost, a root proposed twice or revoked, an audit failure; memory or p99
out of bounds for soak), 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console
from rich.table import Table

from chaos_lib.crash import Crash, CrashReport
from chaos_lib.soak import P99_FACTOR, P99_SLACK_MS, RSS_BOUND, SoakReport, soak
from chaos_lib.stack import Stack

console = Console(stderr=False)


def crash_table(r: CrashReport) -> dict[str, object]:
    final = r.final
    checks = [*r.checks, *([final] if final else [])]
    lost = max((x.lost for x in checks), default=0)
    dup = max((x.duplicate_proposals for x in checks), default=0)
    audit_failures = sum(x.audit_failures for x in checks)
    revoked = max((x.revoked for x in checks), default=0)
    # Each check reports what it finds on the whole history: the same problem once.
    problems = list(dict.fromkeys([p for x in checks for p in x.problems] + r.incidents))
    table = Table(title=f"chaos crash: {r.iterations} iterations in {r.seconds:.0f} s")
    table.add_column("what")
    table.add_column("count", justify="right")
    for phase, n in sorted(r.kills_by_phase.items()):
        table.add_row(f"kills landed in: {phase}", str(n))
    for proc, n in sorted(r.kills_by_process.items()):
        table.add_row(f"kills of process: {proc}", str(n))
    table.add_row("aimed kills whose phase did not come within 60 s", str(r.aimed_missed))
    acked = r.acked_count
    table.add_row("receipts acknowledged (200, accepted/duplicate)", str(acked))
    table.add_row("receipts lost", str(lost))
    table.add_row("epochs closed", str(final.epochs_closed if final else "-"))
    table.add_row("roots proposed on chain", str(final.roots_proposed if final else "-"))
    table.add_row("latest accepted epoch", str(final.accepted_epoch if final else "-"))
    table.add_row("claims sent", str(r.claims))
    table.add_row("duplicate proposals", str(dup))
    table.add_row("roots revoked (by the watchtower)", str(revoked))
    audits = sum(1 for x in checks if x.audited)
    table.add_row(f"audit failures (of {audits} audits)", str(audit_failures))
    table.add_row("invariant checks run", str(len(checks)))
    console.print(table)
    for p in problems[:20]:
        console.print(f"[red]problem:[/red] {p}")
    return {
        "iterations": r.iterations,
        "kills_by_phase": dict(sorted(r.kills_by_phase.items())),
        "acknowledged": acked,
        "lost": lost,
        "duplicate_proposals": dup,
        "audit_failures": audit_failures,
        "revoked": revoked,
        "seconds": round(r.seconds, 1),
        "problems": len(problems),
    }


def soak_table(r: SoakReport, bucket: float) -> dict[str, object]:
    table = Table(title=f"chaos soak: {r.minutes} min at {r.rate:.0f} receipts/s")
    first = "minute" if bucket == 60 else f"minute ({bucket:g} s)"
    for col in (first, "API RSS MB (all processes)", "p99 ms", "receipts sent"):
        table.add_column(col, justify="right")
    for i, (m, p, n) in enumerate(
        zip(r.rss_mb_by_minute, r.p99_ms_by_minute, r.sent_by_minute, strict=True)
    ):
        table.add_row(str(i + 1), f"{m:.1f}", f"{p:.1f}", str(n))
    console.print(table)
    if r.peak is not None:
        console.print(f"peak (burst) {r.peak:.0f} receipts/s; soak at half: {r.rate:.0f}")
    console.print(
        f"memory flat (last <= second minute + {RSS_BOUND:.0%}): {r.rss_ok}; p99 stable "
        f"(last <= {P99_FACTOR} x second + {P99_SLACK_MS:.0f} ms): {r.p99_ok}; errors {r.errors}"
    )
    return {
        "minutes": r.minutes,
        "rate": round(r.rate, 1),
        "rss_mb_by_minute": r.rss_mb_by_minute,
        "p99_ms_by_minute": r.p99_ms_by_minute,
        "pass": r.passed,
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="scripts/chaos", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    crash = sub.add_parser("crash", help="SIGKILL service processes and check the invariants")
    crash.add_argument("--iterations", type=int, default=10)
    crash.add_argument("--seed", type=int, default=1)
    crash.add_argument(
        "--audit-every", type=int, default=5, help="run the auditor after every Nth restart"
    )
    crash.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    crash.add_argument(
        "--budget-minutes",
        type=float,
        default=None,
        help="start no iteration after this many minutes; finish and report what ran",
    )
    s = sub.add_parser("soak", help="half the peak rate for --minutes; memory and p99 per minute")
    s.add_argument("--minutes", type=float, default=10.0)
    s.add_argument("--rate", type=float, default=None, help="receipts/s (default: peak / 2)")
    s.add_argument("--bucket-seconds", type=float, default=60.0, help="length of a 'minute'")
    s.add_argument("--burst-seconds", type=float, default=15.0)
    args = parser.parse_args(argv)
    if args.command == "crash":
        if args.iterations < 1:
            parser.error("--iterations must be at least 1")
        stack = Stack(keep=args.keep)
        console.print(f"work directory {stack.dir}, schema {stack.schema}")
        budget = None if args.budget_minutes is None else args.budget_minutes * 60
        runner = Crash(stack, args.iterations, args.seed, args.audit_every, budget)
        report = runner.run()
        report.acked_count = runner.acked.count
        out = crash_table(report)
        print(json.dumps(out))
        failed = out["lost"] or out["duplicate_proposals"] or out["audit_failures"]
        return 1 if failed or out["problems"] else 0
    if args.minutes <= 0:
        parser.error("--minutes must be positive")
    stack = Stack(epoch_seconds=60, grace_seconds=5, api_workers=2, faults=False)
    report_s = soak(stack, args.minutes, args.rate, args.bucket_seconds, args.burst_seconds)
    out = soak_table(report_s, args.bucket_seconds)
    print(json.dumps(out))
    return 0 if out["pass"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

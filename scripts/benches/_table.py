"""Every benchmark at its --quick size, one after the other, then one table of their headline
figures. What `scripts/bench` runs with no bench name.

Usage: scripts/bench [--only a,b] [--store postgres|sqlite]

Each bench runs in its own process exactly as `scripts/bench NAME --quick` would (its log
goes to stderr as it runs); its last line, one JSON object, is unchanged and is what the
table is built from. --store goes to the benches that have a store (ingest, settle, audit;
default: theirs, PostgreSQL). A bench that fails is a row saying so; the exit code is then 1.
Last line: one JSON object {"bench": "all", "results": {name: that bench's JSON or null}}.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ORDER = ("verify", "ingest", "merkle", "settle", "audit", "chain")
WITH_STORE = {"ingest", "settle", "audit"}


def _n(value: Any) -> str:
    """A figure for the table: integers with thousands separators, others as given."""
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


def _get(r: Mapping[str, Any], key: str) -> str:
    return _n(r[key]) if key in r and r[key] is not None else "-"


# bench -> (what it measures, headline figure, ratio against its baseline)
HEADLINES: dict[str, Callable[[Mapping[str, Any]], tuple[str, str, str]]] = {
    "verify": lambda r: (
        "receipt signatures, one core",
        f"{_get(r, 'project_per_s')}/s (wire {_get(r, 'project_wire_per_s')}/s)",
        f"{_get(r, 'ratio_vs_limit')} of raw recovery, {_get(r, 'ratio_vs_reference')}x eth-account",
    ),
    "ingest": lambda r: (
        f"HTTP ingest ({r.get('store', '?')})",
        f"{_get(r, 'receipts_per_s')} receipts/s, p99 {_get(r, 'p99_ms')} ms",
        f"{_get(r, 'ratio_vs_verify_ceiling')} of the verify ceiling "
        f"({_get(r, 'verify_ceiling_per_s')}/s)",
    ),
    "merkle": lambda r: (
        "Merkle tree build",
        # --quick builds a tenth; the fields keep their full-run names
        f"{_get(r, 'project_s_100k')} s at {'10k' if r.get('quick') else '100k'} leaves, "
        f"{_get(r, 'project_s_1m')} s at {'100k' if r.get('quick') else '1M'}",
        f"{_get(r, 'speedup_vs_oz')}x OpenZeppelin JS, roots equal {_get(r, 'roots_equal')}",
    ),
    "settle": lambda r: (
        f"epoch close ({r.get('store', '?')})",
        f"{_get(r, 'close_s')} s for {_get(r, 'sessions')} sessions, next {_get(r, 'next_close_s')} s",
        f"{_get(r, 'ratio_vs_floor')}x its floor ({_get(r, 'floor_s')} s)",
    ),
    "audit": lambda r: (
        "audit from published files",
        f"{_get(r, 'audit_s')} s for {_get(r, 'sessions')} sessions, "
        f"{_get(r, 'receipts')} receipts",
        f"{_get(r, 'ratio_vs_floor')}x its floor",
    ),
    "chain": lambda r: (
        "claims on anvil",
        f"{_get(r, 'claims_per_s')} claims/s",
        f"gas {_get(r, 'gas_per_claim')} single, {_get(r, 'gas_per_claim_in_batch')} in claimMany",
    ),
}


def last_json(stdout: str) -> dict[str, Any] | None:
    """A bench's result: its last non-empty stdout line, when that is a JSON object."""
    lines = [line for line in stdout.splitlines() if line.strip()]
    if not lines:
        return None
    try:
        value = json.loads(lines[-1])
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def table(results: Mapping[str, Mapping[str, Any] | None], seconds: Mapping[str, float]) -> str:
    """The one table: a row per bench, in ORDER then any other; None: the bench failed."""
    header = ("bench", "measures", "headline", "against its baseline", "run")
    rows = [header]
    for name in sorted(results, key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n)):
        r = results[name]
        run = f"{seconds[name]:.0f} s" if name in seconds else "-"
        if r is None:
            rows.append((name, "FAILED", "no JSON line: see its log above", "-", run))
            continue
        headline = HEADLINES.get(name)
        if headline is None:
            figures = ", ".join(f"{k} {_n(v)}" for k, v in r.items() if k != "bench")
            rows.append((name, "-", figures, "-", run))
        else:
            rows.append((name, *headline(r), run))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    line = "-+-".join("-" * w for w in widths)
    out = [" | ".join(c.ljust(w) for c, w in zip(rows[0], widths, strict=True)), line]
    out += [" | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows[1:]]
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", help=f"comma-separated benches (default: {','.join(ORDER)})")
    ap.add_argument("--store", choices=("postgres", "sqlite"), help="for ingest, settle, audit")
    args = ap.parse_args()
    names = ORDER if args.only is None else tuple(n.strip() for n in args.only.split(","))
    unknown = [n for n in names if not (HERE / f"{n}.py").is_file()]
    if unknown:
        print(
            f"bench: no such bench {', '.join(unknown)}; benches: {', '.join(ORDER)}",
            file=sys.stderr,
        )
        return 2
    results: dict[str, dict[str, Any] | None] = {}
    seconds: dict[str, float] = {}
    for name in names:
        cmd = [sys.executable, str(HERE / f"{name}.py"), "--quick"]
        if args.store is not None and name in WITH_STORE:
            cmd += ["--store", args.store]
        print(f"bench: {name}: {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
        t = time.perf_counter()
        done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False)
        seconds[name] = time.perf_counter() - t
        sys.stderr.write(done.stdout)  # its log lines and JSON line, as it printed them
        results[name] = last_json(done.stdout) if done.returncode == 0 else None
        if done.returncode != 0:
            print(f"bench: {name} exited {done.returncode}", file=sys.stderr, flush=True)
    print(table(results, seconds))
    print(json.dumps({"bench": "all", "results": results}))
    return 0 if all(r is not None for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())

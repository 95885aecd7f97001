"""`scripts/economics`: run the hostile-economics scenarios and print a table, then one JSON
line (`settlement.sim.economics.to_json`). Exit 1 when a scenario is unbounded or above its
bound under the production profile, 2 on bad arguments."""

from __future__ import annotations

import argparse
import logging
import sys
import warnings

import orjson

from settlement.sim.economics import (
    Outcome,
    describe,
    percent,
    run_scenario,
    scenario_names,
    to_json,
)
from settlement.sim.scenarios import PROFILES, SCALES


def _args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scripts/economics", description=__doc__)
    parser.add_argument("--scale", choices=sorted(SCALES), default="small")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--profile", action="append", choices=list(PROFILES), help="default: all three"
    )
    parser.add_argument(
        "--scenario", action="append", choices=scenario_names(), help="default: all"
    )
    parser.add_argument(
        "--attack", type=int, default=None, help="attacker keys or sessions (default: the scale's)"
    )
    return parser.parse_args(argv)


def render(outcomes: list[Outcome]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="attacker share of each pool (work share; honest loss) and its bound")
    for column in ("scenario", "profile", "pool", "attacker", "work", "honest loss", "bound"):
        table.add_column(column, justify="left" if column in ("scenario", "profile") else "right")
    for o in outcomes:
        for i, (pool, r) in enumerate(o.pools.items()):
            table.add_row(
                o.name if i == 0 else "",
                o.profile if i == 0 else "",
                pool,
                percent(r.attacker_share),
                percent(r.work_share),
                percent(r.honest_loss),
                percent(o.bound[pool]),
                end_section=i == len(o.pools) - 1,
            )
    Console(width=120).print(table)
    for name in dict.fromkeys(o.name for o in outcomes):
        print(f"  {name}: {describe(name)}")


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    logging.disable(logging.WARNING)  # the watchtower logs its revocation: the table says it
    warnings.filterwarnings("ignore", message=".*httpx.*")  # starlette's TestClient on httpx
    profiles = args.profile or list(PROFILES)
    names = args.scenario or scenario_names()
    outcomes = [
        run_scenario(n, p, args.scale, args.seed, args.attack) for n in names for p in profiles
    ]
    render(outcomes)
    failed = [o.name for o in outcomes if o.profile == "production" and not o.within_bound()]
    if failed:
        print(f"above its bound or unbounded under production: {', '.join(failed)}")
    sys.stdout.write(orjson.dumps(to_json(outcomes)).decode() + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

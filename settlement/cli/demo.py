"""`settlement demo`: the whole flow on this machine (settlement.sim.demo), drawn with a Rich
progress bar per step and ended by a summary; --serve keeps the service and chain up."""

from __future__ import annotations

import signal
import time
from typing import Annotated, Any

import typer

from settlement.errors import SettlementError


def demo(
    nodes: Annotated[int, typer.Option(min=1, help="delivery nodes")] = 300,
    viewers: Annotated[int, typer.Option(min=1, help="viewers")] = 3000,
    receipts: Annotated[int, typer.Option(min=100, help="signed receipts to simulate")] = 40_000,
    seed: Annotated[int, typer.Option(help="simulation seed")] = 1,
    workers: Annotated[
        int | None,
        typer.Option(min=1, help="processes signing and auditing receipts (default: every core)"),
    ] = None,
    directory: Annotated[
        str | None,
        typer.Option(
            "--dir", help="keep the database and datasets here (default: a temporary directory)"
        ),
    ] = None,
    rpc: Annotated[
        str | None,
        typer.Option(
            "--rpc",
            help="run on this dev chain (anvil) instead of the embedded one, with keys made and "
            "funded for the run, so the chain outlives the demo and can be audited; needs --dir",
        ),
    ] = None,
    serve: Annotated[
        bool,
        typer.Option(
            "--serve",
            help="after the summary keep the HTTP service (explorer page, API, /v1/data) and "
            "the chain up, print the page's address, and wait for Ctrl-C",
        ),
    ] = False,
    port: Annotated[
        int | None,
        typer.Option(
            min=1, max=65535, help="the service's port on 127.0.0.1 (default: a free one)"
        ),
    ] = None,
) -> None:
    """Run the whole flow on this machine: simulated network -> HTTP API -> SQLite -> epochs
    -> roots on the embedded chain (or --rpc) -> claims by nodes, viewers and creators (one
    relayed claimMany) -> the auditor checking every epoch over HTTP -> summary.

    Exit 0 when every on-chain balance equals its allocation and the audit is clean, 1
    otherwise, 2 on bad options.
    """
    from rich.console import Console

    from settlement.sim.demo import DemoConfig, run_demo

    if rpc is not None and directory is None:
        typer.echo("error: --rpc needs --dir: the datasets must outlive the demo", err=True)
        raise typer.Exit(2)
    creators = max(1, viewers // 50)
    cfg = DemoConfig(
        nodes=nodes,
        viewers=viewers,
        creators=creators,
        contents=creators * 10,
        receipts=receipts,
        seed=seed,
        workers=workers,
        directory=directory,
        rpc=rpc,
        port=port,
        serve=serve,
    )
    bars = _Bars(Console(stderr=True))

    def hold(result: Any) -> None:  # the service and the chain are still up
        bars.stop()
        render(result)
        _serve_until_interrupted(result.url)

    try:
        with bars:
            result = run_demo(cfg, bars.say, bars.progress, hold if serve else None)
    except SettlementError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(error.exit_code) from None
    if not serve:
        render(result)
    if not result.ok:
        raise typer.Exit(1)


class _Bars:
    """One Rich bar per demo step on stderr; the steps' messages printed above the bars."""

    def __init__(self, console: Any) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.bar = Progress(
            TextColumn("{task.description:<28}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        )
        self.tasks: dict[str, Any] = {}

    def __enter__(self) -> _Bars:
        self.bar.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def stop(self) -> None:
        self.bar.stop()  # a second stop does nothing

    def say(self, message: str) -> None:
        self.bar.console.print(message, markup=False, highlight=False, soft_wrap=True)

    def progress(self, step: str, done: int, total: int) -> None:
        task = self.tasks.get(step)
        if task is None:
            task = self.tasks[step] = self.bar.add_task(step, total=total)
        self.bar.update(task, completed=done, total=total)
        if done >= total:
            self.bar.stop_task(task)  # freezes its elapsed time


def _serve_until_interrupted(url: str) -> None:
    typer.echo(
        f"serving: explorer {url}/  API {url}/v1  published data {url}/v1/data  "
        "(the chain stays up too); Ctrl-C to stop"
    )
    # SIGTERM too stops it cleanly: the temporary directory is removed on the way out.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        typer.echo("stopped", err=True)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _w2e(amount: int) -> str:
    """Base units as W2E with four decimals, by integer math (truncated)."""
    whole, frac = divmod(amount, 10**18)
    return f"{whole}.{frac // 10**14:04d}"


def render(result: Any) -> None:
    """The summary: rejections by reason, roots, top earners, claims by class and balances
    against allocations, the audit's verdict, timings."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    rejections = Table(title="Rejections by reason")
    for col in ("reason", "receipts", "injected", "what the bad actor did"):
        rejections.add_column(col, justify="right" if col in ("receipts", "injected") else "left")
    for reason, n in sorted(result.rejections.items(), key=lambda x: (-x[1], x[0])):
        expected = result.expected.get(reason)
        rejections.add_row(
            reason, str(n), "-" if expected is None else str(expected), result.kinds.get(reason, "")
        )
    accepted = result.verdicts.get("accepted", 0)
    duplicate = result.verdicts.get("duplicate", 0)
    console.print(rejections)
    console.print(
        f"accepted {accepted} receipts, {duplicate} duplicates (accepted again, counted once), "
        f"rejected {sum(result.rejections.values())}"
    )

    roots = Table(title="Roots on chain (one proposal each)")
    for col in ("epochs", "root", "cumulative W2E", "status"):
        roots.add_column(col)
    for p in result.proposals:
        roots.add_row(p["epochs"], p["root"][:18] + "…", _w2e(p["total"]), p["status"])
    console.print(roots)

    top = Table(title="Top earners by class (cumulative, W2E)")
    for col in ("class", "account", "W2E"):
        top.add_column(col)
    for cls, rows in result.top.items():
        for account, amount in rows:
            top.add_row(cls, account, _w2e(amount))
    console.print(top)

    claims = Table(title="Claims by class: on-chain balance against allocation")
    for col in (
        "class",
        "own key (claim)",
        "relayed (claimMany)",
        "paid W2E",
        "balance = allocation",
    ):
        claims.add_column(col)
    for cls, row in result.claims.items():
        n = row.own_key + row.relayed
        claims.add_row(cls, str(row.own_key), str(row.relayed), _w2e(row.paid), f"{row.equal}/{n}")
    console.print(claims)
    t = result.totals
    console.print(
        f"accounts {t['accounts']}, claimed {t['claimed_accounts']} (paid {_w2e(t['paid'])} W2E); "
        f"allocated {t['allocated']} = on-chain cumulativeTotal {t['onchain_total']} "
        f"<= funded {t['funded']} base units"
    )

    report = result.audit
    audit = Table(title=f"Audit over HTTP: {report.source}")
    for col in ("epoch", "receipts", "signatures", "leaves", "on chain", "result"):
        audit.add_column(col)
    for s in report.epochs:
        audit.add_row(
            str(s.epoch),
            str(s.receipts),
            str(s.signatures_checked),
            str(s.accounts),
            s.on_chain,
            "[green]ok[/]" if s.ok else f"[red]{s.mismatches} mismatch(es)[/]",
        )
    console.print(audit)
    for m in report.mismatches[:20]:
        console.print(f"[red]MISMATCH[/] {m}", highlight=False, soft_wrap=True)
    verdict = (
        "[green]clean[/]: every root matches the published data"
        if report.ok
        else f"[red]FAILED[/]: {len(report.mismatches) + report.suppressed} mismatch(es)"
    )
    console.print(f"audit verdict: {verdict} ({report.seconds:.1f} s)", highlight=False)

    timing = ", ".join(
        f"{k} {v:.1f} s (cpu {result.cpu.get(k, 0.0):.1f})" for k, v in result.seconds.items()
    )
    console.print(f"time, wall (cpu): {timing}", highlight=False)
    if result.audit_command is not None:
        console.print(f"audit it from the chain and the published files: {result.audit_command}")
    if result.ok:
        console.print(
            "[bold green]OK[/]: every on-chain balance equals its allocation and the audit is clean"
        )
    else:
        console.print(f"[bold red]FAILED[/]: {len(result.problems)} problem(s)")
        for p in result.problems[:20]:
            console.print(f"  {p}", highlight=False)

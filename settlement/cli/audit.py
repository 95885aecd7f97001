"""`settlement audit`: recompute every root on-chain from the published datasets alone
(services.audit); a Rich report for people, `--json` for machines; exit 0 only when all
matches. Needs no database and no key."""

from __future__ import annotations

from typing import Annotated

import typer


def audit(
    rpc: Annotated[str, typer.Option("--rpc", metavar="URL", help="JSON-RPC URL of the chain")],
    distributor: Annotated[
        str, typer.Option("--distributor", metavar="ADDRESS", help="the RewardDistributor")
    ],
    data: Annotated[
        str | None,
        typer.Option(
            "--data",
            metavar="DIR_OR_URL",
            help="the published datasets: a folder or an http(s) base (default: each "
            "proposal's dataURI on chain)",
        ),
    ] = None,
    epoch: Annotated[
        int | None,
        typer.Option("--epoch", min=1, help="audit this epoch in full (earlier ones replayed)"),
    ] = None,
    all_epochs: Annotated[
        bool, typer.Option("--all", help="audit every epoch in full (the default)")
    ] = False,
    from_block: Annotated[
        int, typer.Option("--from-block", min=0, help="read events from this block")
    ] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON report on stdout")] = False,
    watch: Annotated[
        bool,
        typer.Option(
            "--watch",
            help="watchtower: follow new proposals, audit each pending root inside its "
            "challenge window, revoke one that fails with the guardian key (W2E_GUARDIAN_KEYSTORE "
            "or W2E_GUARDIAN_KEY_ENV; without it: alert only); runs until interrupted",
        ),
    ] = False,
    pause_on_failure: Annotated[
        bool,
        typer.Option(
            "--pause-on-failure", help="with --watch: also pause the distributor on a failure"
        ),
    ] = False,
    interval: Annotated[
        float, typer.Option(min=0.05, help="with --watch: seconds between checks")
    ] = 15.0,
    metrics_port: Annotated[
        int | None,
        typer.Option(help="with --watch: serve Prometheus metrics on METRICS_HOST:PORT/metrics"),
    ] = None,
    metrics_host: Annotated[
        str, typer.Option(help="with --watch: address the metrics port binds")
    ] = "127.0.0.1",
    once: Annotated[
        bool, typer.Option("--once", help="with --watch: one check, then exit (cron, tests)")
    ] = False,
) -> None:
    """Audit a distributor: file hashes and sizes, keccak256(manifest) == dataHash, the
    manifest chain, every receipt's signature and section 3 checks, watermarks, credit,
    pools, allocations, balances, floor, tree and dump bytes, roots and totals against the
    events, quarantine evidence, and Claimed never above a leaf.

    Exit 0: everything matches; 1: a mismatch (each names epoch, file, line, account or
    receipt, expected and found); 2: bad input; 3: the chain could not be read.
    """
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from settlement.errors import SettlementError
    from settlement.services import audit as service

    if epoch is not None and all_epochs:
        typer.echo("error: give --epoch E or --all, not both", err=True)
        raise typer.Exit(2)
    if watch:
        if epoch is not None or all_epochs or as_json:
            typer.echo(
                "error: --watch audits each pending root: no --epoch, --all, --json", err=True
            )
            raise typer.Exit(2)
        from settlement.cli.watch import run_watch

        run_watch(
            rpc=rpc,
            distributor=distributor,
            data=data,
            from_block=from_block,
            interval=interval,
            metrics_port=metrics_port,
            metrics_host=metrics_host,
            pause_on_failure=pause_on_failure,
            once=once,
        )
        return
    if pause_on_failure or once or metrics_port is not None:
        typer.echo("error: --pause-on-failure, --once and --metrics-port go with --watch", err=True)
        raise typer.Exit(2)
    err = Console(stderr=True)
    source: service.DataSource | None = None
    try:
        source = service.open_source(data) if data is not None else None
        chain = service.ChainView.connect(rpc, distributor, from_block)
        if as_json:
            report = service.audit(source, chain, None if epoch is None else [epoch])
        else:
            with Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total}"),
                TimeElapsedColumn(),
                console=err,
                transient=True,
            ) as bar:
                task = bar.add_task("auditing", total=None)

                def progress(what: str, done: int, total: int) -> None:
                    bar.update(task, description=what, completed=done, total=total)

                report = service.audit(source, chain, None if epoch is None else [epoch], progress)
    except SettlementError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(error.exit_code) from None
    finally:
        if isinstance(source, service.HttpSource):
            source.close()  # its downloaded copies
    if as_json:
        typer.echo(report.to_json().decode())
    else:
        _print(report)
    raise typer.Exit(0 if report.ok else 1)


def _print(report: object) -> None:
    from rich.console import Console
    from rich.table import Table

    from settlement.services.audit import AuditReport

    assert isinstance(report, AuditReport)
    out = Console()
    table = Table(title=f"Audit of {report.distributor} on chain {report.chain_id}")
    for col in (
        "epoch",
        "kind",
        "dataHash",
        "receipts",
        "signatures",
        "leaves",
        "on chain",
        "result",
    ):
        table.add_column(col)
    for s in report.epochs:
        table.add_row(
            str(s.epoch),
            s.kind,
            s.data_hash[:18] + "…",
            str(s.receipts),
            str(s.signatures_checked),
            str(s.accounts),
            s.on_chain,
            "[green]ok[/]" if s.ok else f"[red]{s.mismatches} mismatch(es)[/]",
        )
    out.print(table)
    for m in report.mismatches:
        out.print(f"[red]MISMATCH[/] {m}", highlight=False, soft_wrap=True)
    if report.suppressed:
        out.print(f"[red]... and {report.suppressed} more of the same kinds[/]")
    verdict = (
        "[green]OK: every root matches the published data[/]" if report.ok else "[red]FAILED[/]"
    )
    out.print(f"{verdict} (data: {report.source}, {report.seconds:.2f} s)", highlight=False)

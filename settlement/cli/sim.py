"""`settlement simulate` (seeded traffic with bad actors) and `settlement demo` (the whole
flow on this machine)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import orjson
import typer

from settlement.cli.options import ChainIdOption, DistributorOption
from settlement.errors import SettlementError
from settlement.sim.world import (
    BAD_KINDS,
    DEFAULT_BAD_FRACTION,
    REGISTRIES_FILE,
    SimConfig,
    parse_bad_fractions,
)

_KINDS_HELP = ", ".join(BAD_KINDS)


def simulate(
    out: Annotated[
        Path, typer.Option(help="directory for receipts.ndjson, registries.json, truth.json")
    ],
    seed: Annotated[int, typer.Option(help="same seed and options, same bytes")] = 0,
    receipts: Annotated[
        int | None, typer.Option(help="exact number of receipts (default 100000)")
    ] = None,
    sessions: Annotated[
        int | None, typer.Option(help="number of honest sessions instead of --receipts")
    ] = None,
    nodes: Annotated[int, typer.Option(help="registered delivery nodes")] = 100,
    viewers: Annotated[int, typer.Option(help="honest viewer keys")] = 10_000,
    creators: Annotated[int, typer.Option(help="content creators")] = 200,
    contents: Annotated[int, typer.Option(help="registered content items")] = 2_000,
    bad_fraction: Annotated[
        list[str] | None,
        typer.Option(
            "--bad-fraction",
            help=f"KIND=F, all=F or F; repeatable; kinds: {_KINDS_HELP} "
            f"(default {DEFAULT_BAD_FRACTION} each)",
        ),
    ] = None,
    chain_id: ChainIdOption = None,
    distributor: DistributorOption = None,
    start: Annotated[
        int | None, typer.Option(help="earliest startedAt, unix seconds (default: genesis)")
    ] = None,
    window: Annotated[
        int, typer.Option(help="sessions start within this many seconds of --start")
    ] = 6 * 3600,
    workers: Annotated[int | None, typer.Option(help="processes (default: every core)")] = None,
    url: Annotated[
        str | None, typer.Option(help="also post the receipts to this settlement service")
    ] = None,
    max_batch: Annotated[int, typer.Option(help="receipts per POST with --url")] = 10_000,
) -> None:
    """Generate a seeded network's receipts, with bad actors of known expected verdicts."""
    from settlement.config import load_settings
    from settlement.domain.receipts import Domain, Params
    from settlement.sim.generate import generate
    from settlement.sim.post import post, upload_registries

    try:
        settings = load_settings()
        domain = Domain.from_settings(settings, chain_id, distributor)
        cfg = SimConfig(
            seed=seed,
            receipts=100_000 if receipts is None and sessions is None else receipts,
            sessions=sessions,
            nodes=nodes,
            viewers=viewers,
            creators=creators,
            contents=contents,
            chain_id=domain.chain_id,
            distributor=domain.verifying_contract,
            start=settings.genesis if start is None else start,
            window=window,
            params=Params.from_settings(settings),
            bad=parse_bad_fractions(bad_fraction or []),
            workers=workers,
        )
        result = generate(cfg, out)
        summary: dict[str, Any] = {
            "simulate": str(result.receipts_path),
            "receipts": result.receipts,
            "honest": result.honest,
            "bad": dict(sorted(result.kinds.items())),
            "now": cfg.now,
            "seconds": round(result.seconds, 3),
            "cpu_seconds": round(result.cpu_seconds, 3),
            "workers": result.workers,
            "receipts_per_s": round(result.receipts / result.seconds) if result.seconds else None,
        }
        if url is not None:
            from settlement.client.http import SettlementClient

            if settings.admin_token is not None:
                summary["registries"] = upload_registries(
                    url, out / REGISTRIES_FILE, settings.admin_token.get_secret_value()
                )
            else:
                typer.echo(
                    "note: W2E_ADMIN_TOKEN is unset, registries.json was not uploaded; "
                    "load it into the service first or expect UNKNOWN_NODE",
                    err=True,
                )
            with SettlementClient(url, max_batch=max_batch) as client:
                summary["posted"] = post(result.receipts_path, client)
    except SettlementError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(error.exit_code) from None
    typer.echo(orjson.dumps(summary).decode())


def demo(
    nodes: Annotated[int, typer.Option(min=1, help="delivery nodes")] = 300,
    viewers: Annotated[int, typer.Option(min=1, help="viewers")] = 3000,
    receipts: Annotated[int, typer.Option(min=100, help="signed receipts to simulate")] = 40_000,
    seed: Annotated[int, typer.Option(help="simulation seed")] = 1,
    workers: Annotated[
        int | None, typer.Option(min=1, help="processes signing receipts (default: every core)")
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
) -> None:
    """Run the whole flow on this machine: simulated network -> HTTP API -> SQLite -> epochs
    -> roots on the embedded chain (or --rpc) -> claims (one relayed claimMany) -> summary.

    Exit 0 when every on-chain balance equals its allocation, 1 otherwise.
    """
    from settlement.sim.demo import DemoConfig, render, run_demo

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
    )
    try:
        result = run_demo(cfg, say=lambda m: typer.echo(m, err=True))
    except SettlementError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(error.exit_code) from None
    render(result)
    if not result.ok:
        raise typer.Exit(1)

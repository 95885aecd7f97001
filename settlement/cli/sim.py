"""`settlement simulate` (seeded traffic with bad actors); `settlement demo` is cli/demo.py."""

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

# `simulate --url`: the service's verdicts differ from what truth.json expects of an ingest.
EXIT_VERDICTS_DIFFER = 3

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
        str | None,
        typer.Option(
            help="also post the receipts to this settlement service, timed to its clock "
            "and signed for its domain and parameters (GET /v1/info)"
        ),
    ] = None,
    max_batch: Annotated[int, typer.Option(help="receipts per POST with --url")] = 10_000,
) -> None:
    """Generate a seeded network's receipts, with bad actors of known expected verdicts.

    With --url, the run takes the service's chain id, distributor, receipt parameters and
    clock from its GET /v1/info (options given win): sessions start so that every honest
    receipt is issued after the service's genesis and before its now (shorter window and
    sessions when genesis is recent). registries.json is uploaded when W2E_ADMIN_TOKEN is
    set; the verdicts are then compared with truth.json's expected ingest (an empty store).

    Exit 0: written (and with --url, every verdict count as expected); 1: the service
    refused or could not be reached; 2: invalid options; 3: with --url, verdict counts
    differ from the expectation (each difference printed on stderr, and under
    "mismatches" in the summary).
    """
    from settlement.config import load_settings
    from settlement.domain.receipts import Domain, Params
    from settlement.sim.generate import generate
    from settlement.sim.post import compare, live_timeline, post, upload_registries

    mismatches: dict[str, dict[str, int]] = {}
    try:
        settings = load_settings()
        params = Params.from_settings(settings)
        session_cap: dict[str, int] = {}
        info = None
        if url is not None:
            from settlement.client.http import SettlementClient
            from settlement.client.info import ServiceInfoError
            from settlement.sim.world import NOW_MARGIN

            with SettlementClient(url) as client:
                try:
                    info = client.info()
                except ServiceInfoError as error:
                    typer.echo(
                        f"note: {error}; receipts follow the local W2E_* settings instead",
                        err=True,
                    )
        if info is not None:
            params = info.params
            chain_id = info.chain_id if chain_id is None else chain_id
            distributor = info.distributor if distributor is None else distributor
            if start is None:
                start, window, session_cap["max_session_seconds"] = live_timeline(
                    info, window, NOW_MARGIN
                )
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
            start=params.genesis if start is None else start,
            window=window,
            params=params,
            bad=parse_bad_fractions(bad_fraction or []),
            workers=workers,
            **session_cap,
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
            expected = result.truth["expected"]["ingest"]
            summary["expected"] = expected
            mismatches = compare(summary["posted"], expected)
            summary["mismatches"] = mismatches
            if info is not None:
                summary["service_now"] = info.now
    except SettlementError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(error.exit_code) from None
    typer.echo(orjson.dumps(summary).decode())
    if mismatches:
        for label, counts in mismatches.items():
            typer.echo(
                f"mismatch: {label}: expected {counts['expected']}, got {counts['got']}", err=True
            )
        typer.echo(
            "the service's verdicts differ from truth.json's expected ingest (an empty store "
            "with registries.json loaded): see `settlement simulate --help`",
            err=True,
        )
        raise typer.Exit(EXIT_VERDICTS_DIFFER)

"""`settlement submit`: post closed epochs' roots once, or as a scheduled job with --loop."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Annotated

import typer

from settlement.cli.common import log_to_stderr

if TYPE_CHECKING:
    from settlement.adapters.db import submitter as sdb


def cli_submit(
    loop: Annotated[
        bool, typer.Option("--loop", help="keep running as a scheduled job until interrupted")
    ] = False,
    interval: Annotated[
        float | None,
        typer.Option(
            min=0.05, help="seconds between ticks with --loop (default: W2E_SUBMITTER_INTERVAL)"
        ),
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(help="with --loop, serve the alert gauges on 127.0.0.1:PORT/metrics"),
    ] = None,
    release_revoked: Annotated[
        str | None,
        typer.Option(
            metavar="ROOT", help="operator's decision: allow a revoked ROOT to be proposed again"
        ),
    ] = None,
) -> None:
    """Post closed epochs' roots: reconcile with the chain, finish what is in flight, accept
    roots past validAt, propose the latest closed epoch (folding those closed meanwhile).

    One tick and exit by default; with --loop an APScheduler job every --interval seconds
    that also indexes Claimed events. Refuses while paused and when the distributor cannot
    cover the root (metric w2e_submitter_shortfall_base_units).

    One tick prints each touched proposal as a JSON line on stdout and one line per action
    on stderr (proposed, sent, accepted, waiting for validAt, or why there is nothing to
    do); --loop logs the same with times. Exit 0 when the tick ran (an ALERT line names
    what needs an operator), 2 on bad settings, keys or deployment record, 3 on database or
    chain errors.
    """
    from settlement.config import load_settings
    from settlement.errors import SettlementError
    from settlement.services.claims import index_claims
    from settlement.services.safety import refuse_unsafe
    from settlement.services.submit_loop import open_submitter

    try:
        settings = load_settings()
        refuse_unsafe(settings, "settlement submit")
        if loop:
            # A long-running job: what it does goes to the log, with times, once.
            log_to_stderr(logging.INFO, "%(asctime)s %(levelname)s %(message)s")
            logging.getLogger("apscheduler").setLevel(logging.WARNING)  # a line per tick
        else:
            # One tick: a line per action on stderr, the rows as JSON on stdout.
            log_to_stderr(logging.WARNING)
        say = None if loop else (lambda message: typer.echo(message, err=True))
        with open_submitter(settings, say=say) as submitter:
            if release_revoked is not None:
                n = submitter.release_revoked(release_revoked)
                submitter.say(f"released {n} revoked proposal(s) of root {release_revoked}")
            if not loop:
                rows = submitter.step()
                for row in rows:
                    typer.echo(_row_json(row))
                    waiting = _waiting(row)
                    if waiting:
                        typer.echo(waiting, err=True)
                if not rows:
                    typer.echo(_nothing_to_do(submitter), err=True)
                index_claims(submitter.store, submitter.distributor, submitter.deployment_block)
                return
            # Imported here: the scheduler is only needed with --loop, and every `settlement`
            # command imports this module.
            from settlement.jobs import ChainScheduler, run_until_interrupted

            if metrics_port is not None:
                from prometheus_client import start_http_server

                start_http_server(metrics_port, addr="127.0.0.1")

            run_until_interrupted(
                ChainScheduler(submitter, interval or settings.submitter_interval)
            )
    except SettlementError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(error.exit_code) from None


def _waiting(row: sdb.Proposal) -> str | None:
    """The line for a proposal left waiting for its challenge period."""
    from settlement.adapters.db import submitter as sdb

    if row.status != sdb.MINED or row.valid_at is None:
        return None
    return (
        f"proposal {row.id} (epoch {row.epoch}, root {row.root}) is in its challenge period: "
        f"acceptRoot from {row.valid_at} (run `settlement submit` again then, or keep --loop)"
    )


def _nothing_to_do(submitter: object) -> str:
    """Why a tick touched no proposal, in one line."""
    last = submitter.epochs.last_closed()  # type: ignore[attr-defined]
    on_chain = submitter.distributor.current_epoch()  # type: ignore[attr-defined]
    if last == 0:
        return "nothing to do: no epoch is closed yet (`settlement epochs close`)"
    if last <= on_chain:
        return (
            f"nothing to do: the distributor's root carries epoch {on_chain}, the last "
            f"closed epoch is {last}"
        )
    return (
        f"nothing proposed: epochs {on_chain + 1}-{last} are closed but changed no balance "
        "(or a line above says why)"
    )


def _row_json(row: sdb.Proposal) -> str:
    import orjson

    return orjson.dumps(
        {
            "proposal": row.id,
            "kind": row.kind,
            "epochs": [row.first_epoch, row.epoch],
            "root": row.root,
            "cumulativeTotal": str(row.cumulative_total),
            "dataHash": row.data_hash,
            "status": row.status,
            "txHash": row.tx_hash,
            "block": row.block,
            "validAt": row.valid_at,
            "note": row.note,
        }
    ).decode()

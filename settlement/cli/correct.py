"""`settlement correct`: replace a bad accepted root, one stage per run (PROTOCOL 6-7)."""

from __future__ import annotations

from typing import Annotated

import typer

from settlement.cli.common import log_to_stderr


def cli_correct(
    wait: Annotated[
        bool, typer.Option("--wait", help="stay until the correction is accepted (validAt)")
    ] = False,
) -> None:
    """Correct a bad accepted root (PROTOCOL 6-7), one stage per run.

    1. The guardian pauses the distributor (and revokes any pending root).
    2. `settlement correct` recomputes every leaf as max(balance after the last close,
       claimed on-chain at a block of this pause), publishes the tree, those amounts and a
       manifest with `corrects` and `claimedAtBlock` under W2E_DATA_DIR/corrections/, and
       proposes it with proposeCorrection.
    3. After the challenge period, `settlement correct` again (or --wait) accepts it; its
       leaves become the floor of every later close.
    4. It then tells the guardian to unpause. Exit 3 when the chain refuses a stage.
    """
    import logging

    from settlement.config import load_settings
    from settlement.errors import SettlementError
    from settlement.services.correct import run_correction
    from settlement.services.submit_loop import open_submitter

    log_to_stderr(logging.WARNING)
    try:
        settings = load_settings()
        with open_submitter(settings, say=typer.echo) as submitter:
            state = run_correction(submitter, wait=wait)
    except SettlementError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(error.exit_code) from None
    typer.echo(f"stage: {state.stage}")

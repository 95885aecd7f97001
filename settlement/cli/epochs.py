"""`settlement epochs` (close, show, schedule on the store) and `settlement tree` (build
and prove from files)."""

from __future__ import annotations

import io
import sys
from typing import Annotated

import typer

from settlement.cli.common import echo_json, log_to_stderr, open_input, store_and_settings

epochs_app = typer.Typer(
    help="Epochs of PROTOCOL 4-6 on the store at W2E_DATABASE_URL: close, show, schedule.",
    no_args_is_help=True,
)
tree_app = typer.Typer(
    help="OpenZeppelin-compatible Merkle trees from files: build a dump, prove an account.",
    no_args_is_help=True,
)


def _closed_json(c: object) -> dict:
    return {
        "epoch": c.epoch,  # type: ignore[attr-defined]
        "root": c.root,  # type: ignore[attr-defined]
        "dataHash": c.data_hash,  # type: ignore[attr-defined]
        "proposes": c.proposes,  # type: ignore[attr-defined]
        "cumulativeTotal": str(c.cumulative_total),  # type: ignore[attr-defined]
        "directory": str(c.directory),  # type: ignore[attr-defined]
        "alreadyClosed": c.already_closed,  # type: ignore[attr-defined]
    }


@epochs_app.command("close")
def epochs_close(
    epoch: Annotated[
        int | None,
        typer.Option(min=1, help="close this epoch (default: every due epoch, in order)"),
    ] = None,
    now: Annotated[
        int | None, typer.Option(help="unix seconds to close at (default: the clock)")
    ] = None,
) -> None:
    """Close due epochs (or --epoch E) and print one JSON line per epoch.

    An epoch closes once its cutoff has passed and the one before is closed; closing a
    closed epoch prints its stored result. A catch-up of more than ten epochs says so on
    stderr, with progress and a summary line. Exit 1 when --epoch E is not due yet, 2 on bad
    settings, 3 on database errors.
    """
    import time

    from settlement.jobs import close_due
    from settlement.services.close import close_epoch

    at = int(time.time()) if now is None else now
    with store_and_settings() as (store, settings):
        if epoch is None:
            closed = close_due(
                store,  # type: ignore[arg-type]
                settings,  # type: ignore[arg-type]
                at,
                wait_for_lock=True,
                say=lambda m: typer.echo(m, err=True),
            )
            if not closed:
                typer.echo("no epoch is due", err=True)
            for c in closed:
                echo_json(_closed_json(c))
        else:
            echo_json(_closed_json(close_epoch(store, settings, epoch, now=at)))  # type: ignore[arg-type]


@epochs_app.command("show")
def epochs_show(epoch: Annotated[int, typer.Argument(min=1)]) -> None:
    """Print the epoch's manifest.json, byte for byte as published."""
    from settlement.services.epochs import get_epoch

    with store_and_settings() as (store, settings):
        closed = get_epoch(store, settings, epoch)  # type: ignore[arg-type]
    sys.stdout.buffer.write(closed.manifest + b"\n")


@epochs_app.command("schedule")
def epochs_schedule() -> None:
    """Run the close scheduler in the foreground (W2E_SCHEDULER_INTERVAL) until interrupted.

    Several instances may share one PostgreSQL: an advisory lock keeps each epoch's close
    to one of them. With SQLite run exactly one.
    """
    import logging

    from settlement.jobs import CloseScheduler, run_until_interrupted

    log_to_stderr(logging.INFO, "%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("apscheduler").setLevel(logging.WARNING)  # a line per tick is noise
    from settlement.services.safety import refuse_unsafe

    with store_and_settings() as (store, settings):
        refuse_unsafe(settings, "settlement epochs schedule")  # type: ignore[arg-type]
        scheduler = CloseScheduler(
            store,  # type: ignore[arg-type]
            settings,  # type: ignore[arg-type]
            on_close=lambda c: echo_json(_closed_json(c)),
        )
        run_until_interrupted(scheduler)


@tree_app.command("build")
def tree_build(
    input: Annotated[str, typer.Option("--input", help="CSV with the header address,amount")],
    out: Annotated[str, typer.Option("--out", help="where to write the standard-v1 dump")],
) -> None:
    """Build the tree of a CSV of balances, write its dump and print its root.

    Values go in ascending address order and zero amounts get no leaf (PROTOCOL 6), so the
    dump's bytes are OpenZeppelin's `JSON.stringify(StandardMerkleTree.of(values,
    ["address", "uint256"]).dump())`. Exit 2 on a malformed CSV or a repeated address.
    """
    import csv
    from pathlib import Path

    from settlement.adapters.files import write_atomic
    from settlement.domain import merkle
    from settlement.errors import InputError, SettlementError

    try:
        with open_input(input) as stream:
            text = io.TextIOWrapper(stream, encoding="utf-8", newline="")
            rows = list(csv.reader(text))
        if not rows or [c.strip() for c in rows[0]] != ["address", "amount"]:
            raise InputError(f"{input}: the first line must be the header address,amount")
        balances: dict[str, int] = {}
        for n, row in enumerate(rows[1:], start=2):
            if not row:
                continue
            if len(row) != 2:
                raise InputError(f"{input} line {n}: expected address,amount")
            address, amount = row[0].strip().lower(), row[1].strip()
            if not amount.isdigit() or (amount != "0" and amount.startswith("0")):
                raise InputError(f"{input} line {n}: amount {amount!r} is not a decimal integer")
            if address in balances:
                raise InputError(f"{input} line {n}: address {address} appears twice")
            balances[address] = int(amount)
        tree = merkle.tree_for_balances(balances)
        if tree is None:
            raise InputError(f"{input}: no positive amount, so no tree (root {merkle.ZERO_ROOT})")
        write_atomic(Path(out).resolve(), tree.dump_json())
    except SettlementError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(error.exit_code) from None
    typer.echo(tree.root)
    typer.echo(f"{len(tree)} leaves; dump written to {out}", err=True)


@tree_app.command("prove")
def tree_prove(
    dump: Annotated[str, typer.Option("--dump", help="a standard-v1 dump")],
    account: Annotated[str, typer.Option("--account", help="0x address of the leaf")],
) -> None:
    """Print the account's leaf and proof as JSON: {account, amount, proof, root}.

    Exit 2 when the dump is invalid or holds no leaf for the account.
    """
    from settlement.domain import merkle
    from settlement.errors import SettlementError

    try:
        with open_input(dump) as stream:
            tree = merkle.MerkleTree.load(stream.read())
        index = tree.index_of(account)
        address, amount = tree.values[index]
        proof = tree.proof(index)
    except SettlementError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(error.exit_code) from None
    echo_json({"account": address, "amount": str(amount), "proof": proof, "root": tree.root})

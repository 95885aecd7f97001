"""`settlement keys`: API keys of the ingest API (create, revoke, list) and the admin log,
straight on the store at W2E_DATABASE_URL."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from settlement.cli.common import cli_who, store_and_settings

app = typer.Typer(
    help="API keys: a client sending one is limited by the key's rate instead of its address's.",
    no_args_is_help=True,
)


def _when(at: int | None) -> str:
    return "" if at is None else time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(at))


@app.command("create")
def keys_create(
    name: Annotated[str, typer.Argument(help="who the key is for: 1 to 64 of [A-Za-z0-9_.:@-]")],
    rate: Annotated[float, typer.Option(help="batches per second, across all workers")] = 50.0,
    burst: Annotated[int, typer.Option(help="batches at once before the rate applies")] = 100,
) -> None:
    """Create a key and print its token once: only its SHA-256 is stored."""
    from rich.console import Console

    from settlement.services.access import create_key

    with store_and_settings() as (store, _):
        row, token = create_key(store, name, rate, burst, who=cli_who())  # type: ignore[arg-type]
    err = Console(stderr=True)
    err.print(
        f"[bold]key {row.name}[/] (id {row.id}): {rate:g} batches/s, burst {burst}. "
        "The token below is shown once and cannot be recovered: give it to the client, who "
        "sends it as the X-API-Key header."
    )
    typer.echo(token)  # alone on stdout, for scripts: `TOKEN=$(settlement keys create x)`


@app.command("revoke")
def keys_revoke(name: Annotated[str, typer.Argument(help="the key's name")]) -> None:
    """Revoke a key at once, on every worker and instance: its token then counts as none."""
    from rich.console import Console

    from settlement.services.access import revoke_key

    with store_and_settings() as (store, _):
        revoke_key(store, name, who=cli_who())  # type: ignore[arg-type]
    Console(stderr=True).print(f"key {name} revoked")


@app.command("list")
def keys_list() -> None:
    """Every key (never its token): name, rate, burst, created, revoked."""
    from rich.console import Console
    from rich.table import Table

    from settlement.services.access import keys

    with store_and_settings() as (store, _):
        rows = keys(store)  # type: ignore[arg-type]
    table = Table("id", "name", "batches/s", "burst", "created (UTC)", "revoked (UTC)")
    for row in rows:
        table.add_row(
            str(row.id),
            row.name,
            f"{1_000_000 / row.period_us:.4g}",
            str(row.burst),
            _when(row.created_at),
            _when(row.revoked_at),
        )
    Console().print(table)


def admin_log_command(
    limit: Annotated[int, typer.Option(min=1, max=100_000, help="latest entries shown")] = 50,
) -> None:
    """The admin log: every admin change (registries, keys), who made it and when."""
    from rich.console import Console
    from rich.table import Table

    from settlement.services.access import admin_log

    with store_and_settings() as (store, _):
        rows = admin_log(store, limit)  # type: ignore[arg-type]
    table = Table("id", "at (UTC)", "who", "action", "detail")
    for row in rows:
        table.add_row(str(row.id), _when(row.at), row.who, row.action, row.detail)
    Console().print(table)

"""`settlement config check` (the unsafe settings production mode refuses) and `settlement
config settings` (every setting with its default), as tables."""

from __future__ import annotations

import typer

app = typer.Typer(help="Inspect the W2E_* settings.", no_args_is_help=True)


@app.command("check")
def check() -> None:
    """List every setting production mode (W2E_ENV=production) refuses, and why.

    Exit 0 when there is none, 1 when there is any (whatever W2E_ENV says: the same
    findings stop `serve`, `submit` and `epochs schedule` in production; a short admin
    token stops them whenever dev mode is off), 2 on invalid settings. Secrets are never
    printed: keys are compared by address.
    """
    from rich.console import Console
    from rich.table import Table

    from settlement.config import load_settings
    from settlement.errors import SettlementError
    from settlement.services.safety import findings, refused

    try:
        settings = load_settings()
    except SettlementError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(error.exit_code) from None
    found = findings(settings)
    stopping = refused(settings, found)
    mode = f"W2E_ENV={settings.env}, dev mode {'on' if settings.dev_mode else 'off'}"
    console = Console(width=140, soft_wrap=False)
    if not found:
        console.print(f"settings safe for production ({mode})")
        return
    table = Table(title=f"unsafe settings ({mode})", show_lines=True)
    table.add_column("setting", overflow="fold")
    table.add_column("why", overflow="fold")
    table.add_column("start-up now")
    for f in found:
        table.add_row(f.settings, f.why, "refused" if f in stopping else "allowed")
    console.print(table)
    console.print(
        f"{len(found)} unsafe setting(s); W2E_ENV=production refuses every one of them at start-up"
    )
    raise typer.Exit(1)


@app.command("settings")
def settings_table(
    markdown: bool = typer.Option(
        False, "--markdown", help="print the Markdown table the README carries"
    ),
) -> None:
    """List every W2E_* setting with its default and what it does; with --markdown, the
    README's table. The values in force come from the environment, .env and the deployment
    record (W2E_DEPLOYMENT_FILE); `settlement config check` judges them. Exit 0."""
    from settlement.settings_table import settings_markdown

    if markdown:
        typer.echo(settings_markdown(), nl=False)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="W2E_* settings", show_lines=False)
    for column in ("variable", "default", "what it does"):
        table.add_column(column, overflow="fold")
    for line in settings_markdown().splitlines()[2:]:
        cells = [c.strip().replace("`", "") for c in line.strip("|").split(" | ")]
        table.add_row(*cells)
    Console(width=160).print(table)

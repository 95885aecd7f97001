"""Typer entry point `settlement`: one sub-command group per use case."""

from __future__ import annotations

import typer

from settlement import __version__

app = typer.Typer(
    name="settlement",
    help="W2E settlement engine: verify receipts, simulate traffic, close epochs, post roots.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # never print locals: they may hold keys
)


@app.command()
def version() -> None:
    """Print the package version."""
    typer.echo(__version__)


if __name__ == "__main__":
    app()

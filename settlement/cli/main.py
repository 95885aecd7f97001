"""Typer entry point `settlement`: builds the app and registers one group per module."""

from __future__ import annotations

import typer

from settlement import __version__
from settlement.cli import chain, claim, config, demo, epochs, receipts, registry, serve, sim
from settlement.cli.audit import audit
from settlement.cli.correct import cli_correct
from settlement.cli.keys import admin_log_command
from settlement.cli.keys import app as keys_app
from settlement.cli.keystore import app as keystore_app
from settlement.cli.submit import cli_submit

app = typer.Typer(
    name="settlement",
    help="W2E settlement engine: verify receipts, simulate traffic, close epochs, post roots.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # never print locals: they may hold keys
)


@app.callback()
def main() -> None:
    """W2E settlement engine."""


@app.command()
def version() -> None:
    """Print the package version."""
    typer.echo(__version__)


# Registration order is the order `settlement --help` lists them in: keep it.
app.add_typer(receipts.app, name="receipts")
app.command()(serve.serve)
app.command()(chain.deploy)
claim.register(app)  # claim, account, nodes
app.add_typer(registry.app, name="registry")
app.add_typer(keys_app, name="keys")
app.command("admin-log")(admin_log_command)
app.command("simulate")(sim.simulate)
app.add_typer(epochs.epochs_app, name="epochs")
app.add_typer(epochs.tree_app, name="tree")
app.command("submit")(cli_submit)
app.command("correct")(cli_correct)
app.command("demo")(demo.demo)
app.add_typer(config.app, name="config")
app.command("audit")(audit)
app.add_typer(keystore_app, name="keystore")


if __name__ == "__main__":
    app()

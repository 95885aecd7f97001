"""Typer entry point `settlement`: registers one group or command per module, lazily, and
turns every error into one `error:` line and an exit code.

Each command's module is imported only when that command runs or its help is shown, so
`settlement X --help` loads Typer and module X, not web3, SQLAlchemy or uvicorn. The
modules themselves import those inside their command functions.
tests/unit/test_cli_imports.py fails when a heavy module is loaded by the entry point or
by any command's --help.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from settlement import __version__

# name -> "module:attribute", in the order `settlement --help` lists them. The attribute
# is a Typer app (a group) or a function (a command). Adding a command is one line here.
COMMANDS: dict[str, str] = {
    "receipts": "settlement.cli.receipts:app",
    "serve": "settlement.cli.serve:serve",
    "deploy": "settlement.cli.chain:deploy",
    "claim": "settlement.cli.claim:claim",
    "account": "settlement.cli.claim:account",
    "nodes": "settlement.cli.nodes:app",
    "registry": "settlement.cli.registry:app",
    "keys": "settlement.cli.keys:app",
    "admin-log": "settlement.cli.keys:admin_log_command",
    "simulate": "settlement.cli.sim:simulate",
    "epochs": "settlement.cli.epochs:epochs_app",
    "tree": "settlement.cli.epochs:tree_app",
    "submit": "settlement.cli.submit:cli_submit",
    "correct": "settlement.cli.correct:cli_correct",
    "demo": "settlement.cli.demo:demo",
    "config": "settlement.cli.config:app",
    "audit": "settlement.cli.audit:audit",
    "keystore": "settlement.cli.keystore:app",
}
# Run by `settlement serve` in its child processes; not listed in --help.
HIDDEN: dict[str, str] = {
    "serve-child": "settlement.cli.serve:serve_child",
}

EXIT_CODES = (
    "Exit codes: 0 done; 1 the command's check failed (an audit mismatch, findings of config "
    "check); 2 bad input, usage, settings or keys; 3 chain, store or published data "
    "unreachable; 4 an unexpected internal error (a bug: rerun with --debug and report it); "
    "130 interrupted. Errors are one line on stderr, `error: ...`; --debug or W2E_DEBUG=1 "
    "adds the traceback."
)


class LazyGroup(TyperGroup):
    """Typer's group, with the commands of COMMANDS and HIDDEN imported on first use."""

    def list_commands(self, ctx: Any) -> list[str]:
        return [*self.commands, *(n for n in COMMANDS if n not in self.commands)]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name not in self.commands:
            target = COMMANDS.get(cmd_name) or HIDDEN.get(cmd_name)
            if target is None:
                return None
            self.commands[cmd_name] = _load(cmd_name, target, hidden=cmd_name in HIDDEN)
        return self.commands[cmd_name]


def _load(name: str, target: str, *, hidden: bool) -> Any:
    import importlib

    module, _, attribute = target.partition(":")
    obj = getattr(importlib.import_module(module), attribute)
    if isinstance(obj, typer.Typer):
        command = typer.main.get_group(obj)  # a group even with one command, as add_typer
    else:
        single = typer.Typer(add_completion=False, pretty_exceptions_show_locals=False)
        single.command(name, hidden=hidden)(obj)
        command = typer.main.get_command(single)
    command.name = name
    return command


app = typer.Typer(
    name="settlement",
    cls=LazyGroup,
    help="W2E settlement engine: verify receipts, simulate traffic, close epochs, post roots.",
    epilog=EXIT_CODES,
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # never print locals: they may hold keys
)


@app.callback()
def main(
    debug: Annotated[
        bool, typer.Option("--debug", help="print the traceback of an error (also W2E_DEBUG=1)")
    ] = False,
    log_format: Annotated[
        str | None,
        typer.Option(
            "--log-format",
            metavar="text|json",
            help="log lines of long-running commands (default: W2E_LOG_FORMAT, else text)",
        ),
    ] = None,
) -> None:
    """W2E settlement engine."""
    from settlement.cli.options import OPTIONS
    from settlement.logs import reset_logging

    reset_logging()  # a command run in-process after another logs as in a fresh process

    if log_format is not None and log_format not in ("text", "json"):
        raise typer.BadParameter("use text or json", param_hint="--log-format")
    OPTIONS.debug = OPTIONS.debug or debug
    OPTIONS.log_format = log_format


@app.command()
def version() -> None:
    """Print the package version."""
    typer.echo(__version__)


def run(args: list[str] | None = None) -> None:
    """The console script: the app, with every error one line and its exit code."""
    from settlement.cli.errors import report

    command = typer.main.get_command(app)
    try:
        command.main(args=args, prog_name="settlement", standalone_mode=True)
    except SystemExit:
        raise
    except BaseException as error:  # everything click did not handle: one line, no traceback
        sys.exit(report(error))


if __name__ == "__main__":
    run()

"""What several command groups share: reading an input file, a store for one command,
JSON lines out, and W2E amounts printed exactly."""

from __future__ import annotations

import contextlib
import io
import sys
from collections.abc import Iterator

import typer


@contextlib.contextmanager
def open_input(name: str) -> Iterator[io.BufferedReader]:
    """A receipts file (or stdin for -) opened for bytes; unreadable is an InputError."""
    from settlement.errors import InputError

    if name == "-":
        yield sys.stdin.buffer
        return
    try:
        stream = open(name, "rb")  # noqa: SIM115 - closed below, errors mapped
    except OSError as error:
        raise InputError(f"cannot read {name}: {error.strerror or error}") from None
    try:
        yield stream
    except OSError as error:
        raise InputError(f"cannot read {name}: {error.strerror or error}") from None
    finally:
        stream.close()


def w2e(amount: int) -> str:
    """Base units as an exact decimal W2E amount (18 decimals), no floats."""
    whole, frac = divmod(amount, 10**18)
    return f"{whole}.{frac:018d}".rstrip("0").rstrip(".") if frac else str(whole)


@contextlib.contextmanager
def store_and_settings() -> Iterator[tuple[object, object]]:
    """(store, settings) for one registry command; errors become a message and an exit code."""

    from settlement.adapters.db.store import open_store
    from settlement.config import load_settings
    from settlement.errors import SettlementError

    try:
        settings = load_settings()
        with open_store(
            settings.database_url, sqlite_synchronous=settings.sqlite_synchronous
        ) as store:
            from settlement.services.genesis import pin_genesis

            yield store, pin_genesis(settings, store, say=lambda m: typer.echo(m, err=True))
    except SettlementError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(error.exit_code) from None


def cli_who() -> str:
    """`who` of an admin change made from this command line, for the admin log."""
    import getpass

    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no user name for this uid (containers)
        return "cli"


def log_to_stderr(level: int, fmt: str | None = None, *, component: str | None = None) -> None:
    """Logging of a long-running command: one line per event on stderr, as text or JSON
    (--log-format, else W2E_LOG_FORMAT), every URL cut to scheme://host:port (W2E_RPC_URL and
    W2E_DATABASE_URL may hold passwords and API keys). Calling it again replaces the handler,
    never adds one. `fmt` (a %-format of old) is ignored: the fields are settlement.logs'."""
    from settlement.cli.options import setup_command_logging

    del fmt
    setup_command_logging(level, component=component)


def echo_json(value: object) -> None:
    import orjson

    typer.echo(orjson.dumps(value).decode())

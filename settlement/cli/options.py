"""Typer options that more than one command declares: one spelling, one help text."""

from __future__ import annotations

import dataclasses
from typing import Annotated

import typer

ChainIdOption = Annotated[int | None, typer.Option(help="EIP-712 chainId (default: W2E_CHAIN_ID)")]
DistributorOption = Annotated[
    str | None, typer.Option(help="RewardDistributor address (default: W2E_DISTRIBUTOR)")
]


@dataclasses.dataclass
class GlobalOptions:
    """`settlement --debug --log-format F COMMAND`: set by the entry point's callback."""

    debug: bool = False
    log_format: str | None = None  # None: W2E_LOG_FORMAT


OPTIONS = GlobalOptions()


def log_format() -> str:
    """--log-format, else W2E_LOG_FORMAT, else text (also when the settings do not load:
    the command reports that in its own words)."""
    if OPTIONS.log_format is not None:
        return OPTIONS.log_format
    try:
        from settlement.config import load_settings

        return load_settings().log_format
    except Exception:  # invalid settings: the command says so itself
        return "text"


def setup_command_logging(level: int, *, component: str | None = None) -> None:
    """settlement.logs' one handler, in the format of log_format(), named after the command
    running (`submit`, `epochs-schedule`, `audit`) unless `component` is given."""
    import click

    from settlement.logs import setup_logging

    if component is None:
        ctx = click.get_current_context(silent=True)
        path = ctx.command_path.split(" ", 1) if ctx else []
        component = path[1].replace(" ", "-") if len(path) == 2 else "settlement"
    setup_logging(log_format(), component=component, level=level)


def serve_metrics(port: int, host: str, registry: object = None) -> None:
    """prometheus-client's metrics server; a port already taken is a ConfigError (exit 2:
    serve stops rather than restart a child that cannot bind, again and again)."""
    from prometheus_client import REGISTRY, start_http_server

    from settlement.errors import ConfigError

    try:
        start_http_server(port, addr=host, registry=registry or REGISTRY)
    except OSError as error:
        raise ConfigError(
            f"cannot serve metrics on {host}:{port}: {error.strerror or error}; choose another "
            "W2E_METRICS_PORT (or --metrics-port), or 0 for none"
        ) from None

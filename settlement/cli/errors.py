"""The CLI's last word on an error no command caught: one `error:` line on stderr and an exit
code (`settlement --help` lists them), the traceback only with --debug or W2E_DEBUG=1."""

from __future__ import annotations

import sys
import traceback

INTERNAL = 4  # an unexpected exception: a bug
CHAIN = 3  # chain, store or published data unreachable (as ChainError, StoreError)


def report(error: BaseException) -> int:
    """Print `error` as one line (and its traceback when debugging); return the exit code."""
    line, code = describe(error)
    if debugging():
        traceback.print_exception(error)
    from settlement import logs

    if logs.current_format == "json":  # a command logging JSON lines: this one too
        import logging

        logging.getLogger("settlement.cli").error("error: %s", line)
    else:
        print(f"error: {line}", file=sys.stderr)
    return code


def describe(error: BaseException) -> tuple[str, int]:
    """(message, exit code) of an error that reached the top of the CLI."""
    from settlement.errors import SettlementError, redact

    if isinstance(error, KeyboardInterrupt):
        return "interrupted", 130
    if isinstance(error, SettlementError):
        return str(error), error.exit_code
    if _chain_unreachable(error):
        return (
            f"chain unreachable at {_rpc_shown(error)} ({type(error).__name__}): start the node "
            "or fix W2E_RPC_URL",
            CHAIN,
        )
    if _http_unreachable(error):
        return f"cannot reach {redact(str(error)) or 'the server'} ({type(error).__name__})", CHAIN
    return (
        f"unexpected {type(error).__name__}: {redact(str(error))} (a bug: rerun with --debug "
        "or W2E_DEBUG=1 for the traceback, and report it)",
        INTERNAL,
    )


def debugging() -> bool:
    from settlement.cli.options import OPTIONS

    if OPTIONS.debug:
        return True
    try:
        from settlement.config import load_settings

        return load_settings().debug
    except Exception:  # settings that do not load cannot ask for a traceback
        return False


def _chain_unreachable(error: BaseException) -> bool:
    """A connection error of requests (web3's HTTP provider) or of web3 itself. Only checked
    when those libraries were loaded: nothing else can have raised their errors."""
    kinds: list[type[BaseException]] = []
    requests = sys.modules.get("requests")
    if requests is not None:
        kinds += [requests.exceptions.ConnectionError, requests.exceptions.Timeout]
    web3_exceptions = sys.modules.get("web3.exceptions")
    if web3_exceptions is not None:
        kinds += [
            getattr(web3_exceptions, name)
            for name in ("ProviderConnectionError", "TimeExhausted")
            if hasattr(web3_exceptions, name)
        ]
    return bool(kinds) and isinstance(error, tuple(kinds))


def _http_unreachable(error: BaseException) -> bool:
    httpx = sys.modules.get("httpx")
    return httpx is not None and isinstance(error, httpx.TransportError)


def _rpc_shown(error: BaseException) -> str:
    """The URL the failed request went to (the command's --rpc or W2E_RPC_URL), as
    scheme://host:port."""
    from settlement.errors import redact_url

    sent_to = getattr(getattr(error, "request", None), "url", None)
    if isinstance(sent_to, str) and sent_to:
        return redact_url(sent_to)
    try:
        from settlement.config import load_settings

        url = load_settings().rpc_url
    except Exception:
        url = None
    return redact_url(url) if url else "W2E_RPC_URL (unset)"

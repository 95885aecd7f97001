"""Node and contract failures mapped to settlement.errors: an RPC that does not answer, and
revert reasons with a hint that says what to do."""

from __future__ import annotations

import ast
import contextlib
from collections.abc import Iterator
from typing import Any

import requests
from eth_tester.exceptions import TransactionFailed as TesterRevert

from settlement.errors import RpcUnavailable, redact_url

ALREADY_KNOWN = ("already known", "already imported", "known transaction")
NONCE_USED = ("nonce too low", "nonce is too low")

REVERT_HINTS = {
    "RootPending": ": a root is pending; accept or revoke it first",
    "NoPendingRoot": ": no root is pending",
    "TooEarly": ": the challenge period has not passed; accept after validAt",
    "EpochNotAfter": ": the epoch is not after the accepted one",
    "TotalDecreased": ": a cumulative total may not go down outside a correction",
    "InvalidProof": ": the proof is not against root() or previousRoot(); fetch a fresh proof",
    "NothingToClaim": ": everything is already claimed",
    "InvalidRoot": ": the root is zero",
    "LengthMismatch": ": accounts, amounts and proofs differ in length",
    "AccessControlUnauthorizedAccount": ": the key lacks the role; use the right key",
    "ExpectedPause": ": the distributor is not paused; a correction needs the guardian's pause",
}


def revert_data(error: Exception) -> Any:
    if isinstance(error, TesterRevert) and error.args and isinstance(error.args[0], str):
        # eth-tester reports "execution reverted: b'...'" with the revert data as a bytes repr.
        _, _, tail = error.args[0].partition(": ")
        with contextlib.suppress(ValueError, SyntaxError):
            data = ast.literal_eval(tail)
            if isinstance(data, bytes):
                return data
        return None
    data = getattr(error, "data", None)
    if isinstance(data, dict):
        data = data.get("data")
    return data if isinstance(data, str | bytes) and data else None


def show_value(value: Any) -> str:
    return "0x" + value.hex() if isinstance(value, bytes) else str(value)


@contextlib.contextmanager
def rpc_errors(url: str | None) -> Iterator[None]:
    """Turn an unreachable JSON-RPC endpoint into RpcUnavailable, which says what to do."""
    try:
        yield
    except (requests.ConnectionError, requests.Timeout, ConnectionError) as error:
        raise RpcUnavailable(
            f"RPC {_shown(url)} does not answer ({type(error).__name__}): start the node or fix "
            "W2E_RPC_URL"
        ) from None
    except requests.RequestException as error:
        # requests' own message names the full URL (a hosted provider's key is in its path);
        # only the status is worth showing.
        status = getattr(getattr(error, "response", None), "status_code", None)
        raise RpcUnavailable(
            f"RPC {_shown(url)} refused the request ({type(error).__name__}"
            + (f" {status}" if status else "")
            + "): check W2E_RPC_URL and the provider's credentials"
        ) from None


def _shown(url: str | None) -> str:
    """The RPC URL as messages may show it: W2E_RPC_URL may hold a password or an API key."""
    return "(embedded chain)" if url is None else redact_url(url)

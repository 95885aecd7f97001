"""The one exception tree. Each error a user can meet says what was wrong and what to do."""

import logging
import re


class SettlementError(Exception):
    """Base of every error this package raises on purpose."""

    exit_code = 1
    http_status = 500


class ConfigError(SettlementError):
    """A setting is missing or invalid; fix the environment or the settings file."""

    exit_code = 2


class InputError(SettlementError):
    """A file or argument given by the user cannot be read or parsed."""

    exit_code = 2
    http_status = 422


class MalformedReceipt(InputError):
    """A wire receipt breaks PROTOCOL section 2's format; `field` names where, the message says what.

    Parsing raises it; `verify` and the batch paths turn it into a MALFORMED verdict, so
    one bad receipt in a file never stops the others.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message

    def __reduce__(self):  # keep (field, message) across process-pool pickling
        return (type(self), (self.field, self.message))


# http api: refusals of a whole request (a bad receipt inside a batch is a verdict, not these)


class PayloadTooLarge(InputError):
    """The request body or batch is above the server's limit; send smaller batches."""

    http_status = 413


class RequestTimeout(InputError):
    """The request body did not arrive within the server's deadline; send it again, faster or
    smaller."""

    http_status = 408

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class JsonTooComplex(InputError):
    """A JSON body nests deeper or holds more elements than the server reads; flatten or split it."""


class Unauthorized(SettlementError):
    """An admin endpoint was called without the right bearer token, or with admin disabled."""

    exit_code = 2
    http_status = 401


class Busy(SettlementError):
    """The server refuses work for now; `retry_after` says how many seconds to wait."""

    http_status = 503

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RateLimited(Busy):
    """This client sent more batches per second than the server's rate limit allows."""

    http_status = 429

    def __init__(self, message: str, retry_after: int = 1, bucket_kind: str = "address") -> None:
        super().__init__(message, retry_after)
        self.bucket_kind = bucket_kind  # "key" or "address": a metric label, never the key


class StoreError(SettlementError):
    """The database cannot be opened, migrated or written; the message says which and why."""

    exit_code = 3
    http_status = 503


class SchemaOutdated(StoreError):
    """The database schema is not at the code's Alembic head: run `alembic upgrade head`."""


class RegistryError(InputError):
    """A registry change was refused: an address or id is invalid, forbidden or unknown."""


class NotFound(RegistryError):
    """A registry entry or registration request named by the caller does not exist."""

    http_status = 404


class InvalidRegistration(RegistryError):
    """A signed node registration request is malformed, expired or not signed by its node."""


# chain: every message says what to do next


class ChainError(SettlementError):
    """A chain operation failed: RPC, transaction or contract state; the message says what to do."""

    exit_code = 3
    http_status = 502


class RpcUnavailable(ChainError):
    """The JSON-RPC endpoint does not answer; start the node or fix W2E_RPC_URL."""

    http_status = 503


class UnsafeSettings(ConfigError):
    """Settings that production mode (or any mode but dev mode) refuses; the message lists
    each one and why. `settlement config check` prints the same."""


class KeyUnavailable(ConfigError):
    """A signing key is not configured or cannot be decrypted; the message names the setting."""


class ArtifactMissing(ConfigError):
    """A compiled contract artifact is missing; run `forge build` and `scripts/export-abi`."""


class DeploymentMissing(ConfigError):
    """No deployment record at the configured path; run `settlement deploy` first."""


class ContractRevert(ChainError):
    """The contract refused a call; `error` is its custom error name (PROTOCOL section 7)."""

    def __init__(self, message: str, error: str | None = None) -> None:
        super().__init__(message)
        self.error = error


class InsolventProposal(ContractRevert):
    """A root's cumulative total is above what the distributor holds; fund it by `shortfall`."""

    def __init__(self, message: str, shortfall: int) -> None:
        super().__init__(message, "Insolvent")
        self.shortfall = shortfall


class DistributorPaused(ContractRevert):
    """The distributor is paused: claims and ordinary proposals wait for the guardian's unpause."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "EnforcedPause")


class StaleClaims(ContractRevert):
    """A correction's claimed amounts were not read at a mined block of the current pause: read
    them again (at a block from `pausedAtBlock()` on) and rebuild the correction."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "StaleClaims")


class DataUnavailable(SettlementError):
    """A published dataset file could not be read now (server down, network): try again later.
    Not a verdict on the data: a file that was read and is wrong is a mismatch instead."""

    exit_code = 3
    http_status = 502


class NothingToClaim(ChainError):
    """The account's cumulative amount is already claimed; wait for the next root."""

    exit_code = 1
    http_status = 409


class TransactionFailed(ChainError):
    """A transaction was mined but reverted, or was dropped; the message has its hash."""


# redaction: what a message may say about a URL that holds secrets


def redact_url(url: str) -> str:
    """`url` as scheme://host:port: userinfo (passwords), path and query (API keys of hosted
    RPC providers live there) are dropped. Text that is not a URL with a host becomes
    `<redacted>`. Every message that may carry W2E_RPC_URL or W2E_DATABASE_URL goes through
    this or `redact`."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url.strip())
        host = parts.hostname
        port = parts.port
    except ValueError:
        return "<redacted>"
    if "://" not in url or not parts.scheme:
        return "<redacted>"
    if not host:
        return f"{parts.scheme}://<redacted>"
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    return f"{parts.scheme}://{host}" + (f":{port}" if port is not None else "")


_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>(){},]*")


def redact(text: str) -> str:
    """`text` with every URL in it (scheme://...) redacted as `redact_url` does."""
    return _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)


class RedactUrls(logging.Filter):
    """A log filter that passes every record with the URLs in its message redacted: web3 logs
    its provider's full URI at DEBUG (`settlement.adapters.chain.provider` installs it there)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        shown = redact(message)
        if shown != message:
            # Arguments redacted one by one where that is enough: formatters such as
            # uvicorn's access log read record.args themselves.
            args = record.args
            if isinstance(args, tuple) and isinstance(record.msg, str):
                record.msg = redact(record.msg)
                record.args = tuple(redact(a) if isinstance(a, str) else a for a in args)
                try:
                    same = record.getMessage() == shown
                except (TypeError, ValueError):  # a URL in the format string held a %d
                    same = False
                if not same:
                    record.msg, record.args = shown, None
            else:
                record.msg, record.args = shown, None
        # A traceback repeats the exception's message (uvicorn logs one per failed request);
        # formatters print exc_text as it is once set.
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True

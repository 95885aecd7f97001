"""Player side of the protocol: hold a viewer key, open sessions, sign cumulative receipts.

The key never leaves this object: it is not logged, repr'd or pickled.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import coincurve
from eth_utils import to_checksum_address

from settlement.domain.receipts import (
    DeliveryReceipt,
    Domain,
    Params,
    Receipt,
    Rejected,
    ViewReceipt,
    digest,
    keccak,
    verify,
)
from settlement.errors import InputError, SettlementError

if TYPE_CHECKING:
    from settlement.client.info import ServiceInfo

UINT32_MAX = 2**32 - 1
UINT64_MAX = 2**64 - 1


class KeyLoadError(InputError):
    """The viewer key could not be loaded (missing, not 32 bytes, not a valid secp256k1 key)."""


class CounterWentDown(SettlementError):
    """A cumulative counter was asked to go down; receipts only ever carry growing totals."""

    exit_code = 2


class ReceiptArgumentError(InputError):
    """A value given to the signer cannot appear in a receipt (wrong length, out of range)."""


class UnacceptableReceipt(ReceiptArgumentError):
    """The service would reject this receipt whatever its state (PROTOCOL section 3 rows 3, 4
    and 6: TOO_OLD, IMPLAUSIBLE, SELF_DEALING), so the signer refuses to sign it.

    `reason` is the code the service would answer, `detail` its explanation, `signable_at`
    the earliest issuedAt at which the same totals pass (None when waiting does not help).
    """

    def __init__(self, reason: str, detail: str, signable_at: int | None, now: int) -> None:
        hint = ""
        if signable_at is not None:
            hint = (
                f"; the same totals can be signed from issuedAt {signable_at} "
                f"({signable_at - now} s from now): sign totals as they grow with playback"
            )
        super().__init__(f"the service would reject this receipt as {reason}: {detail}{hint}")
        self.reason = reason
        self.detail = detail
        self.signable_at = signable_at


def _load_private_key(secret: bytes) -> coincurve.PrivateKey:
    if len(secret) != 32:
        raise KeyLoadError(f"a viewer key is 32 bytes, got {len(secret)}")
    try:
        return coincurve.PrivateKey(secret)
    except ValueError:
        # Zero or >= the curve order: the only two ways 32 bytes fail to be a key.
        raise KeyLoadError("the viewer key is not a valid secp256k1 private key") from None


def _hex_to_bytes(text: str, what: str, length: int | None = None) -> bytes:
    body = text[2:] if text[:2] in ("0x", "0X") else text
    try:
        raw = bytes.fromhex(body)
    except ValueError:
        raise ReceiptArgumentError(f"{what} is not hex") from None
    if length is not None and len(raw) != length:
        raise ReceiptArgumentError(f"{what} must be {length} bytes, got {len(raw)}")
    return raw


def _as_bytes(value: bytes | str, what: str, length: int) -> bytes:
    raw = _hex_to_bytes(value, what, length) if isinstance(value, str) else bytes(value)
    if len(raw) != length:
        raise ReceiptArgumentError(f"{what} must be {length} bytes, got {len(raw)}")
    return raw


def _check_uint(value: int, what: str, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ReceiptArgumentError(f"{what} must be an int, got {type(value).__name__}")
    if not 0 <= value <= maximum:
        raise ReceiptArgumentError(f"{what} must be in [0, {maximum}], got {value}")
    return value


def address_of(key: coincurve.PrivateKey) -> bytes:
    """The 20-byte Ethereum address of a secp256k1 key."""
    return keccak(key.public_key.format(compressed=False)[1:])[-20:]


def sign_digest(key: coincurve.PrivateKey, message_digest: bytes) -> bytes:
    """Canonical 65-byte `r || s || v` of PROTOCOL section 2 over a 32-byte digest.

    libsecp256k1 always returns low-s (EIP-2) and RFC 6979 nonces, so the same key and
    digest always give the same bytes; `v` is the recovery id plus 27.
    """
    raw = key.sign_recoverable(message_digest, hasher=None)
    return raw[:64] + bytes((raw[64] + 27,))


class ReceiptSigner:
    """A player's viewer key bound to one EIP-712 domain.

    >>> info = SettlementClient(url).info()                        # doctest: +SKIP
    >>> signer = ReceiptSigner.from_hex(key_hex, info)               # doctest: +SKIP
    >>> session = signer.start_session(content_id, started_at)       # doctest: +SKIP
    >>> session.delivery(node, bytes_served=4_194_304, segments_served=4)    # doctest: +SKIP

    `domain` is a Domain, or the ServiceInfo of `SettlementClient.info()` (`GET /v1/info`):
    then the signer takes the service's domain, its receipt parameters and its clock.
    With parameters (from the service, or `params=`), a session refuses to sign a receipt
    the service would reject whatever its state (UnacceptableReceipt: TOO_OLD,
    IMPLAUSIBLE, SELF_DEALING); without, it signs what it is given.
    """

    __slots__ = ("_address", "_clock", "_domain", "_key", "_params", "_randbytes")

    def __init__(
        self,
        private_key: bytes | str,
        domain: Domain | ServiceInfo,
        *,
        params: Params | None = None,
        clock: Callable[[], float] | None = None,
        randbytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        secret = (
            _hex_to_bytes(private_key, "viewer key")
            if isinstance(private_key, str)
            else private_key
        )
        self._key = _load_private_key(bytes(secret))
        self._address = address_of(self._key)
        if isinstance(domain, Domain):
            self._domain = domain
            self._params = params
            self._clock = time.time if clock is None else clock
        else:  # a ServiceInfo: the service's domain, parameters and clock
            self._domain = domain.domain
            self._params = domain.params if params is None else params
            self._clock = domain.clock() if clock is None else clock
        self._randbytes = randbytes

    @classmethod
    def from_hex(cls, hex_key: str, domain: Domain | ServiceInfo, **kwargs) -> ReceiptSigner:
        """From a 64-digit hex key, with or without `0x`."""
        return cls(_hex_to_bytes(hex_key.strip(), "viewer key"), domain, **kwargs)

    @classmethod
    def from_keystore(
        cls, path: str | Path, password: str | bytes, domain: Domain | ServiceInfo, **kwargs
    ) -> ReceiptSigner:
        """From an encrypted JSON keystore (as written by eth-account, geth or clef)."""
        from eth_account import Account

        try:
            encrypted = Path(path).read_text()
        except OSError as exc:
            raise KeyLoadError(f"cannot read keystore {path}: {exc.strerror}") from None
        try:
            secret = bytes(Account.decrypt(encrypted, password))
        except (ValueError, KeyError, TypeError) as exc:
            # eth-account says "MAC mismatch" for a wrong password; never echo the content.
            raise KeyLoadError(
                f"cannot decrypt keystore {path}: {exc} (wrong password or not a keystore)"
            ) from None
        return cls(secret, domain, **kwargs)

    @classmethod
    def from_env(
        cls,
        name: str,
        domain: Domain | ServiceInfo,
        *,
        environ: Mapping[str, str] | None = None,
        **kwargs,
    ) -> ReceiptSigner:
        """From the hex key in the environment variable `name` (the player's own process).

        This is SDK code running in a player, not the service: the service reads its
        environment only through settlement.config.
        """
        env = os.environ if environ is None else environ
        value = env.get(name)
        if not value:
            raise KeyLoadError(f"environment variable {name} is not set (expected a hex key)")
        return cls.from_hex(value, domain, **kwargs)

    @property
    def address(self) -> bytes:
        """The viewer address (20 bytes) that every receipt of this signer names."""
        return self._address

    @property
    def address_hex(self) -> str:
        return to_checksum_address(self._address)

    @property
    def domain(self) -> Domain:
        return self._domain

    @property
    def params(self) -> Params | None:
        """The receipt parameters sessions check receipts against (None: no check)."""
        return self._params

    def __repr__(self) -> str:
        return f"ReceiptSigner(address={self.address_hex}, chain_id={self._domain.chain_id})"

    __str__ = __repr__

    def __reduce__(self):
        raise TypeError("ReceiptSigner holds a private key and cannot be pickled")

    def __copy__(self):
        raise TypeError("ReceiptSigner holds a private key and cannot be copied")

    def __deepcopy__(self, memo):
        raise TypeError("ReceiptSigner holds a private key and cannot be copied")

    def sign(self, receipt: Receipt) -> Receipt:
        """Sign any receipt that names this signer as viewer (no counter bookkeeping)."""
        if receipt.viewer != self._address:
            raise ReceiptArgumentError(
                f"receipt names viewer 0x{receipt.viewer.hex()}, this signer is {self.address_hex}"
            )
        signature = sign_digest(self._key, digest(receipt, self._domain))
        return dataclasses.replace(receipt, signature=signature)

    def start_session(
        self,
        content_id: bytes | str,
        started_at: int | None = None,
        *,
        session_id: bytes | str | None = None,
    ) -> PlayerSession:
        """Open a session: a fresh random 32-byte id unless given, `started_at` defaults to now."""
        sid = self._randbytes(32) if session_id is None else _as_bytes(session_id, "session id", 32)
        start = int(self._clock()) if started_at is None else started_at
        return PlayerSession(
            self,
            _as_bytes(content_id, "content id", 32),
            _check_uint(start, "startedAt", UINT64_MAX),
            sid,
        )

    def now(self) -> int:
        """The signer's clock in whole seconds (the service's, for a signer made from its
        ServiceInfo): what `issuedAt` and `startedAt` default to."""
        return int(self._clock())

    _now = now

    def _sign_checked(self, receipt: Receipt) -> Receipt:
        """Sign; with parameters, refuse what the service rejects whatever its state."""
        signed = self.sign(receipt)
        if self._params is None:
            return signed
        # now = issuedAt: the arrival time is the service's business (ISSUED_IN_FUTURE and
        # max_age); what remains are the checks fixed by the receipt's own values.
        verdict = verify(signed, self._domain, self._params, signed.issued_at)
        if isinstance(verdict, Rejected):
            raise UnacceptableReceipt(
                verdict.reason.value,
                verdict.detail,
                _signable_at(signed, self._params),
                self._now(),
            )
        return signed


def _signable_at(receipt: Receipt, params: Params) -> int | None:
    """The earliest issuedAt at which `receipt`'s totals pass the elapsed-time checks of
    PROTOCOL section 3 row 4 (None when no issuedAt does, or when time is not the problem)."""
    base = receipt.started_at - params.segment_seconds  # elapsed = issuedAt - base
    if isinstance(receipt, ViewReceipt):
        earliest = base + receipt.watch_seconds
    else:
        if receipt.bytes_served < params.min_segment_bytes * receipt.segments_served:
            return None
        bits = 8 * receipt.bytes_served
        earliest = max(
            base + -(-bits // params.max_bitrate),
            base + params.segment_seconds * receipt.segments_served - params.max_lead_seconds,
        )
    if earliest <= receipt.issued_at:
        return None
    if earliest - receipt.started_at > params.max_session_age:
        return None
    return earliest


@dataclasses.dataclass(frozen=True, slots=True)
class DeliveryCounters:
    bytes_served: int
    segments_served: int


class PlayerSession:
    """One playback: a session id, one content id and one startedAt for all its receipts.

    Counters are cumulative per node (delivery) and per session (view). Asking for a
    lower total than one already signed raises CounterWentDown: such a pair of
    receipts would cross and quarantine the session (PROTOCOL section 3, CONFLICT).
    Re-signing the same totals is allowed (the service answers `duplicate`).
    """

    __slots__ = ("_delivery", "_lock", "_signer", "_view", "content_id", "session_id", "started_at")

    def __init__(
        self, signer: ReceiptSigner, content_id: bytes, started_at: int, session_id: bytes
    ) -> None:
        self._signer = signer
        self.session_id = session_id
        self.content_id = content_id
        self.started_at = started_at
        self._delivery: dict[bytes, DeliveryCounters] = {}
        self._view: int | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (
            f"PlayerSession(session_id=0x{self.session_id.hex()}, "
            f"content_id=0x{self.content_id.hex()}, started_at={self.started_at})"
        )

    @property
    def viewer(self) -> bytes:
        return self._signer.address

    def delivery_counters(self) -> dict[bytes, DeliveryCounters]:
        """The last signed totals per node."""
        with self._lock:
            return dict(self._delivery)

    @property
    def watch_seconds(self) -> int | None:
        """The last signed watch total, None before the first view receipt."""
        return self._view

    def _issued(self, issued_at: int | None) -> int:
        issued = self._signer._now() if issued_at is None else issued_at
        _check_uint(issued, "issuedAt", UINT64_MAX)
        if issued < self.started_at:
            raise ReceiptArgumentError(
                f"issuedAt {issued} is before the session's startedAt {self.started_at}"
            )
        return issued

    def delivery(
        self,
        node: bytes | str,
        bytes_served: int,
        segments_served: int,
        issued_at: int | None = None,
    ) -> DeliveryReceipt:
        """Sign the cumulative totals served by `node` in this session so far.

        With parameters, UnacceptableReceipt when the totals outrun the session's elapsed
        time (`8 * bytes_served <= max_bitrate * elapsed`, `segment_seconds *
        segments_served <= elapsed + max_lead_seconds`, elapsed = issuedAt - startedAt +
        segment_seconds) or are under min_segment_bytes per segment; nothing is recorded.
        """
        node_b = _as_bytes(node, "node address", 20)
        _check_uint(bytes_served, "bytesServed", UINT64_MAX)
        _check_uint(segments_served, "segmentsServed", UINT32_MAX)
        issued = self._issued(issued_at)
        with self._lock:
            last = self._delivery.get(node_b)
            if last is not None and (
                bytes_served < last.bytes_served or segments_served < last.segments_served
            ):
                raise CounterWentDown(
                    f"node 0x{node_b.hex()}: totals ({bytes_served} bytes, {segments_served} "
                    f"segments) are below the last signed ({last.bytes_served} bytes, "
                    f"{last.segments_served} segments); pass cumulative totals for the session"
                )
            receipt = self._signer._sign_checked(
                DeliveryReceipt(
                    session_id=self.session_id,
                    viewer=self._signer.address,
                    node=node_b,
                    content_id=self.content_id,
                    started_at=self.started_at,
                    bytes_served=bytes_served,
                    segments_served=segments_served,
                    issued_at=issued,
                )
            )
            self._delivery[node_b] = DeliveryCounters(bytes_served, segments_served)
        return receipt

    def view(self, watch_seconds: int, issued_at: int | None = None) -> ViewReceipt:
        """Sign the cumulative seconds watched in this session so far.

        watchSeconds cannot exceed issuedAt - startedAt + segment_seconds (PROTOCOL section 3,
        IMPLAUSIBLE): with parameters, a larger total raises UnacceptableReceipt naming the
        issuedAt from which it can be signed; nothing is recorded.
        """
        _check_uint(watch_seconds, "watchSeconds", UINT32_MAX)
        issued = self._issued(issued_at)
        with self._lock:
            if self._view is not None and watch_seconds < self._view:
                raise CounterWentDown(
                    f"watchSeconds {watch_seconds} is below the last signed {self._view}; "
                    "pass the cumulative total for the session"
                )
            receipt = self._signer._sign_checked(
                ViewReceipt(
                    session_id=self.session_id,
                    viewer=self._signer.address,
                    content_id=self.content_id,
                    started_at=self.started_at,
                    watch_seconds=watch_seconds,
                    issued_at=issued,
                )
            )
            self._view = watch_seconds
        return receipt

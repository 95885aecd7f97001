"""Receipts of PROTOCOL section 2: types, wire format, EIP-712 digest and stateless verdicts.

Pure: `now` is a parameter, nothing here reads a clock, the environment or the network.
"""

from __future__ import annotations

import json
import os
import struct
import sys
import threading
from binascii import unhexlify as _unhexlify
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Final

import orjson
from coincurve import PrivateKey, PublicKey
from coincurve._libsecp256k1 import ffi as _ffi
from coincurve._libsecp256k1 import lib as _lib
from coincurve.context import GLOBAL_CONTEXT
from tiny_keccak import keccak256 as _keccak256

from settlement.errors import InputError, MalformedReceipt

if TYPE_CHECKING:
    from concurrent.futures import ProcessPoolExecutor

    from settlement.config import Settings


# keccak256 of bytes. tiny-keccak (Rust) costs 0.4 us a call, safe-pysha3 0.7 us and
# pycryptodome's ctypes path 5 us; the digest takes two calls per receipt.
def keccak(data: bytes | bytearray | memoryview) -> bytes:
    """keccak256 (Ethereum's, not SHA3-256) of any bytes-like value."""
    return _keccak256(data if type(data) is bytes else bytes(data))


__all__ = [
    "ACCEPTED",
    "Accepted",
    "DeliveryReceipt",
    "Domain",
    "MalformedReceipt",
    "Params",
    "Reason",
    "Receipt",
    "Rejected",
    "Verdict",
    "ViewReceipt",
    "address_of",
    "digest",
    "dumps_wire",
    "keccak",
    "parse_wire",
    "recover_signer",
    "shutdown_pool",
    "sign",
    "to_wire",
    "typed_data",
    "verify",
    "verify_batch",
    "verify_wire",
    "verify_wire_batch",
    "wire_items_from_array",
]

UINT32_MAX: Final = 2**32 - 1
UINT64_MAX: Final = 2**64 - 1
# secp256k1 group order; EIP-2 caps s at floor(n/2) so each signature has one form only.
SECP256K1_N: Final = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
SECP256K1_HALF_N: Final = SECP256K1_N // 2

_CTX: Final = GLOBAL_CONTEXT.ctx
_EC_UNCOMPRESSED: Final = _lib.SECP256K1_EC_UNCOMPRESSED

KIND_DELIVERY: Final = "delivery"
KIND_VIEW: Final = "view"


class Reason(StrEnum):
    """Stable rejection codes of PROTOCOL section 3 (stored, counted and published as is)."""

    MALFORMED = "MALFORMED"
    NON_CANONICAL_SIGNATURE = "NON_CANONICAL_SIGNATURE"
    ISSUED_IN_FUTURE = "ISSUED_IN_FUTURE"
    TOO_OLD = "TOO_OLD"
    IMPLAUSIBLE = "IMPLAUSIBLE"
    UNKNOWN_NODE = "UNKNOWN_NODE"
    UNKNOWN_CONTENT = "UNKNOWN_CONTENT"
    UNKNOWN_VIEWER = "UNKNOWN_VIEWER"
    SELF_DEALING = "SELF_DEALING"
    SIGNER_MISMATCH = "SIGNER_MISMATCH"
    CONFLICT = "CONFLICT"


# --- EIP-712 types --------------------------------------------------------------------

DOMAIN_TYPE: Final = (
    "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
)
DELIVERY_TYPE: Final = (
    "DeliveryReceipt(bytes32 sessionId,address viewer,address node,bytes32 contentId,"
    "uint64 startedAt,uint64 bytesServed,uint32 segmentsServed,uint64 issuedAt)"
)
VIEW_TYPE: Final = (
    "ViewReceipt(bytes32 sessionId,address viewer,bytes32 contentId,"
    "uint64 startedAt,uint32 watchSeconds,uint64 issuedAt)"
)
DOMAIN_NAME: Final = "W2E Settlement"
DOMAIN_VERSION: Final = "1"

DOMAIN_TYPEHASH: Final = keccak(DOMAIN_TYPE.encode())
DELIVERY_TYPEHASH: Final = keccak(DELIVERY_TYPE.encode())
VIEW_TYPEHASH: Final = keccak(VIEW_TYPE.encode())
_NAME_HASH: Final = keccak(DOMAIN_NAME.encode())
_VERSION_HASH: Final = keccak(DOMAIN_VERSION.encode())

# One C call lays out the whole encodeData: typehash, then each field as a 32-byte word
# (addresses and uints left-padded with zeros, bytes32 as is).
_DELIVERY_STRUCT: Final = struct.Struct(">32s32s12x20s12x20s32s24xQ24xQ28xI24xQ")
_VIEW_STRUCT: Final = struct.Struct(">32s32s12x20s32s24xQ28xI24xQ")


@dataclass(frozen=True, slots=True)
class Domain:
    """EIP-712 domain "W2E Settlement" v1 of one chain and RewardDistributor."""

    chain_id: int
    verifying_contract: bytes  # 20 bytes
    _prefix: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if type(self.chain_id) is not int or not 0 <= self.chain_id < 2**256:
            raise InputError(f"chain id must be an integer in [0, 2**256), got {self.chain_id!r}")
        if type(self.verifying_contract) is not bytes or len(self.verifying_contract) != 20:
            raise InputError("verifying contract (distributor) must be a 20-byte address")
        separator = keccak(
            DOMAIN_TYPEHASH
            + _NAME_HASH
            + _VERSION_HASH
            + self.chain_id.to_bytes(32, "big")
            + bytes(12)
            + self.verifying_contract
        )
        # "\x19\x01" || separator is the same for every receipt: concatenate it once.
        object.__setattr__(self, "_prefix", b"\x19\x01" + separator)

    @property
    def separator(self) -> bytes:
        return self._prefix[2:]

    @classmethod
    def from_hex(cls, chain_id: int, verifying_contract: str) -> Domain:
        """Domain from a 0x address string, as given on a command line or in settings."""
        try:
            address = _hex(verifying_contract, 20, "distributor")
        except MalformedReceipt as error:
            raise InputError(
                f"{error}; give the RewardDistributor address as 0x + 40 hex digits"
            ) from None
        return cls(chain_id, address)

    @classmethod
    def from_settings(
        cls, settings: Settings, chain_id: int | None = None, distributor: str | None = None
    ) -> Domain:
        """The settings' domain; `chain_id` / `distributor` override them when given."""
        return cls.from_hex(
            settings.chain_id if chain_id is None else chain_id,
            settings.distributor if distributor is None else distributor,
        )


@dataclass(frozen=True, slots=True)
class DeliveryReceipt:
    """A viewer's cumulative statement of what one node served it in one session."""

    session_id: bytes  # 32
    viewer: bytes  # 20
    node: bytes  # 20
    content_id: bytes  # 32
    started_at: int  # uint64
    bytes_served: int  # uint64
    segments_served: int  # uint32
    issued_at: int  # uint64
    signature: bytes = b""  # 65: r || s || v

    kind = KIND_DELIVERY  # class attribute, not a field: the wire "kind"


@dataclass(frozen=True, slots=True)
class ViewReceipt:
    """A viewer's cumulative statement of how long it watched in one session."""

    session_id: bytes  # 32
    viewer: bytes  # 20
    content_id: bytes  # 32
    started_at: int  # uint64
    watch_seconds: int  # uint32
    issued_at: int  # uint64
    signature: bytes = b""  # 65: r || s || v

    kind = KIND_VIEW


Receipt = DeliveryReceipt | ViewReceipt


@dataclass(frozen=True, slots=True)
class Params:
    """The receipt parameters of PROTOCOL section 3, in seconds, bytes and bits per second."""

    genesis: int
    clock_skew: int
    max_age: int
    max_session_age: int
    segment_seconds: int
    max_bitrate: int
    max_lead_seconds: int
    min_segment_bytes: int

    @classmethod
    def defaults(cls) -> Params:
        """The settings' declared defaults, whatever the environment says."""
        from settlement.config import Settings

        return cls.from_settings(Settings.model_construct())

    @classmethod
    def from_settings(cls, settings: Settings) -> Params:
        return cls(
            genesis=settings.genesis,
            clock_skew=settings.clock_skew,
            max_age=settings.max_age,
            max_session_age=settings.max_session_age,
            segment_seconds=settings.segment_seconds,
            max_bitrate=settings.max_bitrate,
            max_lead_seconds=settings.max_lead_seconds,
            min_segment_bytes=settings.min_segment_bytes,
        )


@dataclass(frozen=True, slots=True)
class Accepted:
    """Passed every stateless check of PROTOCOL section 3 (the store decides the rest)."""

    accepted = True  # class attribute: lets callers branch without isinstance


@dataclass(frozen=True, slots=True)
class Rejected:
    """Failed a check: `reason` is the stable code, `detail` says what for a human."""

    reason: Reason
    detail: str = ""

    accepted = False


Verdict = Accepted | Rejected
ACCEPTED: Final = Accepted()


# --- structure checks -----------------------------------------------------------------


def _structure_error(r: Any) -> MalformedReceipt | None:
    """First structural fault of a receipt object, in wire field order; None if sound.

    Receipts built by hand (not by parse_wire) may carry anything; this turns that into a
    MALFORMED verdict instead of an exception deep in the digest.
    """
    if type(r) is DeliveryReceipt:  # exact types, as verify() checks them
        spec = _DELIVERY_SPEC
    elif type(r) is ViewReceipt:
        spec = _VIEW_SPEC
    else:
        return MalformedReceipt("kind", f"not a receipt: {type(r).__name__}")
    for wire_name, attr, kind, size in spec:
        value = getattr(r, attr)
        if kind == "hex":
            if type(value) is not bytes or len(value) != size:
                got = f"{len(value)} bytes" if isinstance(value, bytes) else type(value).__name__
                return MalformedReceipt(wire_name, f"must be {size} bytes, got {got}")
        elif not isinstance(value, int):  # as struct.pack: an int, or a bool as 0 / 1
            return MalformedReceipt(wire_name, f"must be an int, got {type(value).__name__}")
        elif not 0 <= value <= size:
            bits = 32 if size == UINT32_MAX else 64
            return MalformedReceipt(wire_name, f"out of range for uint{bits}: {value}")
    return None


# --- digest and signatures ------------------------------------------------------------


def digest(receipt: Receipt, domain: Domain) -> bytes:
    """EIP-712 digest keccak256("\\x19\\x01" || domainSeparator || hashStruct(receipt)).

    Raises MalformedReceipt for a receipt whose fields do not fit their types.
    """
    encoded = _pack_sound(receipt, signed=False)
    if encoded is None:
        raise _structure_error(receipt) or MalformedReceipt("(receipt)", "malformed receipt")
    return keccak(domain._prefix + keccak(encoded))


_EIP712_TYPES: Final = {
    "EIP712Domain": [
        {"name": "name", "type": "string"},
        {"name": "version", "type": "string"},
        {"name": "chainId", "type": "uint256"},
        {"name": "verifyingContract", "type": "address"},
    ],
    "DeliveryReceipt": [
        {"name": "sessionId", "type": "bytes32"},
        {"name": "viewer", "type": "address"},
        {"name": "node", "type": "address"},
        {"name": "contentId", "type": "bytes32"},
        {"name": "startedAt", "type": "uint64"},
        {"name": "bytesServed", "type": "uint64"},
        {"name": "segmentsServed", "type": "uint32"},
        {"name": "issuedAt", "type": "uint64"},
    ],
    "ViewReceipt": [
        {"name": "sessionId", "type": "bytes32"},
        {"name": "viewer", "type": "address"},
        {"name": "contentId", "type": "bytes32"},
        {"name": "startedAt", "type": "uint64"},
        {"name": "watchSeconds", "type": "uint32"},
        {"name": "issuedAt", "type": "uint64"},
    ],
}


def typed_data(receipt: Receipt, domain: Domain) -> dict[str, Any]:
    """The receipt as standard EIP-712 typed data (eth_signTypedData_v4, eth-account's full_message).

    Wallet-based players sign this; tests hash it with eth-account to check `digest`.
    """
    primary = "DeliveryReceipt" if type(receipt) is DeliveryReceipt else "ViewReceipt"
    message = to_wire(receipt)
    del message["kind"], message["signature"]
    return {
        "types": {"EIP712Domain": _EIP712_TYPES["EIP712Domain"], primary: _EIP712_TYPES[primary]},
        "primaryType": primary,
        "domain": {
            "name": DOMAIN_NAME,
            "version": DOMAIN_VERSION,
            "chainId": domain.chain_id,
            "verifyingContract": "0x" + domain.verifying_contract.hex(),
        },
        "message": message,
    }


def sign(receipt: Receipt, domain: Domain, private_key: bytes) -> Receipt:
    """A copy of `receipt` signed by `private_key` (32 bytes), canonical: low-s, v in {27, 28}."""
    # libsecp256k1 always produces low-s, so the result passes the canonical check.
    rsv = PrivateKey(private_key).sign_recoverable(digest(receipt, domain), hasher=None)
    return replace(receipt, signature=rsv[:64] + bytes((rsv[64] + 27,)))


def address_of(private_key: bytes) -> bytes:
    """The 20-byte Ethereum address of a 32-byte private key."""
    return keccak(PrivateKey(private_key).public_key.format(compressed=False)[1:])[12:]


def _canonical_error(sig: bytes) -> str | None:
    v = sig[64]
    if v != 27 and v != 28:
        return f"v must be 27 or 28, got {v}"
    r = int.from_bytes(sig[:32], "big")
    if not 0 < r < SECP256K1_N:
        return "r must be in [1, n)"
    s = int.from_bytes(sig[32:64], "big")
    if not 0 < s <= SECP256K1_HALF_N:
        return "s must be in [1, n/2] (EIP-2 low-s)" if s else "s must not be zero"
    return None


def _recover(digest32: bytes, sig: bytes) -> bytes | None:
    """Signer address of a canonical r||s||v signature, or None when recovery fails."""
    try:
        public = PublicKey.from_signature_and_message(
            sig[:64] + _RECID[sig[64]], digest32, hasher=None
        )
    except ValueError:  # r is no x-coordinate of the curve: no key signed this
        return None
    return keccak(public.format(compressed=False)[1:])[12:]


_RECID: Final = {27: b"\x00", 28: b"\x01"}
_ZERO32: Final = bytes(32)
_N_BYTES: Final = SECP256K1_N.to_bytes(32, "big")
_HALF_N_BYTES: Final = SECP256K1_HALF_N.to_bytes(32, "big")


def recover_signer(receipt: Receipt, domain: Domain) -> bytes | None:
    """Address that signed `receipt` under `domain` (canonical signatures only), else None."""
    encoded = _pack_sound(receipt)
    if encoded is None or _canonical_error(receipt.signature) is not None:
        return None
    return _recover(keccak(domain._prefix + keccak(encoded)), receipt.signature)


# --- verdicts -------------------------------------------------------------------------


class _Scratch(threading.local):
    """Per-thread output buffer for the uncompressed public key (cffi calls drop the GIL)."""

    def __init__(self) -> None:
        out = _ffi.new("unsigned char[65]")
        self.bufs = (out, _ffi.new("size_t *", 65))


_scratch = _Scratch()


def _pack_sound(r: Any, signed: bool = True) -> bytes | None:
    """encodeData of a receipt, or None if it is not structurally sound (see verify()).

    `signed=False` ignores the signature, which the digest does not cover.
    """
    error = _structure_error(r)
    if error is not None and (signed or error.field != "signature"):
        return None
    if type(r) is DeliveryReceipt:
        return _DELIVERY_STRUCT.pack(
            DELIVERY_TYPEHASH,
            r.session_id,
            r.viewer,
            r.node,
            r.content_id,
            r.started_at,
            r.bytes_served,
            r.segments_served,
            r.issued_at,
        )
    return _VIEW_STRUCT.pack(
        VIEW_TYPEHASH,
        r.session_id,
        r.viewer,
        r.content_id,
        r.started_at,
        r.watch_seconds,
        r.issued_at,
    )


# A caller's checks that run after check 4 and before check 6's viewer == node and the
# signature: ingest passes its registry checks (5) and the creator half of check 6 here, so
# cheap rejections never pay for a recovery. Called as gate(viewer, node or None, contentId).
Gate = Callable[[bytes, "bytes | None", bytes], "Rejected | None"]


def verify(
    receipt: Receipt, domain: Domain, params: Params, now: int, gate: Gate | None = None
) -> Verdict:
    """Stateless verdict of PROTOCOL section 3, checks 1-4, 6 (viewer == node) and 7, in order.

    Registry checks (5), creator self-dealing and the stateful verdicts (8-11) belong to
    ingest, which holds the state and passes checks 5-6 as `gate`; anything this returns
    as Rejected is final.
    """
    # _pack_sound inlined: this runs once per receipt and a call is 1% of its cost.
    encoded = None
    try:
        sig = receipt.signature
        viewer = receipt.viewer
        if type(sig) is bytes and len(sig) == 65 and type(viewer) is bytes:
            t = type(receipt)
            started = receipt.started_at
            issued = receipt.issued_at
            if t is DeliveryReceipt:
                node = receipt.node
                amount = receipt.bytes_served
                segments = receipt.segments_served
                if (
                    type(receipt.session_id) is bytes
                    and len(receipt.session_id) == 32
                    and len(viewer) == 20
                    and type(node) is bytes
                    and len(node) == 20
                    and type(receipt.content_id) is bytes
                    and len(receipt.content_id) == 32
                ):
                    encoded = _DELIVERY_STRUCT.pack(
                        DELIVERY_TYPEHASH,
                        receipt.session_id,
                        viewer,
                        node,
                        receipt.content_id,
                        started,
                        amount,
                        segments,
                        issued,
                    )
            elif t is ViewReceipt:
                node = None
                amount = receipt.watch_seconds
                segments = 0
                if (
                    type(receipt.session_id) is bytes
                    and len(receipt.session_id) == 32
                    and len(viewer) == 20
                    and type(receipt.content_id) is bytes
                    and len(receipt.content_id) == 32
                ):
                    encoded = _VIEW_STRUCT.pack(
                        VIEW_TYPEHASH,
                        receipt.session_id,
                        viewer,
                        receipt.content_id,
                        started,
                        amount,
                        issued,
                    )
    except (TypeError, AttributeError, struct.error):
        encoded = None
    if encoded is None:
        error = _structure_error(receipt)
        return Rejected(Reason.MALFORMED, str(error) if error else "malformed receipt")
    return _judge(
        encoded,
        viewer,
        node,
        started,
        amount,
        segments,
        issued,
        sig,
        domain,
        params,
        now,
        gate,
        receipt.content_id if gate is not None else b"",
    )


def verify_wire(
    obj: Any, domain: Domain, params: Params, now: int, gate: Gate | None = None
) -> Verdict:
    """parse_wire then verify; a parse failure is a MALFORMED verdict, not an exception."""
    try:
        v = _wire_values(obj)
    except MalformedReceipt as error:
        return Rejected(Reason.MALFORMED, str(error))
    # The values passed every field check: encode them without building a receipt object.
    if v[0] is DeliveryReceipt:
        _, session_id, viewer, node, content_id, started, amount, segments, issued, sig = v
        encoded = _DELIVERY_STRUCT.pack(
            DELIVERY_TYPEHASH,
            session_id,
            viewer,
            node,
            content_id,
            started,
            amount,
            segments,
            issued,
        )
    else:
        _, session_id, viewer, content_id, started, amount, issued, sig = v
        node = None
        segments = 0
        encoded = _VIEW_STRUCT.pack(
            VIEW_TYPEHASH, session_id, viewer, content_id, started, amount, issued
        )
    return _judge(
        encoded,
        viewer,
        node,
        started,
        amount,
        segments,
        issued,
        sig,
        domain,
        params,
        now,
        gate,
        content_id,
    )


def _judge(
    encoded: bytes,
    viewer: bytes,
    node: bytes | None,
    started: int,
    amount: int,
    segments: int,
    issued: int,
    sig: bytes,
    domain: Domain,
    params: Params,
    now: int,
    gate: Gate | None = None,
    content_id: bytes = b"",
) -> Verdict:
    """Checks 2-7 of sound values; `encoded` is the EIP-712 encodeData, `node` None for a
    view, `amount` bytesServed or watchSeconds, `segments` segmentsServed (0 for a view)."""
    v = sig[64]
    # Big-endian byte strings of equal length compare like the integers they encode.
    if (
        (v != 27 and v != 28)
        or not _ZERO32 < sig[:32] < _N_BYTES
        or not _ZERO32 < sig[32:64] <= _HALF_N_BYTES
    ):
        return Rejected(Reason.NON_CANONICAL_SIGNATURE, _canonical_error(sig) or "")
    if issued > now + params.clock_skew:
        return Rejected(Reason.ISSUED_IN_FUTURE, f"issuedAt {issued} > now {now} + clock_skew")
    if issued < now - params.max_age:
        return Rejected(Reason.TOO_OLD, f"issuedAt {issued} < now {now} - max_age")
    if issued < params.genesis:
        return Rejected(Reason.TOO_OLD, f"issuedAt {issued} < genesis {params.genesis}")
    # The guard is PROTOCOL's: unsigned arithmetic elsewhere must not wrap issuedAt - startedAt.
    if started <= issued and issued - started > params.max_session_age:
        return Rejected(
            Reason.TOO_OLD,
            f"issuedAt - startedAt = {issued - started} > max_session_age {params.max_session_age}",
        )
    if started > issued:
        return Rejected(Reason.IMPLAUSIBLE, f"startedAt {started} > issuedAt {issued}")
    elapsed = issued - started + params.segment_seconds
    if node is not None:
        if 8 * amount > params.max_bitrate * elapsed:
            return Rejected(
                Reason.IMPLAUSIBLE, f"8 * bytesServed {amount} > max_bitrate * {elapsed} s"
            )
        # Players buffer ahead, but not without limit: segments lift the watch clip.
        if params.segment_seconds * segments > elapsed + params.max_lead_seconds:
            return Rejected(
                Reason.IMPLAUSIBLE,
                f"segment_seconds * segmentsServed = {params.segment_seconds * segments} > "
                f"elapsed {elapsed} s + max_lead_seconds {params.max_lead_seconds}",
            )
        if amount < params.min_segment_bytes * segments:
            return Rejected(
                Reason.IMPLAUSIBLE,
                f"bytesServed {amount} < min_segment_bytes {params.min_segment_bytes} * "
                f"segmentsServed {segments}",
            )
    elif amount > elapsed:
        return Rejected(Reason.IMPLAUSIBLE, f"watchSeconds {amount} > elapsed {elapsed} s")
    if gate is not None:
        gated = gate(viewer, node, content_id)
        if gated is not None:
            return gated
    if node is not None and viewer == node:
        return Rejected(Reason.SELF_DEALING, "viewer == node")
    digest32 = _keccak256(domain._prefix + _keccak256(encoded))
    # Recovery inline (not via _recover): this is the hot path, a call costs 1% of it.
    try:
        public = PublicKey.from_signature_and_message(sig[:64] + _RECID[v], digest32, hasher=None)
    except ValueError:  # r is no x-coordinate of the curve: no key signed this
        return Rejected(Reason.SIGNER_MISMATCH, "signature recovers to no key")
    known = _known_keys.get(viewer)
    if known is not None and _lib.secp256k1_ec_pubkey_cmp(_CTX, public.public_key, known) == 0:
        return ACCEPTED  # the very key that hashed to this viewer before
    out, outlen = _scratch.bufs
    _lib.secp256k1_ec_pubkey_serialize(_CTX, out, outlen, public.public_key, _EC_UNCOMPRESSED)
    signer = _keccak256(_ffi.buffer(out, 65)[1:])[12:]
    if signer != viewer:
        return Rejected(Reason.SIGNER_MISMATCH, f"signed by 0x{signer.hex()}, not the viewer")
    if len(_known_keys) >= _KNOWN_KEYS_MAX:
        _known_keys.clear()  # crude but bounded; a miss only costs one keccak
    _known_keys[viewer] = public.public_key  # the cdata stays alive with the dict entry
    return ACCEPTED


# A viewer signs many receipts (cumulative counters, every few segments). Once its key has
# been shown to hash to its address, comparing a recovered key with it (one C call) proves
# the same as serializing and hashing the key again. A memo of a pure function: verdicts
# do not depend on what is in it.
_known_keys: dict[bytes, Any] = {}
_KNOWN_KEYS_MAX: Final = 100_000


# --- wire format ----------------------------------------------------------------------

# (wire name, attribute, "hex" or "uint", byte length or max value), in protocol order.
_DELIVERY_SPEC: Final = (
    ("sessionId", "session_id", "hex", 32),
    ("viewer", "viewer", "hex", 20),
    ("node", "node", "hex", 20),
    ("contentId", "content_id", "hex", 32),
    ("startedAt", "started_at", "uint", UINT64_MAX),
    ("bytesServed", "bytes_served", "uint", UINT64_MAX),
    ("segmentsServed", "segments_served", "uint", UINT32_MAX),
    ("issuedAt", "issued_at", "uint", UINT64_MAX),
    ("signature", "signature", "hex", 65),
)
_VIEW_SPEC: Final = (
    ("sessionId", "session_id", "hex", 32),
    ("viewer", "viewer", "hex", 20),
    ("contentId", "content_id", "hex", 32),
    ("startedAt", "started_at", "uint", UINT64_MAX),
    ("watchSeconds", "watch_seconds", "uint", UINT32_MAX),
    ("issuedAt", "issued_at", "uint", UINT64_MAX),
    ("signature", "signature", "hex", 65),
)
_DELIVERY_KEYS: Final = frozenset(["kind", *(s[0] for s in _DELIVERY_SPEC)])
_VIEW_KEYS: Final = frozenset(["kind", *(s[0] for s in _VIEW_SPEC)])


def to_wire(receipt: Receipt) -> dict[str, Any]:
    """PROTOCOL wire object: "kind", camelCase fields, lowercase 0x hex, ints as JSON numbers."""
    spec = _DELIVERY_SPEC if type(receipt) is DeliveryReceipt else _VIEW_SPEC
    out: dict[str, Any] = {"kind": receipt.kind}
    for wire_name, attr, kind, _ in spec:
        value = getattr(receipt, attr)
        out[wire_name] = "0x" + value.hex() if kind == "hex" else value
    return out


def dumps_wire(receipt: Receipt) -> bytes:
    """One receipt as compact JSON bytes (one NDJSON line without the newline)."""
    return orjson.dumps(to_wire(receipt))


class _BadNumber:
    """A JSON number token the protocol forbids (sign, fraction, exponent, NaN), kept verbatim."""

    __slots__ = ("token",)

    def __init__(self, token: str) -> None:
        self.token = token


class _Pairs(list):
    """A JSON object as its key/value pairs in order, so repeated keys stay visible."""

    __slots__ = ()


def _parse_int_token(token: str) -> int | _BadNumber:
    # json hands us the token: "-0" must stay a sign error, huge tokens must not cost time.
    if token[0] == "-" or len(token) > 40:
        return _BadNumber(token)
    return int(token)


def _strict_loads(raw: bytes) -> Any:
    try:
        return json.loads(
            raw,
            object_pairs_hook=_Pairs,
            parse_int=_parse_int_token,
            parse_float=_BadNumber,
            parse_constant=_BadNumber,
        )
    except (ValueError, RecursionError) as error:  # JSONDecodeError and UnicodeDecodeError
        raise MalformedReceipt("(json)", f"not valid JSON: {error}") from None


def parse_wire(obj: Any) -> Receipt:
    """A receipt from its wire object (a dict, or the JSON bytes/str of one object).

    Raises MalformedReceipt(field, message) naming the first fault in field order. For a
    dict, repeated keys are already lost; pass the JSON text to have them detected.
    """
    values = _wire_values(obj)
    return values[0](*values[1:])


def _wire_values(obj: Any) -> tuple:
    """(receipt class, field values in order) of a wire object; parse_wire without the object.

    The verifier takes the values as they are: building the frozen dataclass would cost
    as much as all the field checks together.
    """
    if type(obj) is bytes:
        raw = obj
    elif isinstance(obj, str):
        try:
            raw = obj.encode()
        except UnicodeEncodeError:
            raise MalformedReceipt("(json)", "text is not valid Unicode") from None
    elif isinstance(obj, bytes | bytearray | memoryview):
        raw = bytes(obj)
    elif type(obj) is _Pairs:  # an object of a JSON array read by wire_items_from_array
        return _values_from_pairs(obj)
    elif type(obj) is _NotAnObject:
        raise MalformedReceipt("(receipt)", f"must be a JSON object, got {_type_name(obj.value)}")
    elif isinstance(obj, Mapping):
        return _values_from_mapping(obj)
    else:
        raise MalformedReceipt("(receipt)", f"must be a JSON object, got {type(obj).__name__}")
    # Fast path: orjson, when the raw text proves nothing was lost. orjson keeps the last
    # of repeated keys and reads "-0" as 0. Every key token is followed by its own colon,
    # so colons >= key tokens >= distinct keys, and equality means no key came twice
    # (without backslashes no escape can hide a colon). Without "-" no number had a sign.
    if b"\\" not in raw and b"-" not in raw:
        try:
            d = orjson.loads(raw)
        except orjson.JSONDecodeError:
            d = None
        if type(d) is dict and raw.count(b":") == len(d):
            try:
                return _values_from_mapping(d)
            except MalformedReceipt:
                pass  # the strict path below names the fault with the exact token
    pairs = _strict_loads(raw)
    if type(pairs) is not _Pairs:
        raise MalformedReceipt("(receipt)", f"must be a JSON object, got {_type_name(pairs)}")
    return _values_from_pairs(pairs)


def _values_from_pairs(pairs: _Pairs) -> tuple:
    d: dict[str, Any] = {}
    for key, value in pairs:
        if key in d:
            raise MalformedReceipt(key, "repeated field")
        d[key] = value
    return _values_from_mapping(d)


class _NotAnObject:
    """An item of a JSON array of receipts that is no object (kept to be judged MALFORMED)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


def wire_items_from_array(raw: bytes | str, *, constants: bool = True) -> list[Any]:
    """The items of a JSON array of wire receipts, for verify_wire and verify_wire_batch.

    Each item keeps what the text said (repeated keys, number tokens of any size), so a
    bad item gets its own MALFORMED verdict. Raises InputError when the text is no JSON
    array: then no item can be told from the next; with `constants=False` also when it
    holds NaN or Infinity, which Python reads but JSON does not have.
    """
    try:
        value = json.loads(
            raw,
            object_pairs_hook=_Pairs,
            parse_int=_parse_int_token,
            parse_float=_BadNumber,
            parse_constant=_BadNumber if constants else _no_constant,
        )
    except (ValueError, RecursionError) as error:
        raise InputError(f"not a valid JSON array of receipts: {error}") from None
    if type(value) is not list:
        raise InputError(f"expected a JSON array of receipts, got {_type_name(value)}")
    return [item if type(item) is _Pairs else _NotAnObject(item) for item in value]


def _no_constant(token: str) -> Any:
    raise ValueError(f"{token} is not JSON")


def _values_from_mapping(d: Mapping[str, Any]) -> tuple:
    kind = d.get("kind")
    if kind == KIND_DELIVERY:
        keys = _DELIVERY_KEYS
    elif kind == KIND_VIEW:
        keys = _VIEW_KEYS
    elif "kind" not in d:
        raise MalformedReceipt("kind", "missing")
    else:
        raise MalformedReceipt("kind", f'must be "delivery" or "view", got {_show(kind)}')
    if len(d) != len(keys) or not keys.issuperset(d):
        unknown = sorted(str(k) for k in d if k not in keys)
        if unknown:
            raise MalformedReceipt(unknown[0], "unknown field")
        spec = _DELIVERY_SPEC if kind == KIND_DELIVERY else _VIEW_SPEC
        missing = next(s[0] for s in spec if s[0] not in d)
        raise MalformedReceipt(missing, "missing")
    if kind == KIND_DELIVERY:
        return (
            DeliveryReceipt,
            _hex(d["sessionId"], 32, "sessionId"),
            _hex(d["viewer"], 20, "viewer"),
            _hex(d["node"], 20, "node"),
            _hex(d["contentId"], 32, "contentId"),
            _uint(d["startedAt"], UINT64_MAX, "startedAt"),
            _uint(d["bytesServed"], UINT64_MAX, "bytesServed"),
            _uint(d["segmentsServed"], UINT32_MAX, "segmentsServed"),
            _uint(d["issuedAt"], UINT64_MAX, "issuedAt"),
            _hex(d["signature"], 65, "signature"),
        )
    return (
        ViewReceipt,
        _hex(d["sessionId"], 32, "sessionId"),
        _hex(d["viewer"], 20, "viewer"),
        _hex(d["contentId"], 32, "contentId"),
        _uint(d["startedAt"], UINT64_MAX, "startedAt"),
        _uint(d["watchSeconds"], UINT32_MAX, "watchSeconds"),
        _uint(d["issuedAt"], UINT64_MAX, "issuedAt"),
        _hex(d["signature"], 65, "signature"),
    )


def _hex(value: Any, size: int, name: str) -> bytes:
    if type(value) is str and len(value) == 2 + 2 * size and value[:2] == "0x":
        try:
            return _unhexlify(value[2:])  # strict, unlike bytes.fromhex: no whitespace
        except ValueError:  # binascii.Error, and non-ASCII text
            pass
    raise MalformedReceipt(name, _hex_problem(value, size))


def _hex_problem(value: Any, size: int) -> str:
    want = f"0x + {2 * size} hex digits ({size} bytes)"
    if type(value) is not str:
        return f"must be a hex string ({want}), got {_type_name(value)}"
    if value[:2] != "0x":
        return f"must start with 0x (lowercase x), got {_show(value[:4])}..."
    if len(value) != 2 + 2 * size:
        return f"wrong length: want {want}, got {len(value) - 2} digits"
    return f"must contain only hex digits 0-9a-fA-F: {_show(value)}"


def _uint(value: Any, maximum: int, name: str) -> int:
    t = type(value)
    if t is int:
        if 0 <= value <= maximum:
            return value
    elif (
        t is str
        and value.isascii()
        and value.isdigit()
        and (value[0] != "0" or len(value) == 1)
        and len(value) <= 20
    ):
        number = int(value)
        if number <= maximum:
            return number
    raise MalformedReceipt(name, _uint_problem(value, maximum))


def _uint_problem(value: Any, maximum: int) -> str:
    bits = 32 if maximum == UINT32_MAX else 64
    if type(value) is _BadNumber:
        token, shown = value.token, _short_token(value.token)
        if token[0] == "-":
            return f"must be an unsigned integer without sign, got {shown}"
        if token.isdigit():
            return f"out of range for uint{bits} (max {maximum}), got {shown}"
        if any(c in token for c in "eE"):
            return f"must be an integer without exponent, got {shown}"
        if "." in token:
            return f"must be an integer, got the float {shown}"
        return f"must be an integer, got {shown}"
    if type(value) is int:
        if value < 0:
            return f"must be an unsigned integer without sign, got {value}"
        return f"out of range for uint{bits} (max {maximum}), got {value}"
    if type(value) is str:
        if value.isascii() and value.isdigit() and (value[0] != "0" or len(value) == 1):
            return f"out of range for uint{bits} (max {maximum}), got {_show(value)}"
        return f"integer strings must match ^(0|[1-9][0-9]*)$, got {_show(value)}"
    if type(value) is float:
        return f"must be an integer, got the float {value!r}"
    return f"must be an integer, got {_type_name(value)}"


def _short_token(token: str) -> str:
    # A 400-digit token is named by its head and length, not echoed whole.
    return token if len(token) <= 40 else f"{token[:20]}... ({len(token)} characters)"


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if type(value) is bool:
        return f"the boolean {'true' if value else 'false'}"
    if type(value) is _BadNumber:
        return f"the number {_short_token(value.token)}"
    if type(value) in (int, float):
        return f"the number {value!r}"
    if isinstance(value, list | tuple):
        return "an object" if type(value) is _Pairs else "an array"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, str):
        return "a string"
    return type(value).__name__


def _show(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, str) else _type_name(value)
    return text if len(text) <= 80 else text[:77] + "..."


# --- batches --------------------------------------------------------------------------

INLINE_BELOW: Final = 4096  # below this a pool's pickling and wake-ups cost more than they save
_pool: ProcessPoolExecutor | None = None
_pool_workers = 0
_pool_lock = threading.Lock()


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _get_pool(workers: int) -> ProcessPoolExecutor:
    """The module's process pool, started on first use and reused by every later batch."""
    global _pool, _pool_workers
    with _pool_lock:
        if _pool is None or _pool_workers != workers:
            import atexit
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            if _pool is not None:
                _pool.shutdown(wait=True)
            # forkserver: forking a parent that may run threads (servers, tests) is unsafe
            method = "forkserver" if sys.platform.startswith("linux") else "spawn"
            _pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method))
            _pool_workers = workers
            if not getattr(_get_pool, "_atexit", False):
                atexit.register(shutdown_pool)
                _get_pool._atexit = True  # type: ignore[attr-defined]
        return _pool


def shutdown_pool() -> None:
    """Stop the batch pool (tests and long-lived processes that want the cores back)."""
    global _pool, _pool_workers
    with _pool_lock:
        if _pool is not None:
            _pool.shutdown(wait=True, cancel_futures=True)
            _pool = None
            _pool_workers = 0


# Verdicts cross the process boundary as (reason or None, detail): a few bytes each.
def _pack(verdicts: Iterable[Verdict]) -> list[tuple[str, str] | None]:
    return [None if v.accepted else (v.reason.value, v.detail) for v in verdicts]


def _unpack(packed: list[tuple[str, str] | None]) -> list[Verdict]:
    return [ACCEPTED if p is None else Rejected(Reason(p[0]), p[1]) for p in packed]


def _verify_chunk(
    receipts: Sequence[Receipt], domain: Domain, params: Params, now: int
) -> list[tuple[str, str] | None]:
    return _pack(verify(r, domain, params, now) for r in receipts)


def _verify_wire_chunk(
    items: Sequence[Any], domain: Domain, params: Params, now: int
) -> list[tuple[str, str] | None]:
    return _pack(verify_wire(item, domain, params, now) for item in items)


def _run_batch(
    chunk_fn: Any,
    items: Sequence[Any],
    domain: Domain,
    params: Params,
    now: int,
    workers: int | None,
    inline_below: int,
) -> list[Verdict]:
    workers = _cores() if workers is None else max(1, workers)
    if workers == 1 or len(items) < inline_below:
        return _unpack(chunk_fn(items, domain, params, now))
    pool = _get_pool(workers)
    # A few chunks per worker keeps cores busy when one chunk runs slower than another.
    size = max(256, -(-len(items) // (workers * 4)))
    chunks = [items[i : i + size] for i in range(0, len(items), size)]
    futures = [pool.submit(chunk_fn, chunk, domain, params, now) for chunk in chunks]
    out: list[Verdict] = []
    for future in futures:  # submission order == input order
        out.extend(_unpack(future.result()))
    return out


def verify_batch(
    receipts: Sequence[Receipt],
    domain: Domain,
    params: Params,
    now: int,
    *,
    workers: int | None = None,
    inline_below: int = INLINE_BELOW,
) -> list[Verdict]:
    """verify() of each receipt, in input order, on every core when the batch is large."""
    return _run_batch(_verify_chunk, receipts, domain, params, now, workers, inline_below)


def verify_wire_batch(
    items: Sequence[Any],
    domain: Domain,
    params: Params,
    now: int,
    *,
    workers: int | None = None,
    inline_below: int = INLINE_BELOW,
) -> list[Verdict]:
    """verify_wire() of each wire item (JSON bytes/str or dict), in input order.

    Workers parse too: raw lines are cheaper to ship than parsed receipts.
    """
    return _run_batch(_verify_wire_chunk, items, domain, params, now, workers, inline_below)

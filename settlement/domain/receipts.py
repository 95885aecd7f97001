"""Receipts of PROTOCOL section 2: types, wire format, EIP-712 digest and stateless verdicts.

Pure: `now` is a parameter, nothing here reads a clock, the environment or the network.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Final, Protocol

from tiny_keccak import keccak256 as _keccak256

from settlement.domain import secp
from settlement.errors import InputError, MalformedReceipt


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
    "keccak",
    "recover_signer",
    "sign",
    "verify",
]

UINT32_MAX: Final = 2**32 - 1
UINT64_MAX: Final = 2**64 - 1
# secp256k1 group order; EIP-2 caps s at floor(n/2) so each signature has one form only.
SECP256K1_N: Final = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
SECP256K1_HALF_N: Final = SECP256K1_N // 2

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


class DomainSettings(Protocol):
    """What Domain.from_settings reads (settlement.config.Settings has it): the domain
    stays free of the config module."""

    chain_id: int
    distributor: str


class ParamSettings(Protocol):
    """What Params.from_settings reads, by PROTOCOL section 3's names."""

    genesis: int
    clock_skew: int
    max_age: int
    max_session_age: int
    segment_seconds: int
    max_bitrate: int
    max_lead_seconds: int
    min_segment_bytes: int


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
        from settlement.domain.wire import _hex  # wire imports this module

        try:
            address = _hex(verifying_contract, 20, "distributor")
        except MalformedReceipt as error:
            raise InputError(
                f"{error}; give the RewardDistributor address as 0x + 40 hex digits"
            ) from None
        return cls(chain_id, address)

    @classmethod
    def from_settings(
        cls, settings: DomainSettings, chain_id: int | None = None, distributor: str | None = None
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
        """PROTOCOL's default parameters (Settings declares the same defaults; a test checks)."""
        return cls(
            genesis=1_767_225_600,
            clock_skew=120,
            max_age=604_800,
            max_session_age=86_400,
            segment_seconds=4,
            max_bitrate=50_000_000,
            max_lead_seconds=30,
            min_segment_bytes=8192,
        )

    @classmethod
    def from_settings(cls, settings: ParamSettings) -> Params:
        """The parameters of any object that has them by name (settlement.config.Settings)."""
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

    accepted = True  # class attributes: let callers branch without isinstance
    verdict = "accepted"  # the wire verdict (PROTOCOL section 3)


@dataclass(frozen=True, slots=True)
class Rejected:
    """Failed a check: `reason` is the stable code, `detail` says what for a human."""

    reason: Reason
    detail: str = ""

    accepted = False
    verdict = "rejected"


Verdict = Accepted | Rejected
ACCEPTED: Final = Accepted()


# --- structure checks -----------------------------------------------------------------


def _structure_error(r: Any) -> MalformedReceipt | None:
    """First structural fault of a receipt object, in wire field order; None if sound.

    Receipts built by hand (not by parse_wire) may carry anything; this turns that into a
    MALFORMED verdict instead of an exception deep in the digest.
    """
    spec: tuple[tuple[str, str, str, int], ...]
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


def sign(receipt: Receipt, domain: Domain, private_key: bytes) -> Receipt:
    """A copy of `receipt` signed by `private_key` (32 bytes), canonical: low-s, v in {27, 28}."""
    # libsecp256k1 always produces low-s, so the result passes the canonical check.
    rsv = secp.sign_recoverable(private_key, digest(receipt, domain))
    return replace(receipt, signature=rsv[:64] + bytes((rsv[64] + 27,)))


def address_of(private_key: bytes) -> bytes:
    """The 20-byte Ethereum address of a 32-byte private key."""
    return secp.address_of(private_key)


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


_ZERO32: Final = bytes(32)
_N_BYTES: Final = SECP256K1_N.to_bytes(32, "big")
_HALF_N_BYTES: Final = SECP256K1_HALF_N.to_bytes(32, "big")


def recover_signer(receipt: Receipt, domain: Domain) -> bytes | None:
    """Address that signed `receipt` under `domain` (canonical signatures only), else None."""
    encoded = _pack_sound(receipt)
    if encoded is None or _canonical_error(receipt.signature) is not None:
        return None
    return secp.recover_address(keccak(domain._prefix + keccak(encoded)), receipt.signature)


# --- verdicts -------------------------------------------------------------------------


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
            # `t is` narrows nothing for mypy; isinstance would cost on this hot path.
            if t is DeliveryReceipt:
                node = receipt.node  # type: ignore[union-attr]
                amount = receipt.bytes_served  # type: ignore[union-attr]
                segments = receipt.segments_served  # type: ignore[union-attr]
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
                amount = receipt.watch_seconds  # type: ignore[union-attr]
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
    return judge_values(
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


def judge_values(
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
    # One call into secp: recovery and the known-keys memo stay behind its face.
    signer = _signer_unless(digest32, sig, viewer)
    if signer is None:
        return ACCEPTED
    if signer == secp.NO_KEY:
        return Rejected(Reason.SIGNER_MISMATCH, "signature recovers to no key")
    return Rejected(Reason.SIGNER_MISMATCH, f"signed by 0x{signer.hex()}, not the viewer")


_signer_unless: Final = secp.signer_unless  # a module global: one lookup less per receipt


# --- wire serialization -------------------------------------------------------------------

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

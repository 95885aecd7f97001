"""Node registration requests: an EIP-712 message the node operator signs with the node key.

Typed data, under the receipts' domain ("W2E Settlement", version 1, chainId, distributor):
`NodeRegistration(address node,string label,uint64 issuedAt)`, signed like a receipt
(65 bytes r || s || v, canonical). Wire: {"node": "0x..", "label": "...", "issuedAt": n,
"signature": "0x.."}. Pure: `now` is a parameter.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Final

from settlement.domain import secp
from settlement.domain.receipts import SECP256K1_HALF_N, SECP256K1_N, UINT64_MAX, Domain, keccak
from settlement.errors import InvalidRegistration

NODE_REGISTRATION_TYPE: Final = "NodeRegistration(address node,string label,uint64 issuedAt)"
NODE_REGISTRATION_TYPEHASH: Final = keccak(NODE_REGISTRATION_TYPE.encode())
MAX_LABEL: Final = 64  # characters
_FIELDS: Final = frozenset(("node", "label", "issuedAt", "signature"))


@dataclass(frozen=True, slots=True)
class Registration:
    """A stored registration request and what became of it."""

    id: int
    node: bytes
    label: str
    issued_at: int
    signature: bytes
    status: str  # "pending" | "approved" | "rejected"
    requested_at: int
    decided_at: int | None


@dataclass(frozen=True, slots=True)
class NodeRegistrationRequest:
    node: bytes  # 20
    label: str
    issued_at: int  # uint64 unix seconds
    signature: bytes = b""  # 65: r || s || v


def check_label(label: Any) -> str:
    """A node label: 1 to 64 printable characters without surrounding spaces."""
    if (
        type(label) is not str
        or not 1 <= len(label) <= MAX_LABEL
        or not label.isprintable()
        or label != label.strip()
    ):
        raise InvalidRegistration(
            f"label must be 1 to {MAX_LABEL} printable characters without surrounding "
            f"spaces, got {label!r:.80}"
        )
    return label


def registration_digest(request: NodeRegistrationRequest, domain: Domain) -> bytes:
    encoded = (
        NODE_REGISTRATION_TYPEHASH
        + bytes(12)
        + request.node
        + keccak(request.label.encode())
        + request.issued_at.to_bytes(32, "big")
    )
    return keccak(b"\x19\x01" + domain.separator + keccak(encoded))


def sign_registration(
    request: NodeRegistrationRequest, domain: Domain, private_key: bytes
) -> NodeRegistrationRequest:
    """A copy of `request` signed by the node's key (canonical: low-s, v in {27, 28})."""
    rsv = secp.sign_recoverable(private_key, registration_digest(request, domain))
    return replace(request, signature=rsv[:64] + bytes((rsv[64] + 27,)))


def to_wire(request: NodeRegistrationRequest) -> dict[str, Any]:
    return {
        "node": "0x" + request.node.hex(),
        "label": request.label,
        "issuedAt": request.issued_at,
        "signature": "0x" + request.signature.hex(),
    }


def _hex(value: Any, size: int, name: str) -> bytes:
    if type(value) is str and len(value) == 2 + 2 * size and value[:2] == "0x":
        try:
            return bytes.fromhex(value[2:])
        except ValueError:
            pass
    raise InvalidRegistration(f"{name} must be 0x + {2 * size} hex digits")


def parse_request(obj: Any) -> NodeRegistrationRequest:
    """A request from its wire object; InvalidRegistration names the first fault."""
    if not isinstance(obj, Mapping):
        raise InvalidRegistration("a registration request must be a JSON object")
    if set(obj) != _FIELDS:
        raise InvalidRegistration(
            f"a registration request has exactly the fields {sorted(_FIELDS)}, got {sorted(map(str, obj))}"
        )
    issued = obj["issuedAt"]
    # 20 digits hold any uint64; more would only cost int()'s quadratic time (and its
    # 4,300-digit limit raises ValueError).
    if type(issued) is str and issued.isascii() and issued.isdigit() and len(issued) <= 20:
        issued = int(issued) if issued == "0" or issued[0] != "0" else None
    if type(issued) is not int or not 0 <= issued <= UINT64_MAX:
        raise InvalidRegistration("issuedAt must be a uint64 (unix seconds)")
    return NodeRegistrationRequest(
        _hex(obj["node"], 20, "node"),
        check_label(obj["label"]),
        issued,
        _hex(obj["signature"], 65, "signature"),
    )


def verify_request(
    request: NodeRegistrationRequest, domain: Domain, now: int, *, clock_skew: int, max_age: int
) -> None:
    """Raise InvalidRegistration unless the node's own key signed this fresh request."""
    check_label(request.label)
    if request.issued_at > now + clock_skew:
        raise InvalidRegistration(f"issuedAt {request.issued_at} is in the future (now {now})")
    if request.issued_at < now - max_age:
        raise InvalidRegistration(
            f"issuedAt {request.issued_at} is older than {max_age} s: sign a fresh request"
        )
    sig = request.signature
    if len(sig) != 65 or sig[64] not in (27, 28):
        raise InvalidRegistration("signature must be 65 bytes r || s || v with v 27 or 28")
    r, s = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:64], "big")
    if not (0 < r < SECP256K1_N and 0 < s <= SECP256K1_HALF_N):
        raise InvalidRegistration("signature is not canonical (r in [1, n), s in [1, n/2])")
    signer = secp.recover_address(registration_digest(request, domain), sig)
    if signer is None:
        raise InvalidRegistration("signature recovers to no key")
    if signer != request.node:
        # Recovery gives an address for any digest: a request signed by the node key under
        # another domain (chain id or distributor) recovers to a stranger too, so the two
        # causes cannot be told apart here. Name both, with the domain this service expects.
        raise InvalidRegistration(
            f"the signature is not the node 0x{request.node.hex()}'s under this service's "
            f"domain (chainId {domain.chain_id}, distributor 0x{domain.verifying_contract.hex()}): "
            f"it recovers to 0x{signer.hex()}; check both the signing key (the node's own) "
            "and the domain it was signed under"
        )

"""Use cases of the registries: nodes, content, the viewer allowlist, bulk imports and the
nodes' own signed registration requests. No HTTP, no Typer: the API and CLI call these.

Every change but a node's own request is an admin's: `who` (the admin token's name, or
cli:<user>) goes into the admin log with it, in the same transaction.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import orjson

from settlement.adapters.db.registry import RegisteredNode
from settlement.adapters.db.store import Store
from settlement.config import Settings
from settlement.domain.receipts import Domain
from settlement.domain.registration import (
    NodeRegistrationRequest,
    Registration,
    check_label,
    parse_request,
    verify_request,
)
from settlement.errors import InputError, InvalidRegistration, NotFound, RegistryError
from settlement.services.access import audit, logged

LOCAL: Final = "local"  # `who` of changes made by code, not by an admin token or the CLI

# --- changes -------------------------------------------------------------------------


def _bytes(value: bytes | str, size: int, what: str) -> bytes:
    if isinstance(value, str):
        if len(value) == 2 + 2 * size and value[:2] in ("0x", "0X"):
            try:
                return bytes.fromhex(value[2:])
            except ValueError:
                pass
        raise RegistryError(f"{what} must be 0x + {2 * size} hex digits, got {value!r:.80}")
    if type(value) is bytes and len(value) == size:
        return value
    raise RegistryError(f"{what} must be {size} bytes")


def _payee(value: bytes | str, what: str, settings: Settings | None) -> bytes:
    """An address that may be paid: never address(0) nor the distributor (PROTOCOL 4)."""
    address = _bytes(value, 20, what)
    if address == bytes(20):
        raise RegistryError(f"{what} must not be the zero address: nothing could be paid to it")
    if settings is not None and address == bytes.fromhex(settings.distributor[2:]):
        raise RegistryError(f"{what} must not be the RewardDistributor: it cannot claim")
    return address


def register_node(
    store: Store,
    address: bytes | str,
    label: str,
    active: bool = True,
    *,
    settings: Settings | None = None,
    who: str = LOCAL,
) -> bytes:
    """Add or update a node (pass `settings` so the distributor address is refused too).
    Registered inactive, it is held: its own requests do not activate it."""
    try:
        label = check_label(label)
    except InvalidRegistration as error:
        raise RegistryError(str(error)) from None
    node = _payee(address, "node address", settings)
    entry = audit(who, "node.put", f"0x{node.hex()} label={label!r} active={active}")
    store.put_node(node, label, active, entry)
    logged(entry)
    return node


def set_node_active(store: Store, address: bytes | str, active: bool, *, who: str = LOCAL) -> None:
    """Deactivation sticks: until an admin activates the node again, its own signed
    registration requests (open mode) wait as pending instead of re-activating it."""
    node = _bytes(address, 20, "node address")
    entry = audit(who, "node.activate" if active else "node.deactivate", f"0x{node.hex()}")
    if not store.set_node_active(node, active, entry):
        raise NotFound(f"node 0x{node.hex()} is not registered: register it first")
    logged(entry)


def add_content(
    store: Store,
    content_id: bytes | str,
    creator: bytes | str,
    *,
    settings: Settings | None = None,
    who: str = LOCAL,
) -> bytes:
    cid = _bytes(content_id, 32, "content id")
    payee = _payee(creator, "creator address", settings)
    entry = audit(who, "content.put", f"0x{cid.hex()} creator=0x{payee.hex()}")
    store.put_content(cid, payee, entry)
    logged(entry)
    return cid


def remove_content(store: Store, content_id: bytes | str, *, who: str = LOCAL) -> None:
    cid = _bytes(content_id, 32, "content id")
    entry = audit(who, "content.remove", f"0x{cid.hex()}")
    if not store.remove_content(cid, entry):
        raise NotFound(f"content 0x{cid.hex()} is not registered")
    logged(entry)


def add_viewer(
    store: Store, address: bytes | str, *, settings: Settings | None = None, who: str = LOCAL
) -> bytes:
    viewer = _payee(address, "viewer address", settings)
    entry = audit(who, "viewer.add", f"0x{viewer.hex()}")
    store.add_viewer(viewer, entry)
    logged(entry)
    return viewer


def remove_viewer(store: Store, address: bytes | str, *, who: str = LOCAL) -> None:
    viewer = _bytes(address, 20, "viewer address")
    entry = audit(who, "viewer.remove", f"0x{viewer.hex()}")
    if not store.remove_viewer(viewer, entry):
        raise NotFound(f"viewer 0x{viewer.hex()} is not in the allowlist")
    logged(entry)


def load_registries(
    store: Store,
    doc: Mapping[str, Any] | str | Path,
    *,
    settings: Settings | None = None,
    who: str = LOCAL,
) -> dict[str, int]:
    """Import a registries document (the simulator's registries.json shape) in one transaction:
    {"nodes": [{"address", "label", "active"}], "content": [{"contentId", "creator"}],
    "viewers": ["0x.."]}. Returns the number of entries of each kind.
    """
    if not isinstance(doc, Mapping):
        try:
            doc = orjson.loads(Path(doc).read_bytes())
        except (OSError, orjson.JSONDecodeError) as error:
            raise InputError(f"cannot read registries from {doc}: {error}") from None
        if not isinstance(doc, Mapping):
            raise InputError("a registries file holds one JSON object")
    try:
        nodes = [
            (
                _payee(n["address"], "node address", settings),
                check_label(n.get("label", "node")),
                bool(n.get("active", True)),
            )
            for n in doc.get("nodes", [])
        ]
        content = [
            (
                _bytes(c["contentId"], 32, "content id"),
                _payee(c["creator"], "creator address", settings),
            )
            for c in doc.get("content", [])
        ]
        viewers = [_payee(v, "viewer address", settings) for v in doc.get("viewers", [])]
    except (KeyError, TypeError, InvalidRegistration) as error:
        raise RegistryError(f"invalid registries document: {error}") from None
    counts = {"nodes": len(nodes), "content": len(content), "viewers": len(viewers)}
    detail = " ".join(f"{k}={v}" for k, v in counts.items())
    entry = audit(who, "registries.import", detail)
    store.load_registries(nodes, content, viewers, entry)
    logged(entry)
    return counts


def request_node_registration(
    store: Store,
    settings: Settings,
    signed_request: Mapping[str, Any] | NodeRegistrationRequest,
    now: int,
) -> Registration:
    """`file_node_registration`'s request, stored now or found already there."""
    return file_node_registration(store, settings, signed_request, now)[0]


def file_node_registration(
    store: Store,
    settings: Settings,
    signed_request: Mapping[str, Any] | NodeRegistrationRequest,
    now: int,
) -> tuple[Registration, bool]:
    """Store a node's signed registration request: (the request, True when stored by this
    call). In open mode it is approved at once, unless an admin deactivated the node: then
    it waits, pending, for an admin.

    Sending again is safe: while the node has a pending request, or is active under the
    same label after an approved one, that request comes back (False) and nothing is filed.

    Raises InvalidRegistration when the request is malformed, stale, not the node's
    signature under this service's domain, or a replay (not newer than the node's last
    request, which a signed request must be when it would change anything).
    """
    request = (
        signed_request
        if isinstance(signed_request, NodeRegistrationRequest)
        else parse_request(signed_request)
    )
    verify_request(
        request,
        Domain.from_settings(settings),
        now,
        clock_skew=settings.clock_skew,
        max_age=settings.registration_max_age,
    )
    try:
        node = _payee(request.node, "node address", settings)
    except RegistryError as error:
        raise InvalidRegistration(str(error)) from None
    filed = store.file_registration(
        node,
        request.label,
        request.issued_at,
        request.signature,
        now,
        approve=settings.registry_mode == "open",
    )
    if filed is None:
        raise InvalidRegistration(
            f"node 0x{node.hex()} already sent a request issued at or after {request.issued_at}"
            f"{_last_request(store, node)}: sign a new request with a later issuedAt"
        )
    return filed


def _last_request(store: Store, node: bytes) -> str:
    """`(its last, request N, is STATUS)` for a refusal's message; empty if none is found."""
    last = store.last_registration(node)
    if last is None:
        return ""
    held = " and an admin deactivated the node" if store.node_held(node) else ""
    return f" (its last, request {last.id}, is {last.status}{held})"


def approve_node_registration(
    store: Store, request_id: int, now: int, *, who: str = LOCAL
) -> Registration:
    """Approve a pending request: its node is registered and active (a hold is lifted)."""
    return _decide_registration(store, request_id, True, now, who)


def reject_node_registration(
    store: Store, request_id: int, now: int, *, who: str = LOCAL
) -> Registration:
    return _decide_registration(store, request_id, False, now, who)


def _decide_registration(
    store: Store, request_id: int, approve: bool, now: int, who: str
) -> Registration:
    action = "registration.approve" if approve else "registration.reject"
    entry = audit(who, action, f"request {request_id}", now)  # the request row names the node
    reg = store.decide_registration(request_id, approve, now, entry)
    if reg is None:
        existing = store.registration(request_id)
        if existing is None:
            raise NotFound(f"no node registration request {request_id}")
        raise RegistryError(f"request {request_id} is already {existing.status}")
    logged(entry)
    return reg


# --- reads ------------------------------------------------------------------------------


def nodes(store: Store) -> list[RegisteredNode]:
    """Every registered node, by address."""
    return store.nodes()


def content(store: Store) -> list[tuple[bytes, bytes]]:
    """(content id, creator) of all registered content, by content id."""
    return sorted(store.registry_snapshot().content.items())


def viewers(store: Store) -> list[bytes]:
    """The viewer allowlist, sorted."""
    return sorted(store.registry_snapshot().viewers)


def registrations(store: Store, status: str | None = None) -> list[Registration]:
    """Node registration requests, all or those with `status`."""
    return store.registrations(status)

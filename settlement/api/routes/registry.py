"""Registries over HTTP: admin endpoints (bearer token) and the nodes' own registration requests.

Store calls block, so these routes are plain `def`: FastAPI runs them in its threadpool.
"""

from __future__ import annotations

import time
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Response

from settlement.api.deps import (
    AdminDep,
    AdmitRegistrationDep,
    SettingsDep,
    StateDep,
    StoreDep,
)
from settlement.api.schemas import (
    ERROR_RESPONSES,
    ContentIn,
    ContentOut,
    NodeIn,
    NodeOut,
    RegistrationIn,
    RegistrationOut,
    RegistriesIn,
    ViewerIn,
)
from settlement.domain.registration import Registration
from settlement.services import registry as service

admin = APIRouter(
    prefix="/v1/admin",
    tags=["admin"],
    responses={401: ERROR_RESPONSES[401], 422: ERROR_RESPONSES[422]},
)
public = APIRouter(tags=["nodes"])


def _hex(b: bytes) -> str:
    return "0x" + b.hex()


def _registration(reg: Registration) -> RegistrationOut:
    return RegistrationOut(
        id=reg.id,
        node=_hex(reg.node),
        label=reg.label,
        issuedAt=reg.issued_at,
        status=reg.status,  # type: ignore[arg-type]
        requestedAt=reg.requested_at,
        decidedAt=reg.decided_at,
    )


# --- nodes ----------------------------------------------------------------------------------


@admin.get("/nodes", summary="List registered nodes")
def list_nodes(_: AdminDep, store: StoreDep) -> list[NodeOut]:
    return [
        NodeOut(address=_hex(n.address), label=n.label, active=n.active)
        for n in service.nodes(store)
    ]


@admin.post("/nodes", summary="Register or update a node")
def put_node(who: AdminDep, store: StoreDep, settings: SettingsDep, body: NodeIn) -> NodeOut:
    node = service.register_node(
        store, body.address, body.label, body.active, settings=settings, who=who
    )
    return NodeOut(address=_hex(node), label=body.label, active=body.active)


@admin.post(
    "/nodes/{address}/{action}",
    summary="Activate or deactivate a node",
    responses={404: {"description": "node not registered"}},
)
def node_active(
    who: AdminDep, store: StoreDep, address: str, action: Literal["activate", "deactivate"]
) -> dict[str, str | bool]:
    """A deactivated node stays so until an admin activates it (or approves its request)."""
    service.set_node_active(store, address, action == "activate", who=who)
    return {"address": address.lower(), "active": action == "activate"}


# --- content and viewers --------------------------------------------------------------------


@admin.get("/content", summary="List registered content and creators")
def list_content(_: AdminDep, store: StoreDep) -> list[ContentOut]:
    return [ContentOut(contentId=_hex(c), creator=_hex(k)) for c, k in service.content(store)]


@admin.post("/content", summary="Register content (content id -> creator)")
def put_content(
    who: AdminDep, store: StoreDep, settings: SettingsDep, body: ContentIn
) -> ContentOut:
    cid = service.add_content(store, body.contentId, body.creator, settings=settings, who=who)
    return ContentOut(contentId=_hex(cid), creator=body.creator.lower())


@admin.delete("/content/{content_id}", summary="Remove content", status_code=204)
def delete_content(who: AdminDep, store: StoreDep, content_id: str) -> None:
    service.remove_content(store, content_id, who=who)


@admin.get("/viewers", summary="List the viewer allowlist")
def list_viewers(_: AdminDep, store: StoreDep) -> list[str]:
    return [_hex(v) for v in service.viewers(store)]


@admin.post("/viewers", summary="Add a viewer to the allowlist")
def put_viewer(who: AdminDep, store: StoreDep, settings: SettingsDep, body: ViewerIn) -> ViewerIn:
    return ViewerIn(
        address=_hex(service.add_viewer(store, body.address, settings=settings, who=who))
    )


@admin.delete("/viewers/{address}", summary="Remove a viewer from the allowlist", status_code=204)
def delete_viewer(who: AdminDep, store: StoreDep, address: str) -> None:
    service.remove_viewer(store, address, who=who)


@admin.post("/registries", summary="Import a registries document in one transaction")
def import_registries(
    who: AdminDep, store: StoreDep, settings: SettingsDep, body: RegistriesIn
) -> dict[str, int]:
    return service.load_registries(store, body.model_dump(), settings=settings, who=who)


# --- node registration requests ------------------------------------------------------------


@admin.get("/registrations", summary="List node registration requests")
def list_registrations(
    _: AdminDep, store: StoreDep, status: Literal["pending", "approved", "rejected"] | None = None
) -> list[RegistrationOut]:
    return [_registration(r) for r in service.registrations(store, status)]


@admin.post(
    "/registrations/{request_id}/{decision}",
    summary="Approve or reject a pending node registration request",
    responses={404: {"description": "no such request"}},
)
def decide_registration(
    who: AdminDep,
    store: StoreDep,
    request_id: Annotated[int, Path(ge=1, le=2**63 - 1, description="request id")],
    decision: Literal["approve", "reject"],
) -> RegistrationOut:
    decide = (
        service.approve_node_registration
        if decision == "approve"
        else service.reject_node_registration
    )
    return _registration(decide(store, request_id, int(time.time()), who=who))


@public.post(
    "/v1/nodes/registrations",
    status_code=201,
    summary="Request registration of a node (signed by the node key)",
    responses={
        200: {"model": RegistrationOut, "description": "already answered: the existing request"},
        **{k: ERROR_RESPONSES[k] for k in (422, 429)},
    },
)
def request_registration(
    state: StateDep, _: AdmitRegistrationDep, body: RegistrationIn, response: Response
) -> RegistrationOut:
    """Sign `NodeRegistration(address node,string label,uint64 issuedAt)` under the receipts'
    EIP-712 domain with the node's key (`settlement nodes register` does it). In open mode
    (W2E_REGISTRY_MODE=open) the node is registered at once (unless an admin deactivated it:
    then it waits as in approval mode); otherwise the request waits for an admin's approval.

    201: a request was filed. 200: nothing filed, the node's pending request (or, for a node
    already active under that label, its approved one) is returned: sending again is safe.
    422 `InvalidRegistration`: the message says why, e.g. a signature that is not the node's
    under this service's domain, with the chain id and distributor the service expects.
    """
    reg, created = service.file_node_registration(
        state.store, state.settings, body.model_dump(), int(time.time())
    )
    if not created:
        response.status_code = 200
    return _registration(reg)


router = APIRouter()
router.include_router(admin)
router.include_router(public)

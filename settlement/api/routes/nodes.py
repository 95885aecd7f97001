"""GET /v1/nodes/{address}: a node's bytes credited, receipts included and rejected by reason,
rewards per closed epoch and its registration state (the explorer's node page and the node
operator's CLI read it)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from settlement.api.deps import StoreDep, app_once
from settlement.api.explorer_schemas import NodeActivityOut
from settlement.api.routes.epochs import EPOCH_MAX
from settlement.api.schemas import ErrorOut
from settlement.services import explorer

router = APIRouter(prefix="/v1", tags=["explorer"])


def delivery_cache(request: Request) -> explorer.DeliveryCache:
    """The app's cache of closed epochs' node credit, made on first use."""
    return app_once(request, "explorer_deliveries", explorer.DeliveryCache)


@router.get(
    "/nodes/{address}",
    summary="A node: registration, and per closed epoch its bytes credited, receipts "
    "included and rejected, reward",
    responses={422: {"model": ErrorOut, "description": "not an address, or limit out of range"}},
)
def get_node(
    address: str,
    request: Request,
    store: StoreDep,
    limit: Annotated[
        int, Query(ge=1, le=explorer.MAX_LIMIT, description="closed epochs, newest first")
    ] = 50,
    before: Annotated[
        int | None, Query(ge=1, le=EPOCH_MAX, description="only epochs below this one")
    ] = None,
) -> NodeActivityOut:
    node = explorer.parse_address(address)
    view = explorer.node_view(store, node, limit, before, delivery_cache(request))
    return NodeActivityOut.model_validate(view.to_json())

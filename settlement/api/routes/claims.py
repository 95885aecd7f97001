"""GET /v1/accounts/{address}/claim: ready calldata for a wallet, against the accepted root.

The claims service (settlement.services.claims.Claims) is built in the app's lifespan; its
chain comes from W2E_RPC_URL and the deployment record, connected on first use, or is handed
to create_app (the demo, tests: the embedded chain).
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from settlement.api.deps import StoreDep
from settlement.api.schemas import ErrorOut
from settlement.errors import InputError
from settlement.services.claims import Claims

router = APIRouter(prefix="/v1", tags=["claims"])

_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")


def _claims_with_chain(request: Request) -> Claims:
    """The claims service once its chain answers: no chain is a 503 before the address is
    even looked at."""
    claims: Claims = request.app.state.claims
    claims.context()
    return claims


ChainClaimsDep = Annotated[Claims, Depends(_claims_with_chain)]


class ClaimOut(BaseModel):
    account: str
    cumulativeAmount: str = Field(description="the account's leaf, base units (decimal string)")
    claimed: str = Field(description="claimed on-chain so far, base units")
    claimable: str = Field(description="cumulativeAmount - claimed, base units")
    proof: list[str]
    root: str = Field(description="the accepted root the proof is against")
    contract: str = Field(description="RewardDistributor address to send `calldata` to")
    chainId: int
    calldata: str = Field(description="claim(account, cumulativeAmount, proof), ready to send")


@router.get(
    "/accounts/{address}/claim",
    summary="Ready claim calldata, claimable amount and contract for a wallet",
    responses={
        404: {"model": ErrorOut, "description": "no leaf for the account in the accepted root"},
        422: {"model": ErrorOut, "description": "not a 20-byte 0x address"},
        503: {"model": ErrorOut, "description": "no chain configured or the RPC is down"},
    },
)
def get_claim(address: str, store: StoreDep, claims: ChainClaimsDep) -> ClaimOut:
    if not _ADDRESS.match(address):
        raise InputError(f"{address!r} is not an address: give 0x and 40 hex digits")
    return ClaimOut(**claims.claim(store, address).to_json())


def account_chain_fields(claims: Claims, store: Any, account: bytes) -> dict[str, Any]:
    """The chain-facing fields of GET /v1/accounts/{address} (claimed, claimableNow,
    acceptedRoot, acceptedProof, pending); {} when this service has no chain."""
    view = claims.account(store, account)
    if view is None:
        return {}
    out: dict[str, Any] = {"claimed": str(view.claimed), "claimableNow": str(view.claimable_now)}
    if view.accepted_root is not None:
        out["acceptedRoot"] = view.accepted_root
    if view.accepted_proof is not None:
        out["acceptedProof"] = view.accepted_proof
    if view.pending is not None:
        out["pending"] = {
            "epoch": view.pending.epoch,
            "root": view.pending.root,
            "adds": str(view.pending.adds),
            "claimableAt": view.pending.claimable_at,
        }
    return out

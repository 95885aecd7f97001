"""GET /v1/accounts/{address}/claim: ready calldata for a wallet, against the accepted root;
GET /v1/accounts/{address}/rewards: allocations by class per epoch; POST /v1/claims/relay:
a gas-free claim sent by the service's claimer key.

The claims service (settlement.services.claims.Claims) is built in the app's lifespan; its
chain comes from W2E_RPC_URL and the deployment record, connected on first use, or is handed
to create_app (the demo, tests: the embedded chain).
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from settlement.api.deps import StoreDep, _admit, app_once
from settlement.api.schemas import ErrorOut
from settlement.errors import InputError
from settlement.services.claims import ClaimRelay, Claims, rewards_by_epoch

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


class EpochRewardsOut(BaseModel):
    epoch: int
    node: str = Field(description="base units (decimal string)")
    viewer: str
    creator: str
    total: str


class RewardsOut(BaseModel):
    account: str
    epochs: list[EpochRewardsOut] = Field(
        description="allocations by class per closed epoch, oldest first (epochs without one "
        "left out); with GET /v1/accounts/{address} for claimed, claimable now and pending"
    )


@router.get(
    "/accounts/{address}/rewards",
    summary="What an account was allocated, by class, per closed epoch",
    responses={422: {"model": ErrorOut, "description": "not a 20-byte 0x address"}},
)
def get_rewards(address: str, store: StoreDep) -> RewardsOut:
    if not _ADDRESS.match(address):
        raise InputError(f"{address!r} is not an address: give 0x and 40 hex digits")
    rows = rewards_by_epoch(store, bytes.fromhex(address[2:]))
    return RewardsOut(
        account=address.lower(),
        epochs=[
            EpochRewardsOut(
                epoch=r.epoch,
                node=str(r.node),
                viewer=str(r.viewer),
                creator=str(r.creator),
                total=str(r.total),
            )
            for r in rows
        ],
    )


def _relay(request: Request) -> ClaimRelay:
    claims: Claims = request.app.state.claims
    return app_once(
        request, "claim_relay", lambda: ClaimRelay(claims, claims.settings.claim_batch_size)
    )


class RelayIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    accounts: list[str] = Field(min_length=1, max_length=1000, description="0x addresses")


class RelayTxOut(BaseModel):
    tx: str
    block: int
    gasUsed: int


class RelayOut(BaseModel):
    paid: dict[str, str] = Field(description="account -> base units paid (decimal string)")
    transactions: list[RelayTxOut]
    skipped: dict[str, str] = Field(description="account -> why it was not claimed")


@router.post(
    "/claims/relay",
    summary="Gas-free claim: the service's relayer sends claimMany for these accounts",
    responses={
        409: {"model": ErrorOut, "description": "none of the accounts has anything claimable"},
        422: {"model": ErrorOut, "description": "not addresses, or too many"},
        429: {"model": ErrorOut, "description": "rate limit"},
        503: {"model": ErrorOut, "description": "no relayer key, no chain, or a relay running"},
    },
)
def relay_claims(
    body: RelayIn,
    store: StoreDep,
    _: Annotated[None, Depends(_admit("claim_relay"))],
    relay: Annotated[ClaimRelay, Depends(_relay)],
) -> RelayOut:
    """For a viewer, creator or node without gas: the service's claimer key claims for each
    account with something claimable under the accepted root (tokens go to the account, never
    to the relayer) and answers with what each was paid. Accounts with nothing claimable are
    skipped with the reason (pending in a root not yet accepted: the epoch and validAt); if
    none has anything, 409 says why for each. Rate limited like every public write."""
    for account in body.accounts:
        if not _ADDRESS.match(account):
            raise InputError(f"{account!r:.60} is not an address: give 0x and 40 hex digits")
    done = relay.relay(store, body.accounts)
    paid: dict[str, str] = {}
    for result in done.results:
        for account, amount in result.paid.items():
            paid[account] = str(int(paid.get(account, "0")) + amount)
    return RelayOut(
        paid=paid,
        transactions=[
            RelayTxOut(tx=r.tx_hash, block=r.block_number, gasUsed=r.gas_used) for r in done.results
        ],
        skipped=done.skipped,
    )

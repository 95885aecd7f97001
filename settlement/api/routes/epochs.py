"""Read API of closed epochs: manifests, trees, allocations and what an account has earned.

Store calls block, so these routes are plain `def` (FastAPI's threadpool). The chain-facing
fields of an account (claimable against the accepted on-chain root, what a pending root
adds and when) need a configured chain: until the chain issue wires them, they are null.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, Literal

from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import BaseModel, Field

from settlement.api.deps import SettingsDep, StoreDep, TreesDep
from settlement.api.schemas import ErrorOut
from settlement.errors import InputError, NotFound
from settlement.services import epochs as epochs_service
from settlement.services import explorer

if TYPE_CHECKING:
    from settlement.adapters.db.verdicts import StoredVerdict

router = APIRouter(
    prefix="/v1",
    tags=["epochs"],
    responses={404: {"model": ErrorOut, "description": "epoch not closed (or no tree)"}},
)

_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")


class AuditOut(BaseModel):
    ok: bool
    mismatches: int
    first_mismatch: str | None = Field(description="the first mismatch; null when clean")
    audited_at: int = Field(description="unix seconds")
    source: str
    root: str
    kind: Literal["epoch", "correction"]


class EpochOut(BaseModel):
    epoch: int
    root: str = Field(description="Merkle root of cumulative balances; 0x00..00 when none")
    dataHash: str = Field(description="keccak256 of the manifest bytes")
    cumulativeTotal: str = Field(description="sum of all leaves, base units (decimal string)")
    proposes: bool = Field(description="false: no balance changed, nothing to propose")
    audit: AuditOut | None = Field(
        default=None,
        description="the watchtower's latest verdict on this root (recorded by `settlement "
        "serve`'s watchtower); null when none was recorded on this root",
    )


class AllocationOut(BaseModel):
    account: str
    cls: Literal["node", "viewer", "creator"] = Field(alias="class")
    amount: str = Field(description="base units (decimal string)")

    model_config = {"populate_by_name": True}


class EarnedOut(BaseModel):
    node: str
    viewer: str
    creator: str
    total: str


class PendingOut(BaseModel):
    epoch: int
    root: str
    adds: str = Field(description="what the pending root adds for this account, base units")
    claimableAt: int = Field(description="unix seconds: the root's validAt")


class AccountOut(BaseModel):
    account: str
    epoch: int = Field(description="latest closed epoch (0: none yet)")
    earned: EarnedOut = Field(description="cumulative, by class, after that epoch")
    root: str | None = Field(description="root of the latest closed epoch")
    leaf: str = Field(
        description="the account's leaf in that tree: max(earned.total, its floor after a "
        "correction), what a claim against `root` pays up to; 0 without a leaf"
    )
    proof: list[str] | None = Field(
        description="proof of (account, leaf) against `root`; null without a leaf"
    )
    claimed: str | None = Field(
        default=None, description="claimed on-chain so far; null until a chain is configured"
    )
    claimableNow: str | None = Field(
        default=None,
        description="claimable against the accepted on-chain root; null until a chain is configured",
    )
    acceptedRoot: str | None = Field(
        default=None,
        description="the distributor's accepted root; null until a chain is configured",
    )
    acceptedProof: list[str] | None = Field(
        default=None,
        description="proof against the accepted root; null until a chain is configured",
    )
    pending: PendingOut | None = Field(
        default=None, description="the pending root's effect; null until a chain is configured"
    )


def _epoch_out(c: epochs_service.ClosedEpoch, audit: StoredVerdict | None = None) -> EpochOut:
    return EpochOut(
        epoch=c.epoch,
        root=c.root,
        dataHash=c.data_hash,
        cumulativeTotal=str(c.cumulative_total),
        proposes=c.proposes,
        audit=None if audit is None else AuditOut(**audit.to_json()),
    )


# Epochs are stored as signed 64-bit integers (SQLite INTEGER, PostgreSQL bigint): a larger
# number names no epoch and is refused as input instead of overflowing the driver.
EPOCH_MAX = 2**63 - 1
EpochPath = Annotated[int, Path(ge=1, le=EPOCH_MAX, description="epoch number (from 1)")]


@router.get("/epochs", summary="Closed epochs, newest first")
def list_epochs(
    store: StoreDep,
    settings: SettingsDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before: Annotated[
        int | None, Query(ge=1, le=EPOCH_MAX, description="only epochs below this one")
    ] = None,
) -> list[EpochOut]:
    closed = epochs_service.list_epochs(store, settings, limit, before)
    audits = explorer.audits(store, {c.epoch: c.root for c in closed})
    return [_epoch_out(c, audits.get(c.epoch)) for c in closed]


@router.get(
    "/epochs/{epoch}",
    summary="The epoch's manifest.json, byte for byte as published",
    response_class=Response,
    responses={200: {"content": {"application/json": {}}}},
)
def get_manifest(epoch: EpochPath, store: StoreDep, settings: SettingsDep) -> Response:
    closed = epochs_service.get_epoch(store, settings, epoch)
    return Response(closed.manifest, media_type="application/json")


@router.get(
    "/epochs/{epoch}/tree",
    summary="The epoch's standard-v1 tree dump (OpenZeppelin StandardMerkleTree.load accepts it)",
    response_class=Response,
    responses={200: {"content": {"application/json": {}}}},
)
def get_tree(epoch: EpochPath, store: StoreDep, settings: SettingsDep) -> Response:
    dump = epochs_service.tree_dump(store, settings, epoch)
    if dump is None:
        raise NotFound(f"epoch {epoch} has no tree: no account has a positive balance")
    return Response(dump, media_type="application/json")


_CURSOR = re.compile(r"^0x[0-9a-fA-F]{40}:(node|viewer|creator)$")


@router.get(
    "/epochs/{epoch}/allocations",
    summary="What each account got in the epoch, by class, a page at a time",
    responses={422: {"model": ErrorOut, "description": "limit out of range or a bad cursor"}},
)
def get_allocations(
    epoch: EpochPath,
    store: StoreDep,
    settings: SettingsDep,
    response: Response,
    limit: Annotated[int, Query(ge=1, le=10_000, description="rows per page")] = 1000,
    after: Annotated[
        str | None,
        Query(
            max_length=64,
            description="cursor: the X-Next-Cursor header of the previous page "
            "(0xACCOUNT:class of its last row)",
        ),
    ] = None,
) -> list[AllocationOut]:
    """Rows ordered by (account, class). A full page carries `X-Next-Cursor`: pass it as
    `after` for the next page."""
    cursor = None
    if after is not None:
        if not _CURSOR.match(after):
            raise InputError(f"{after!r} is not a cursor: give 0x<40 hex>:node|viewer|creator")
        account, _, cls = after.partition(":")
        cursor = (bytes.fromhex(account[2:]), cls)
    rows = epochs_service.allocations(store, settings, epoch, limit, cursor)
    if len(rows) == limit:
        last_account, last_cls, _ = rows[-1]
        response.headers["X-Next-Cursor"] = f"0x{last_account.hex()}:{last_cls}"
    return [
        AllocationOut(account="0x" + a.hex(), cls=cls, amount=str(v))  # type: ignore[arg-type]
        for a, cls, v in rows
    ]


@router.get(
    "/accounts/{address}",
    summary="Cumulative earnings by class and the proof against the latest closed tree",
    responses={422: {"model": ErrorOut, "description": "not a 20-byte 0x address"}},
)
def get_account(
    address: str, request: Request, store: StoreDep, settings: SettingsDep, trees: TreesDep
) -> AccountOut:
    if not _ADDRESS.match(address):
        raise InputError(f"{address!r} is not an address: give 0x and 40 hex digits")
    account = bytes.fromhex(address[2:])
    view = epochs_service.account(store, settings, account, trees)
    # Imported here: the chain side (web3) is only loaded by services that have a chain.
    from settlement.api.routes.claims import account_chain_fields

    chain_fields = account_chain_fields(request.app.state.claims, store, account)
    return AccountOut(
        **chain_fields,
        account="0x" + view.account.hex(),
        epoch=view.epoch,
        earned=EarnedOut(
            node=str(view.node),
            viewer=str(view.viewer),
            creator=str(view.creator),
            total=str(view.total),
        ),
        root=view.root,
        leaf=str(view.leaf),
        proof=view.proof,
    )

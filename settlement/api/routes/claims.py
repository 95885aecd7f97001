"""GET /v1/accounts/{address}/claim: ready calldata for a wallet, against the accepted root.

The chain comes from W2E_RPC_URL and the deployment record, connected on first use; an
in-process caller (the demo, tests) may put a `ChainContext` on `app.state.chain_context`
instead. The tree is the dump of the proposal whose root the distributor accepted.
"""

from __future__ import annotations

import dataclasses
import re
import threading
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from settlement.adapters import chain as chainlib
from settlement.adapters.db import submitter as sdb
from settlement.api.deps import SettingsDep, StoreDep
from settlement.api.schemas import ErrorOut
from settlement.domain.merkle import MerkleTree
from settlement.errors import InputError, NotFound, RpcUnavailable

router = APIRouter(prefix="/v1", tags=["claims"])

_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")


@dataclasses.dataclass
class ChainContext:
    chain: chainlib.Chain
    distributor: chainlib.Distributor


_connect_lock = threading.Lock()


def chain_context(request: Request) -> ChainContext:
    state = request.app.state
    ctx = getattr(state, "chain_context", None)
    if ctx is not None:
        return ctx
    settings = state.api.settings
    if not settings.rpc_url:
        raise RpcUnavailable(
            "this service has no chain: set W2E_RPC_URL (and W2E_DEPLOYMENT_FILE) to answer claims"
        )
    with _connect_lock:
        ctx = getattr(state, "chain_context", None)
        if ctx is None:
            chain = chainlib.connect(settings)
            deployment = chainlib.load_deployment(settings.deployment_file, chain)
            ctx = ChainContext(chain, chainlib.Distributor(chain, deployment.distributor))
            state.chain_context = ctx
    return ctx


ChainDep = Annotated[ChainContext, Depends(chain_context)]


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


_trees: dict[str, MerkleTree] = {}
_trees_lock = threading.Lock()


def _tree_for(store: Any, settings: Any, root: str) -> MerkleTree:
    """The published tree of `root`: a closed epoch with that root (newest first), through
    the close's own tree cache so GET /v1/accounts/{address} loads a tree once; else the
    dump its proposal names (a correction's tree belongs to no epoch)."""
    with _trees_lock:
        if root in _trees:
            return _trees[root]
    from settlement.services import epochs as epochs_service

    tree = None
    for closed in epochs_service.list_epochs(store, settings, limit=1000):
        if closed.root == root:
            tree = epochs_service.epoch_tree(store, settings, closed)
            break
    if tree is None:
        for row in reversed(sdb.SubmitterStore(store).by_root(root)):
            if row.dump_path and Path(row.dump_path).exists():
                tree = MerkleTree.load(Path(row.dump_path).read_bytes())
                break
    if tree is None:
        raise NotFound(f"no published tree for the accepted root {root} in this service")
    with _trees_lock:
        if len(_trees) > 4:
            _trees.clear()
        _trees[root] = tree
    return tree


@router.get(
    "/accounts/{address}/claim",
    summary="Ready claim calldata, claimable amount and contract for a wallet",
    responses={
        404: {"model": ErrorOut, "description": "no leaf for the account in the accepted root"},
        422: {"model": ErrorOut, "description": "not a 20-byte 0x address"},
        503: {"model": ErrorOut, "description": "no chain configured or the RPC is down"},
    },
)
def get_claim(address: str, store: StoreDep, settings: SettingsDep, ctx: ChainDep) -> ClaimOut:
    if not _ADDRESS.match(address):
        raise InputError(f"{address!r} is not an address: give 0x and 40 hex digits")
    root = ctx.distributor.root()
    if root == "0x" + "00" * 32:
        raise NotFound("no root is accepted on-chain yet: nothing is claimable")
    tree = _tree_for(store, settings, root)
    try:
        info = chainlib.claim_info(ctx.distributor, tree, address)
    except InputError:
        raise NotFound(f"{address.lower()} has no reward in the accepted root {root}") from None
    return ClaimOut(**info.to_json())


def account_chain_fields(state: Any, store: Any, settings: Any, account: bytes) -> dict[str, Any]:
    """The chain-facing fields of GET /v1/accounts/{address} (claimed, claimableNow,
    acceptedRoot, acceptedProof, pending), from the Claimed indexer's table and the chain;
    {} when this service has no chain. `claimed` is as indexed (it lags by the indexer's
    interval and confirmations); the rest is read live."""
    try:
        ctx = getattr(state, "chain_context", None)
        if ctx is None:
            if not settings.rpc_url:
                return {}
            ctx = chain_context(_StateRequest(state))  # type: ignore[arg-type]
    except RpcUnavailable:
        return {}
    d = ctx.distributor
    claimed = sdb.SubmitterStore(store).claimed(account)
    address = "0x" + account.hex()
    out: dict[str, Any] = {"claimed": str(claimed), "claimableNow": "0"}
    root = d.root()
    accepted_leaf = 0
    if root != "0x" + "00" * 32:
        out["acceptedRoot"] = root
        tree = _tree_for(store, settings, root)
        try:
            index = tree.index_of(address)
        except InputError:
            index = None
        if index is not None:
            accepted_leaf = tree.values[index][1]
            out["acceptedProof"] = tree.proof(index)
            out["claimableNow"] = str(max(accepted_leaf - claimed, 0))
    pending = d.pending_root()
    if pending is not None:
        leaf = 0
        try:
            pending_tree = _tree_for(store, settings, pending.root)
            leaf = dict(pending_tree.values).get(address, 0)
        except NotFound:
            pass
        out["pending"] = {
            "epoch": pending.epoch,
            "root": pending.root,
            "adds": str(max(leaf - max(accepted_leaf, claimed), 0)),
            "claimableAt": pending.valid_at,
        }
    return out


class _StateRequest:
    """Just enough of a Request for `chain_context`: its app's state."""

    def __init__(self, state: Any) -> None:
        self.app = type("App", (), {"state": state})()

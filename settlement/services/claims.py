"""Claims: what an account can claim against the accepted root (for the API), and the Claimed
indexer that records what was claimed on-chain."""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from settlement.adapters import chain as chainlib
from settlement.adapters.db import submitter as sdb
from settlement.adapters.db.store import Store
from settlement.client.claims import ClaimInfo
from settlement.config import Settings
from settlement.domain.merkle import MerkleTree
from settlement.errors import InputError, NotFound, RpcUnavailable
from settlement.services import epochs as epochs_service
from settlement.services.epochs import TreeCache

CLAIMS_CURSOR = "claimed"
ZERO_ROOT = "0x" + "00" * 32
T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class ChainContext:
    """The chain a service answers claims from: its connection and the distributor."""

    chain: chainlib.Chain
    distributor: chainlib.Distributor


@dataclasses.dataclass(frozen=True)
class PendingClaim:
    """What the pending root adds for an account once it is accepted."""

    epoch: int
    root: str
    adds: int
    claimable_at: int


@dataclasses.dataclass(frozen=True)
class AccountOnChain:
    """The chain side of an account: `claimed` as indexed (it lags by the indexer's interval
    and confirmations), the rest read live."""

    claimed: int
    claimable_now: int
    accepted_root: str | None  # None: no root accepted yet
    accepted_proof: list[str] | None  # None: no leaf in the accepted root
    pending: PendingClaim | None


class BlockReads:
    """Chain reads of the public account pages, kept for one head block: anonymous requests at
    the same head are answered from here instead of each calling the RPC. The head block number
    itself is asked once per request, or once per `head_ttl` seconds when that is above 0.

    A value read just as a new block arrives may be one block old; it is replaced at the next
    head. Bounded: at most `max_entries` values (per-account ones are only for accounts with a
    leaf), the least recently used go first."""

    def __init__(self, head_ttl: float = 0.0, max_entries: int = 10_000) -> None:
        self.head_ttl = head_ttl
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self._block = -1
        self._head_read = float("-inf")  # time.monotonic() of the last head read
        self._values: OrderedDict[tuple[str, ...], Any] = OrderedDict()

    def head(self, chain: chainlib.Chain) -> int:
        """The head block: asked of the chain, unless asked less than head_ttl seconds ago."""
        with self._lock:
            if self.head_ttl > 0 and time.monotonic() - self._head_read < self.head_ttl:
                return self._block
        block = chain.block_number()
        with self._lock:
            if block != self._block:
                self._block = block
                self._values.clear()
            self._head_read = time.monotonic()
        return block

    def get(self, block: int, key: tuple[str, ...], read: Callable[[], T]) -> T:
        """`read()` once per head block and key; an error from it is raised and not kept."""
        with self._lock:
            if block == self._block and key in self._values:
                self._values.move_to_end(key)
                return self._values[key]  # type: ignore[no-any-return]
        value = read()
        with self._lock:
            if block == self._block:  # a newer head has cleared the cache: do not refill it
                self._values[key] = value
                while len(self._values) > self.max_entries:
                    self._values.popitem(last=False)
        return value


class Claims:
    """The API's claims: one per app, built in its lifespan. The chain is connected on first
    use (from W2E_RPC_URL and the deployment record) unless one is given (the embedded chain
    of the demo and tests); published trees come through `trees`, the app's tree cache
    (shared with the epochs routes, so a root's tree loads once), else a cache of its own."""

    def __init__(
        self,
        settings: Settings,
        chain_context: ChainContext | None = None,
        trees: TreeCache | None = None,
    ) -> None:
        self.settings = settings
        self._context = chain_context
        self._connect_lock = threading.Lock()
        self.trees = TreeCache() if trees is None else trees
        self.reads = BlockReads(settings.chain_head_ttl)

    def context(self) -> ChainContext:
        """The chain; RpcUnavailable when this service has none."""
        ctx = self._context
        if ctx is not None:
            return ctx
        settings = self.settings
        if not settings.rpc_url:
            raise RpcUnavailable(
                "this service has no chain: set W2E_RPC_URL (and W2E_DEPLOYMENT_FILE) to answer "
                "claims"
            )
        with self._connect_lock:
            if self._context is None:
                chain = chainlib.connect(settings)
                deployment = chainlib.load_deployment(settings.deployment_file, chain)
                self._context = ChainContext(
                    chain, chainlib.Distributor(chain, deployment.distributor)
                )
            return self._context

    def tree(self, store: Store, root: str) -> MerkleTree:
        """The published tree of `root`, through the tree cache: a closed epoch's with that
        root (newest first), else the dump its proposal names (a correction's tree belongs to
        no epoch)."""
        tree = self.trees.get(root, lambda: self._load_tree(store, root))
        if tree is None:  # cached by the epochs routes: an epoch without balances (root 0)
            raise NotFound(f"no published tree for the accepted root {root} in this service")
        return tree

    def _load_tree(self, store: Store, root: str) -> MerkleTree:
        settings = self.settings
        for closed in epochs_service.list_epochs(store, settings, limit=1000):
            if closed.root == root:
                dump = epochs_service.tree_dump(store, settings, closed.epoch)
                if dump is not None:
                    return MerkleTree.load(dump)
                break
        for row in reversed(sdb.SubmitterStore(store).by_root(root)):
            if row.dump_path and Path(row.dump_path).exists():
                return MerkleTree.load(Path(row.dump_path).read_bytes())
        raise NotFound(f"no published tree for the accepted root {root} in this service")

    def claim(self, store: Store, address: str) -> ClaimInfo:
        """Ready calldata for `address` against the accepted root (GET .../claim)."""
        ctx = self.context()
        block = self.reads.head(ctx.chain)
        root = self.reads.get(block, ("root",), ctx.distributor.root)
        if root == ZERO_ROOT:
            raise NotFound("no root is accepted on-chain yet: nothing is claimable")
        tree = self.tree(store, root)
        try:  # in the tree first: an account without a leaf costs no chain read
            tree.index_of(address)
        except InputError:
            raise NotFound(f"{address.lower()} has no reward in the accepted root {root}") from None
        return self.reads.get(
            block,
            ("claim", address.lower()),
            lambda: chainlib.claim_info(ctx.distributor, tree, address),
        )

    def account(self, store: Store, account: bytes) -> AccountOnChain | None:
        """The chain side of GET /v1/accounts/{address}; None when this service has no chain."""
        try:
            ctx = self.context()
        except RpcUnavailable:
            return None
        d = ctx.distributor
        block = self.reads.head(ctx.chain)
        claimed = sdb.SubmitterStore(store).claimed(account)
        address = "0x" + account.hex()
        claimable_now = 0
        accepted_root = accepted_proof = None
        root = self.reads.get(block, ("root",), d.root)
        accepted_leaf = 0
        if root != ZERO_ROOT:
            accepted_root = root
            tree = self.tree(store, root)
            try:
                index = tree.index_of(address)
            except InputError:
                index = None
            if index is not None:
                accepted_leaf = tree.values[index][1]
                accepted_proof = tree.proof(index)
                claimable_now = max(accepted_leaf - claimed, 0)
        pending = self.reads.get(block, ("pending",), d.pending_root)
        adds = None
        if pending is not None:
            leaf = 0
            with contextlib.suppress(NotFound):
                leaf = dict(self.tree(store, pending.root).values).get(address, 0)
            adds = PendingClaim(
                pending.epoch,
                pending.root,
                max(leaf - max(accepted_leaf, claimed), 0),
                pending.valid_at,
            )
        return AccountOnChain(claimed, claimable_now, accepted_root, accepted_proof, adds)


def index_claims(store: Store, distributor: chainlib.Distributor, deployment_block: int) -> int:
    """Read Claimed events since the last run into the store; returns how many were read."""
    rows = sdb.SubmitterStore(store)
    start = rows.cursor(CLAIMS_CURSOR)
    if start is None:
        start = deployment_block
    scan = chainlib.scan_claims(distributor, start)
    if scan.next_block > start:
        rows.record_claims(CLAIMS_CURSOR, scan.claimed, scan.next_block - 1, scan.next_block)
    return len(scan.events)

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
from settlement.adapters.db.epochs import EpochStore
from settlement.adapters.db.store import Store
from settlement.adapters.keys import Key, load_optional_key
from settlement.client.claims import ClaimInfo
from settlement.config import Settings
from settlement.domain.merkle import MerkleTree
from settlement.errors import (
    Busy,
    InputError,
    KeyUnavailable,
    NotFound,
    NothingToClaim,
    RpcUnavailable,
)
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
    and confirmations) or, for an account with a leaf in the accepted root, read live; the
    rest read live (per head block)."""

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
                # The index lags; an account with a leaf is worth one read per head block, so
                # a claim made a moment ago shows at once.
                live = self.reads.get(block, ("claimed", address), lambda: d.claimed(address))
                claimed = max(claimed, live)
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


@dataclasses.dataclass(frozen=True)
class EpochRewards:
    """What an account was allocated by one closed epoch, by class, base units."""

    epoch: int
    node: int
    viewer: int
    creator: int

    @property
    def total(self) -> int:
        return self.node + self.viewer + self.creator


def rewards_by_epoch(store: Store, account: bytes) -> list[EpochRewards]:
    """The account's allocations per closed epoch (oldest first); epochs without one are left
    out."""
    by_epoch: dict[int, dict[str, int]] = {}
    for epoch, cls, amount in EpochStore(store).account_allocations(account):
        by_epoch.setdefault(epoch, {})[cls] = by_epoch.get(epoch, {}).get(cls, 0) + amount
    return [
        EpochRewards(e, c.get("node", 0), c.get("viewer", 0), c.get("creator", 0))
        for e, c in sorted(by_epoch.items())
    ]


@dataclasses.dataclass(frozen=True)
class Relayed:
    """What a relay did: the transactions sent, base units paid per account, and the accounts
    left out with the reason."""

    results: list[chainlib.ClaimResult]
    skipped: dict[str, str]


class RelayUnavailable(Busy):
    """This service relays no claims now (no claimer key, or a relay already running)."""


class ClaimRelay:
    """Gas-free claims for viewers, creators and nodes: the service's claimer key sends
    claimMany for accounts with something claimable under the accepted root. Nothing else can
    be relayed (tokens always go to the account; an account with nothing claimable costs no
    gas), so what the relayer spends is bounded by one claim per account and root. One relay
    at a time per process: its nonces stay in order. Workers of one service each relay on
    their own; should two pick the same nonce, the one the node refuses is a ChainError
    (the relayer's nonce is read again) and the request can simply be sent again."""

    def __init__(self, claims: Claims, max_accounts: int) -> None:
        self.claims = claims
        self.max_accounts = max_accounts
        self._lock = threading.Lock()
        self._key: Key | None = None

    def key(self) -> Key:
        if self._key is None:
            try:
                key = load_optional_key(self.claims.settings, "claimer", prompt=None)
            except KeyUnavailable as error:
                raise RelayUnavailable(f"this service relays no claims: {error}") from None
            if key is None:
                raise RelayUnavailable(
                    "this service relays no claims: it has no claimer key (set "
                    "W2E_CLAIMER_KEYSTORE, or W2E_CLAIMER_KEY_ENV's variable); claim with "
                    "`settlement claim ADDRESS --service URL` and a key that pays the gas"
                )
            self._key = key
        return self._key

    def relay(self, store: Store, accounts: list[str]) -> Relayed:
        """claimMany for the `accounts` with something claimable now; NothingToClaim (saying
        why for each) when none has."""
        wanted = list(dict.fromkeys(a.lower() for a in accounts))
        if not 1 <= len(wanted) <= self.max_accounts:
            raise InputError(f"relay 1 to {self.max_accounts} accounts at once, got {len(wanted)}")
        key = self.key()
        ctx = self.claims.context()
        if not self._lock.acquire(timeout=30):
            raise RelayUnavailable("another relay is being mined: try again in a few seconds")
        try:
            root = ctx.distributor.root()
            if root == ZERO_ROOT:
                raise NothingToClaim(self._why_not(store, ctx, wanted[0], None))
            tree = self.claims.tree(store, root)
            infos, skipped = [], {}
            for account in wanted:
                try:
                    tree.index_of(account)
                except InputError:
                    skipped[account] = self._why_not(store, ctx, account, None)
                    continue
                info = chainlib.claim_info(ctx.distributor, tree, account)
                if info.claimable == 0:
                    skipped[account] = self._why_not(store, ctx, account, info)
                else:
                    infos.append(info)
            if not infos:
                raise NothingToClaim("; ".join(f"{a}: {why}" for a, why in skipped.items()))
            results = chainlib.relay_claims(
                key, ctx.distributor, infos, batch_size=self.claims.settings.claim_batch_size
            )
        finally:
            self._lock.release()
        return Relayed(results, skipped)

    def _why_not(
        self, store: Store, ctx: ChainContext, account: str, info: ClaimInfo | None
    ) -> str:
        pending = ctx.distributor.pending_root()
        if pending is not None:
            leaf = 0
            with contextlib.suppress(NotFound):
                leaf = dict(self.claims.tree(store, pending.root).values).get(account, 0)
            adds = leaf - (info.cumulative_amount if info is not None else 0)
            if adds > 0:
                return (
                    f"{adds} base units pending in the root of epoch {pending.epoch}, "
                    f"claimable after validAt {pending.valid_at}"
                )
        if info is not None:
            return f"everything ({info.cumulative_amount} base units) is already claimed"
        return "no reward in the accepted root"


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

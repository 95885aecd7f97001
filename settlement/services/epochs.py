"""The read side of closed epochs: what the API and CLI show (an epoch, its allocations, its
tree and an account's balance with its proof), from the store and the published files."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from settlement.adapters.db.epochs import EpochStore
from settlement.adapters.db.store import Store
from settlement.config import Settings
from settlement.domain import dataset, merkle
from settlement.errors import InputError, NotFound
from settlement.services.close import ClosedEpoch, closed_epoch


def get_epoch(store: Store, settings: Settings, epoch: int) -> ClosedEpoch:
    stored = EpochStore(store).get(epoch)
    if stored is None:
        raise NotFound(f"epoch {epoch} is not closed")
    return closed_epoch(stored, settings.data_dir, True, {})


def list_epochs(
    store: Store, settings: Settings, limit: int = 100, before: int | None = None
) -> list[ClosedEpoch]:
    return [
        closed_epoch(s, settings.data_dir, True, {}) for s in EpochStore(store).list(limit, before)
    ]


def tree_dump(store: Store, settings: Settings, epoch: int) -> bytes | None:
    """The epoch's standard-v1 dump bytes, None when no balance is positive."""
    closed = get_epoch(store, settings, epoch)
    for f in closed.manifest_obj["files"]:
        if f["name"] == dataset.TREE:
            path = closed.directory / f"{f['sha256']}.json"
            try:
                return path.read_bytes()
            except OSError as error:
                raise NotFound(
                    f"the tree dump of epoch {epoch} is missing at {path}: {error}"
                ) from None
    return None


def allocations(
    store: Store,
    settings: Settings,
    epoch: int,
    limit: int | None = None,
    after: tuple[bytes, str] | None = None,
) -> list[tuple[bytes, str, int]]:
    """The epoch's allocations ordered by (account, class): all, or a page of `limit` rows
    after the (account, class) `after`."""
    get_epoch(store, settings, epoch)
    return EpochStore(store).allocations(epoch, limit, after)


class TreeCache:
    """Published trees by root, loaded once per root: a million leaves take seconds to load.

    One per app, built in its lifespan and shared by the epochs routes and `Claims`; callers
    without an app (the CLI, tests) make their own. Bounded: the `max_roots` used last stay
    (the latest closed epoch, the accepted and the pending root are the ones asked for).
    A root names its leaves, so a tree found under it is the tree, whichever epoch or
    correction published it. Concurrent askers for one root wait for one load; a load of
    another root does not hold them up."""

    def __init__(self, max_roots: int = 4) -> None:
        self.max_roots = max_roots
        self._trees: OrderedDict[str, merkle.MerkleTree | None] = OrderedDict()
        self._loading: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    def get(
        self, root: str, load: Callable[[], merkle.MerkleTree | None]
    ) -> merkle.MerkleTree | None:
        """The tree of `root`, from `load` the first time (None: the root has no tree). An
        error from `load` is raised and nothing is kept."""
        with self._lock:
            if root in self._trees:
                self._trees.move_to_end(root)
                return self._trees[root]
            gate = self._loading.setdefault(root, threading.Lock())
        with gate:
            with self._lock:
                if root in self._trees:
                    self._trees.move_to_end(root)
                    return self._trees[root]
            try:
                tree = load()
            finally:
                with self._lock:
                    self._loading.pop(root, None)
            with self._lock:
                self._trees[root] = tree
                while len(self._trees) > self.max_roots:
                    self._trees.popitem(last=False)
            return tree

    def __contains__(self, root: str) -> bool:
        with self._lock:
            return root in self._trees


def epoch_tree(
    store: Store, settings: Settings, closed: ClosedEpoch, trees: TreeCache
) -> merkle.MerkleTree | None:
    """A closed epoch's published tree (None: no balance is positive), loaded once into
    `trees`."""

    def load() -> merkle.MerkleTree | None:
        dump = tree_dump(store, settings, closed.epoch)
        return None if dump is None else merkle.MerkleTree.load(dump)

    return trees.get(closed.root, load)


@dataclass(frozen=True, slots=True)
class AccountView:
    account: bytes
    epoch: int  # latest closed epoch (0: none)
    node: int
    viewer: int
    creator: int
    root: str | None  # of the latest closed epoch
    proof: list[str] | None  # against that root; None when the account has no leaf
    leaf: int = 0  # its amount in that tree: max(balance, floor) (PROTOCOL 6)

    @property
    def total(self) -> int:
        return self.node + self.viewer + self.creator


def account(
    store: Store, settings: Settings, address: bytes, trees: TreeCache | None = None
) -> AccountView:
    """What `address` has earned and its proof against the latest closed tree, loaded through
    `trees` (the app's; a caller without one loads the tree afresh)."""
    epochs = EpochStore(store)
    latest = epochs.last_closed()
    _, n, v, c = epochs.balance(address)
    if latest == 0:
        return AccountView(address, 0, n, v, c, None, None)
    closed = get_epoch(store, settings, latest)
    tree = epoch_tree(store, settings, closed, TreeCache() if trees is None else trees)
    if tree is None:
        return AccountView(address, latest, n, v, c, closed.root, None)
    try:  # an account with a floor has a leaf without a balance (PROTOCOL 6)
        index = tree.index_of(address)
    except InputError:
        return AccountView(address, latest, n, v, c, closed.root, None)
    return AccountView(
        address, latest, n, v, c, closed.root, tree.proof(index), tree.values[index][1]
    )

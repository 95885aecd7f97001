"""The read side of closed epochs: what the API and CLI show (an epoch, its allocations, its
tree and an account's balance with its proof), from the store and the published files."""

from __future__ import annotations

import threading
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


def allocations(store: Store, settings: Settings, epoch: int) -> list[tuple[bytes, str, int]]:
    get_epoch(store, settings, epoch)
    return EpochStore(store).allocations(epoch)


_tree_cache: dict[tuple[str, str], merkle.MerkleTree | None] = {}
_tree_lock = threading.Lock()


def epoch_tree(store: Store, settings: Settings, closed: ClosedEpoch) -> merkle.MerkleTree | None:
    """A closed epoch's published tree, loaded once per process (a million leaves take
    seconds to load); the last one asked for stays cached."""
    key = (str(closed.directory), closed.data_hash)
    with _tree_lock:
        if key not in _tree_cache:
            dump = tree_dump(store, settings, closed.epoch)
            _tree_cache.clear()
            _tree_cache[key] = None if dump is None else merkle.MerkleTree.load(dump)
        return _tree_cache[key]


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


def account(store: Store, settings: Settings, address: bytes) -> AccountView:
    epochs = EpochStore(store)
    latest = epochs.last_closed()
    _, n, v, c = epochs.balance(address)
    if latest == 0:
        return AccountView(address, 0, n, v, c, None, None)
    closed = get_epoch(store, settings, latest)
    tree = epoch_tree(store, settings, closed)
    if tree is None:
        return AccountView(address, latest, n, v, c, closed.root, None)
    try:  # an account with a floor has a leaf without a balance (PROTOCOL 6)
        index = tree.index_of(address)
    except InputError:
        return AccountView(address, latest, n, v, c, closed.root, None)
    return AccountView(
        address, latest, n, v, c, closed.root, tree.proof(index), tree.values[index][1]
    )

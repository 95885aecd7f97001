"""The tree cache an app shares between its epochs routes and its claims service: a root's
tree loads once, the cache stays bounded, and a failed load keeps nothing."""

from __future__ import annotations

import threading
import time

import pytest

from settlement.domain.merkle import MerkleTree
from settlement.errors import NotFound
from settlement.services.epochs import TreeCache


def tree(n: int) -> MerkleTree:
    return MerkleTree.of([(bytes([n]) * 20, n)])


def test_a_root_loads_once():
    cache = TreeCache()
    loads = []

    def load():
        loads.append(1)
        return tree(1)

    first = cache.get("r1", load)
    assert cache.get("r1", load) is first and len(loads) == 1
    # No tree (an epoch without balances) is remembered too.
    assert cache.get("zero", lambda: None) is None
    assert cache.get("zero", lambda: pytest.fail("loaded again")) is None


def test_the_roots_used_last_stay():
    cache = TreeCache(max_roots=2)
    for root in ("a", "b"):
        cache.get(root, lambda: tree(1))
    cache.get("a", lambda: pytest.fail("a is cached"))  # a is now the most recent
    cache.get("c", lambda: tree(2))
    assert "a" in cache and "c" in cache and "b" not in cache


def test_a_failed_load_keeps_nothing():
    cache = TreeCache()

    def missing():
        raise NotFound("the dump is missing")

    with pytest.raises(NotFound):
        cache.get("r", missing)
    assert "r" not in cache
    assert cache.get("r", lambda: tree(3)) is not None


def test_concurrent_askers_share_one_load_and_others_are_not_held_up():
    cache = TreeCache()
    loads = []
    release = threading.Event()

    def slow():
        loads.append(1)
        release.wait(5)
        return tree(4)

    got = []
    askers = [
        threading.Thread(target=lambda: got.append(cache.get("slow", slow))) for _ in range(3)
    ]
    for t in askers:
        t.start()
    while not loads:
        time.sleep(0.001)
    # Another root answers while the slow one loads.
    assert cache.get("fast", lambda: tree(5)) is not None
    release.set()
    for t in askers:
        t.join(5)
    assert len(loads) == 1 and len(got) == 3 and all(g is got[0] for g in got)

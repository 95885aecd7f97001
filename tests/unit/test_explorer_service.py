"""The explorer's pure pieces: node credit from the moves of a close (the per-viewer cap as the
close applies it), the delivery cache (one pass for the epochs not kept yet), W2E formatting."""

from __future__ import annotations

from typing import Any

import pytest

from settlement.adapters.db.explorer import Moved
from settlement.domain.rewards import allocate
from settlement.errors import InputError
from settlement.services.explorer import (
    DeliveryCache,
    epoch_deliveries,
    format_w2e,
    parse_address,
)

V1, V2, N1, N2, N3 = (bytes([i]) * 20 for i in range(1, 6))


def test_node_credit_caps_each_viewer_and_counts_keys() -> None:
    moved = {
        (V1, N1): Moved(keys=2, bytes=300),
        (V1, N2): Moved(keys=1, bytes=100),
        (V2, N2): Moved(keys=1, bytes=50),
        (V2, N3): Moved(keys=1, bytes=0),  # included for its segments only
    }
    got = epoch_deliveries(moved, cap=250)
    split = allocate(250, {N1: 300, N2: 100})  # V1 is above the cap, V2 is not
    assert got.bytes_by_node == {N1: split[N1], N2: split[N2] + 50}
    assert sum(got.bytes_by_node.values()) == 300
    assert got.keys_by_node == {N1: 2, N2: 2, N3: 1}
    uncapped = epoch_deliveries(moved, cap=2**64 - 1)
    assert uncapped.bytes_by_node == {N1: 300, N2: 150}


class FakeReads:
    """ExplorerReads' delivery_moves over fixed moves, counting its passes."""

    def __init__(self, moves: dict[int, dict[tuple[bytes, bytes], Moved]]) -> None:
        self.moves = moves
        self.passes: list[list[int]] = []

    def delivery_moves(self, epochs: Any) -> dict[int, dict[tuple[bytes, bytes], Moved]]:
        self.passes.append(sorted(epochs))
        return {e: self.moves.get(e, {}) for e in epochs}


def test_delivery_cache_reads_only_the_epochs_it_lacks_in_one_pass() -> None:
    reads = FakeReads({1: {(V1, N1): Moved(1, 10)}, 2: {(V1, N1): Moved(1, 20)}})
    cache = DeliveryCache(max_epochs=2)
    got = cache.get_many(reads, {2: 100, 1: 100})  # type: ignore[arg-type]
    assert reads.passes == [[1, 2]]
    assert got[1].bytes_by_node == {N1: 10} and got[2].bytes_by_node == {N1: 20}
    assert cache.get_many(reads, {1: 100})[1] is got[1]  # type: ignore[arg-type]
    assert reads.passes == [[1, 2]]
    cache.get_many(reads, {3: 100})  # type: ignore[arg-type]  # evicts epoch 2, used last before 1
    cache.get_many(reads, {1: 100, 2: 100})  # type: ignore[arg-type]
    assert reads.passes == [[1, 2], [3], [2]]


def test_format_and_parse() -> None:
    assert format_w2e(-(10**18)) == "-1"
    assert format_w2e(10**18 * 1000) == "1,000"
    with pytest.raises(TypeError):
        format_w2e(1.5)  # type: ignore[arg-type]
    assert parse_address(" 0X" + "Ab" * 20) == bytes.fromhex("ab" * 20)
    for bad in ("0x12", "ab" * 21, "0x" + "zz" * 20, ""):
        with pytest.raises(InputError):
            parse_address(bad)

"""The floor after a correction (PROTOCOL 6): leaves that never fall below what was claimed.

A correction's leaf for each account is max(balance after the close of its epoch, claimed
on-chain at `claimedAtBlock`); those leaves become the floor of every later close, whose
leaves are max(balance, floor). So no leaf of an accepted root falls below the same
account's leaf in the root before it (except through a correction), and `totalFunded >=
cumulativeTotal` covers every claim. The auditor runs these same two functions on
published data.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

K = TypeVar("K", str, bytes)


def leaves_under_floor(balances: Mapping[K, int], floor: Mapping[K, int]) -> dict[K, int]:
    """Leaf amounts of an ordinary close: max(balance, floor[account]) for every account
    with a positive one (an account with a positive floor has a leaf without a balance)."""
    leaves = {a: v for a, v in balances.items() if v > 0}
    for account, amount in floor.items():
        if amount > leaves.get(account, 0):
            leaves[account] = amount
    return leaves


def correction_leaves(balances: Mapping[K, int], claimed: Mapping[K, int]) -> dict[K, int]:
    """Leaf amounts of a correction: max(balance after the close, claimed on-chain) for every
    account with a positive one. The floor it replaces plays no part: it corrects it."""
    return leaves_under_floor(balances, claimed)

"""The floor after a correction (PROTOCOL 6), pure: leaves never fall below what was claimed.

The model below plays the distributor by PROTOCOL 7's rules for ordinary roots (a total may
not decrease; claims pay `leaf - claimed`) and the service by PROTOCOL 6's (leaves are
max(balance, floor); no proposal while a root it did not make is accepted; a correction's
leaves are max(balance, claimed)). The contract itself is held to the same rules on the
embedded chain and anvil (tests/integration/test_floor_chain.py).
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from settlement.domain.floor import correction_leaves, leaves_under_floor

ACCOUNTS = [bytes([i]) * 20 for i in range(1, 6)]
amounts = st.integers(0, 10**6)
balances = st.dictionaries(st.sampled_from(ACCOUNTS), amounts, max_size=5)


@given(balances, balances)
def test_leaves_are_the_larger_of_balance_and_floor(balance, floor):
    leaves = leaves_under_floor(balance, floor)
    for a in set(balance) | set(floor):
        want = max(balance.get(a, 0), floor.get(a, 0))
        assert leaves.get(a, 0) == want
    assert all(v > 0 for v in leaves.values())


@given(balances, balances)
def test_a_correction_ignores_the_floor_it_replaces(balance, claimed):
    assert correction_leaves(balance, claimed) == leaves_under_floor(balance, claimed)


class Distributor:
    """PROTOCOL 7 for what this test needs: accepted root (as leaves), totals, claims."""

    def __init__(self, funded: int) -> None:
        self.funded = funded
        self.leaves: dict[bytes, int] = {}
        self.total = 0
        self.claimed: dict[bytes, int] = {}
        self.paid = 0
        self.paused = False

    def propose(self, leaves: dict[bytes, int], *, correction: bool = False) -> None:
        total = sum(leaves.values())
        assert total <= self.funded, "Insolvent"
        if correction:
            assert self.paused, "ExpectedPause"
        else:
            assert not self.paused, "EnforcedPause"
            assert total >= self.total, "TotalDecreased"
        self.leaves, self.total = dict(leaves), total

    def claim(self, account: bytes) -> None:
        assert not self.paused
        leaf, already = self.leaves.get(account, 0), self.claimed.get(account, 0)
        if leaf > already:
            self.claimed[account] = leaf
            self.paid += leaf - already

    def owed(self) -> int:
        """What the accepted root still owes to every account."""
        return sum(max(0, v - self.claimed.get(a, 0)) for a, v in self.leaves.items())


ops = st.lists(
    st.one_of(
        st.tuples(st.just("epoch"), st.dictionaries(st.sampled_from(ACCOUNTS), amounts)),
        st.tuples(st.just("claim"), st.sampled_from(ACCOUNTS)),
        st.tuples(
            st.just("bad_root"),
            st.dictionaries(st.sampled_from(ACCOUNTS), st.integers(1, 10**7), min_size=1),
        ),
        st.tuples(st.just("correct"), st.none()),
    ),
    max_size=40,
)


@settings(max_examples=400)
@given(ops)
def test_no_accepted_leaf_falls_below_a_claim_and_every_root_is_accepted(steps):
    funded = 10**9
    chain = Distributor(funded)
    balance: dict[bytes, int] = {}
    floor: dict[bytes, int] = {}
    ours = True  # the accepted root is the service's own
    claimed_at_correction: dict[bytes, int] = {}
    for kind, arg in steps:
        if kind == "epoch":
            for a, v in arg.items():
                balance[a] = balance.get(a, 0) + v
            if ours:  # PROTOCOL 6: no ordinary proposal over a root it did not make
                chain.propose(leaves_under_floor(balance, floor))  # never TotalDecreased
        elif kind == "claim":
            chain.claim(arg)
        elif kind == "bad_root":
            # Anything the contract takes: at least the accepted leaves, some raised.
            bad = leaves_under_floor(leaves_under_floor(balance, floor), chain.leaves)
            for a, extra in arg.items():
                bad[a] = bad.get(a, 0) + extra
            chain.propose(bad)  # the poster key's root, accepted
            ours = False
        else:  # the guardian pauses; the service corrects; the guardian unpauses
            chain.paused = True
            claimed = dict(chain.claimed)
            floor = correction_leaves(balance, claimed)
            chain.propose(floor, correction=True)
            chain.paused = False
            claimed_at_correction = claimed
            ours = True
        # Solvency: what is owed plus what was paid never exceeds the funds.
        assert chain.owed() + chain.paid <= funded
        if ours:
            for a, v in chain.claimed.items():
                assert chain.leaves.get(a, 0) >= v
    if not ours:
        return
    # Everybody claims at the end: each is paid exactly max(balance, claimed at correction).
    for a in ACCOUNTS:
        chain.claim(a)
    for a in ACCOUNTS:
        want = max(balance.get(a, 0), claimed_at_correction.get(a, 0))
        assert chain.claimed.get(a, 0) == chain.leaves.get(a, 0) == want
    assert chain.paid == chain.total <= funded

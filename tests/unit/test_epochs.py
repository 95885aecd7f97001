from hypothesis import given
from hypothesis import strategies as st

from settlement.domain.epochs import EpochClock

clocks = st.builds(
    EpochClock,
    genesis=st.integers(0, 2**40),
    length=st.integers(1, 10**6),
    grace=st.integers(0, 10**6),
)


@given(clocks, st.integers(0, 2**41))
def test_bucket_is_the_epoch_whose_cutoff_window_holds_the_receipt(clock, offset):
    issued = clock.genesis + offset
    e = clock.bucket(issued)
    assert e >= 1
    assert clock.cutoff(e - 1) <= issued < clock.cutoff(e)


@given(clocks, st.integers(0, 2**41))
def test_last_due_is_the_last_epoch_whose_cutoff_has_passed(clock, offset):
    now = clock.genesis + offset
    e = clock.last_due(now)
    if e >= 1:
        assert clock.cutoff(e) <= now
    assert clock.cutoff(e + 1) > now


def test_bounds_of_the_first_epochs():
    clock = EpochClock(genesis=1000, length=100, grace=10)
    assert (clock.start(1), clock.end(1), clock.cutoff(1)) == (1000, 1100, 1110)
    assert clock.cutoff(0) == 1000
    assert clock.bucket(1000) == 1
    assert clock.bucket(1109) == 1
    assert clock.bucket(1110) == 2
    assert clock.last_due(1109) == 0
    assert clock.last_due(1110) == 1

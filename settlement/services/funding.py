"""The distributor's funding margin: what its tokens cover beyond the latest closed epoch's
root, so an operator funds it before a root would be refused as insolvent."""

from __future__ import annotations

import dataclasses

from prometheus_client import Gauge

from settlement.adapters.chain import Distributor
from settlement.adapters.db import submitter as sdb
from settlement.adapters.db.epochs import EpochStore
from settlement.adapters.db.store import Store
from settlement.config import Settings

FUNDING_MARGIN = Gauge(
    "w2e_distributor_funding_margin_base_units",
    "W2E base units the distributor holds beyond what the latest closed epoch's root owes: "
    "min(balance - (allocated - claimed), totalFunded - allocated); below 0 that root is "
    "insolvent",
)
NEXT_POOLS = Gauge(
    "w2e_distributor_next_epoch_pools_base_units",
    "W2E base units the next epoch may add to the allocations: the emission plus the pools "
    "carried out of the latest close (alert when the funding margin is below this)",
)


@dataclasses.dataclass(frozen=True)
class FundingMargin:
    """Integers in base units, read at one moment (the claims as indexed from Claimed)."""

    balance: int  # the distributor's token balance
    total_funded: int  # its totalFunded(): what the contract checks a root's total against
    allocated: int  # cumulative total of the latest closed epoch (0 before the first)
    claimed: int  # sum of every account's claimed cumulative, as indexed
    next_pools: int  # the emission plus the latest close's carried pools

    @property
    def margin(self) -> int:
        """balance - (allocated - claimed): the tokens left once everything allocated is
        claimed. Also at most totalFunded - allocated, the contract's own solvency rule
        (tokens sent without fund() do not count there)."""
        return min(
            self.balance - (self.allocated - self.claimed), self.total_funded - self.allocated
        )


def read_margin(store: Store, settings: Settings, distributor: Distributor) -> FundingMargin:
    """The margin now: the store's latest close and indexed claims, the chain's balance."""
    epochs = EpochStore(store)
    last = epochs.last_closed()
    stored = epochs.get(last) if last >= 1 else None
    allocated = stored.cumulative_total if stored is not None else 0
    carried = (
        stored.carried.node + stored.carried.viewer + stored.carried.creator
        if stored is not None
        else 0
    )
    claimed = sum(sdb.SubmitterStore(store).claimed_all().values())
    return FundingMargin(
        balance=distributor.token.balance_of(distributor.address),
        total_funded=distributor.total_funded(),
        allocated=allocated,
        claimed=claimed,
        next_pools=settings.emission + carried,
    )


def refresh_margin(store: Store, settings: Settings, distributor: Distributor) -> FundingMargin:
    """read_margin, and the two gauges set from it."""
    m = read_margin(store, settings, distributor)
    FUNDING_MARGIN.set(m.margin)
    NEXT_POOLS.set(m.next_pools)
    return m

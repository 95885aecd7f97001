"""The auditor's one window on the chain: a RewardDistributor's events and views."""

from __future__ import annotations

from typing import Any

from settlement.errors import InputError


class ChainView:
    """What the auditor reads of one RewardDistributor: its events and views."""

    def __init__(self, distributor: Any, from_block: int = 0) -> None:
        self.distributor = distributor
        self.from_block = from_block
        self._events: list[Any] | None = None
        self.head: int | None = None  # the block the events were read to

    @classmethod
    def connect(cls, rpc_url: str, address: str, from_block: int = 0) -> ChainView:
        from settlement.adapters.chain import contracts, provider

        chain = provider.connect(rpc_url=rpc_url)
        distributor = contracts.Distributor(chain, address)
        if not distributor.has_code():
            raise InputError(f"no contract at {address} on chain {chain.chain_id}")
        return cls(distributor, from_block)

    @property
    def chain_id(self) -> int:
        return int(self.distributor.chain.chain_id)

    @property
    def address(self) -> str:
        return str(self.distributor.address).lower()

    def events(self, refresh: bool = False) -> list[Any]:
        """Every distributor event (adapters.chain.events.ChainEvent), in chain order."""
        if self._events is None or refresh:
            from settlement.adapters.chain.events import read_events

            # One block for the events and the views read against them: on a live chain a
            # root accepted while the audit runs must not look like a mismatch.
            self.head = self.distributor.chain.block_number()
            self._events = read_events(self.distributor, self.from_block, self.head)
        return self._events

    def root(self) -> str:
        """The accepted root, 0x hex, at the block the events were read to."""
        self.events()
        return str(self.distributor.root(self.head)).lower()

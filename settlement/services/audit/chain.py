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

            self._events = read_events(self.distributor, self.from_block)
        return self._events

    def root(self) -> str:
        """The accepted root, 0x hex."""
        return str(self.distributor.root()).lower()

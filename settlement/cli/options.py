"""Typer options that more than one command declares: one spelling, one help text."""

from __future__ import annotations

from typing import Annotated

import typer

ChainIdOption = Annotated[int | None, typer.Option(help="EIP-712 chainId (default: W2E_CHAIN_ID)")]
DistributorOption = Annotated[
    str | None, typer.Option(help="RewardDistributor address (default: W2E_DISTRIBUTOR)")
]

"""Response models of the explorer's JSON API (GET /v1/nodes/{address}, GET /v1/leaderboards):
the shapes settlement.services.explorer's views serialise to, for validation and OpenAPI."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

DecimalString = Field(pattern=r"^[0-9]+$", examples=["1500000000000000000"])


class NodeRegistrationOut(BaseModel):
    state: Literal["none", "pending", "approved", "rejected"] = Field(
        description="the node's newest signed registration request: none when it never sent "
        "one (an admin may still have registered it)"
    )
    requested_at: int | None = Field(description="unix seconds the request was stored")
    decided_at: int | None = Field(description="unix seconds it was approved or rejected")


class NodeEpochOut(BaseModel):
    epoch: int
    bytes_credited: str = Field(
        description="the node's weight in the epoch: bytes above the watermarks, after the "
        "per-viewer cap (PROTOCOL 5); decimal string",
        pattern=r"^[0-9]+$",
    )
    receipts_included: int = Field(description="delivery keys (receipts) the close included")
    rejected: dict[str, int] = Field(
        description="receipts naming the node refused at ingest, by reason code, bucketed in "
        "this epoch"
    )
    reward: str = Field(description="node-class allocation, base units", pattern=r"^[0-9]+$")


class NodeActivityOut(BaseModel):
    address: str = Field(description="EIP-55 checksummed")
    registered: bool = Field(description="in the node registry")
    active: bool = Field(description="registered and active: its receipts are accepted")
    label: str | None
    registration: NodeRegistrationOut
    epochs: list[NodeEpochOut] = Field(description="closed epochs, newest first")
    rejected_total: dict[str, int] = Field(
        description="every rejection under this node by reason, open epochs and epoch 0 "
        "(outside any epoch's window) included"
    )
    earned: str = Field(
        description="node-class allocations of every closed epoch, base units", pattern=r"^[0-9]+$"
    )


class RankedOut(BaseModel):
    rank: int
    address: str = Field(description="EIP-55 checksummed")
    amount: str = Field(description="base units (decimal string)", pattern=r"^[0-9]+$")


class LeaderboardOut(BaseModel):
    cls: Literal["node", "viewer", "creator"] = Field(alias="class")
    epoch: int | None = Field(description="null: cumulative over every closed epoch")
    accounts: int = Field(description="accounts with a positive amount")
    total: str = Field(description="sum of their amounts, base units", pattern=r"^[0-9]+$")
    entries: list[RankedOut] = Field(description="by amount, ties by address ascending")

    model_config = {"populate_by_name": True}

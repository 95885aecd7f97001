"""GET /v1/info: what a player, a node or the simulator needs to sign receipts this service
takes (EIP-712 domain, PROTOCOL section 3 parameters, epochs) and the service's clock."""

from __future__ import annotations

import time
from typing import Literal

from eth_utils import to_checksum_address
from fastapi import APIRouter
from pydantic import BaseModel, Field

from settlement import __version__
from settlement.api.deps import SettingsDep
from settlement.domain.dataset import PROTOCOL_VERSION
from settlement.domain.receipts import DOMAIN_NAME, DOMAIN_VERSION

router = APIRouter(tags=["info"])


class InfoOut(BaseModel):
    """The service's signing domain, receipt parameters and clock (all integers, seconds)."""

    protocol_version: str = Field(description="PROTOCOL version of receipts and datasets")
    service_version: str
    eip712_name: str = Field(description="EIP-712 domain name of receipts")
    eip712_version: str = Field(description="EIP-712 domain version of receipts")
    chain_id: int = Field(description="EIP-712 chainId receipts are signed for")
    distributor: str = Field(
        description="RewardDistributor address, checksummed: the EIP-712 verifyingContract"
    )
    genesis: int = Field(description="unix time epoch 1 starts; receipts before it are TOO_OLD")
    epoch_seconds: int
    grace_seconds: int = Field(description="seconds after an epoch's end before it closes")
    now: int = Field(description="the service's clock (unix seconds) when it answered")
    current_epoch: int = Field(
        description="the epoch whose [start, end) holds `now` (0 before genesis)"
    )
    clock_skew: int = Field(description="seconds issuedAt may run ahead of the service's now")
    max_age: int = Field(description="seconds after issuedAt a receipt is still taken")
    max_session_age: int = Field(description="largest issuedAt - startedAt, seconds")
    segment_seconds: int
    max_bitrate: int = Field(description="bits per second a node may plausibly serve one viewer")
    max_lead_seconds: int = Field(description="media seconds a player may fetch ahead")
    min_segment_bytes: int
    max_batch: int = Field(description="receipts per POST /v1/receipts; more is 413")
    registry_mode: Literal["open", "approval"]
    viewer_allowlist: bool = Field(description="only listed viewers may sign receipts")


@router.get(
    "/v1/info",
    response_model=InfoOut,
    summary="Signing domain, receipt parameters and the service's clock",
)
async def info(settings: SettingsDep) -> InfoOut:
    """Public and cheap (no store, no chain): sign receipts for `chain_id` and `distributor`,
    with `issuedAt` near `now`, within the parameters of PROTOCOL section 3."""
    now = int(time.time())
    current = (
        (now - settings.genesis) // settings.epoch_seconds + 1 if now >= settings.genesis else 0
    )
    return InfoOut(
        protocol_version=PROTOCOL_VERSION,
        service_version=__version__,
        eip712_name=DOMAIN_NAME,
        eip712_version=DOMAIN_VERSION,
        chain_id=settings.chain_id,
        distributor=to_checksum_address(settings.distributor),
        genesis=settings.genesis,
        epoch_seconds=settings.epoch_seconds,
        grace_seconds=settings.grace_seconds,
        now=now,
        current_epoch=current,
        clock_skew=settings.clock_skew,
        max_age=settings.max_age,
        max_session_age=settings.max_session_age,
        segment_seconds=settings.segment_seconds,
        max_bitrate=settings.max_bitrate,
        max_lead_seconds=settings.max_lead_seconds,
        min_segment_bytes=settings.min_segment_bytes,
        max_batch=settings.max_batch,
        registry_mode=settings.registry_mode,
        viewer_allowlist=settings.viewer_allowlist,
    )

"""SDK for players and nodes: sign receipts (ReceiptSigner), submit them (SettlementClient),
fetch what to claim (claim_info_from_service)."""

from settlement.client.claims import ClaimInfo, claim_info_from_service
from settlement.client.http import (
    AsyncSettlementClient,
    BatchResult,
    ItemVerdict,
    RetriesExhausted,
    SettlementClient,
    SubmitError,
    SubmitResult,
)
from settlement.client.signer import (
    CounterWentDown,
    KeyLoadError,
    PlayerSession,
    ReceiptArgumentError,
    ReceiptSigner,
)

__all__ = [
    "AsyncSettlementClient",
    "BatchResult",
    "ClaimInfo",
    "CounterWentDown",
    "ItemVerdict",
    "KeyLoadError",
    "PlayerSession",
    "ReceiptArgumentError",
    "ReceiptSigner",
    "RetriesExhausted",
    "SettlementClient",
    "SubmitError",
    "SubmitResult",
    "claim_info_from_service",
]

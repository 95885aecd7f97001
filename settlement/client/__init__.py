"""SDK for players and nodes: sign receipts (ReceiptSigner), submit them (SettlementClient)."""

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
]

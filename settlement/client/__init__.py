"""SDK for players and nodes: learn the service's domain, parameters and clock
(SettlementClient.info -> ServiceInfo), sign receipts (ReceiptSigner), submit them
(SettlementClient), fetch what to claim (claim_info_from_service)."""

from settlement.client.claims import ClaimInfo, claim_info_from_service
from settlement.client.http import (
    AsyncSettlementClient,
    BatchResult,
    ItemVerdict,
    RetriesExhausted,
    ServiceUnreachable,
    SettlementClient,
    SubmitError,
    SubmitResult,
)
from settlement.client.info import ServiceInfo, ServiceInfoError
from settlement.client.signer import (
    CounterWentDown,
    KeyLoadError,
    PlayerSession,
    ReceiptArgumentError,
    ReceiptSigner,
    UnacceptableReceipt,
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
    "ServiceInfo",
    "ServiceInfoError",
    "ServiceUnreachable",
    "SettlementClient",
    "SubmitError",
    "SubmitResult",
    "UnacceptableReceipt",
    "claim_info_from_service",
]

"""The chain adapter: transactions (tx), contract wrappers (contracts), deployment (deploy),
events (events) and claims (claims); `from settlement.adapters import chain as c` reaches them.

Transactions are split into build+sign (`Chain.build` -> `PreparedTx`, a plain value the
caller may persist) and send (`Chain.send`), so a crash between the two never loses track of
a nonce or a hash. All amounts are ints of base units (wei); nothing here uses floats for them.
"""

from settlement.adapters.chain.claims import (
    ClaimResult,
    claim_info,
    claim_infos,
    load_tree,
    paid_in,
    refresh_claim,
    relay_claims,
    send_claim,
)
from settlement.adapters.chain.contracts import (
    ABI_DIR,
    DEFAULT_ADMIN_ROLE,
    GUARDIAN_ROLE,
    MINTER_ROLE,
    POSTER_ROLE,
    ZERO_BYTES32,
    Artifact,
    Distributor,
    PendingRoot,
    Token,
    load_artifact,
    submit_proposal,
)
from settlement.adapters.chain.deploy import (
    Deployment,
    deploy,
    fund_distributor,
    load_deployment,
    save_deployment,
)
from settlement.adapters.chain.events import (
    DISTRIBUTOR_EVENTS,
    PROPOSAL_EVENTS,
    ChainEvent,
    ClaimScan,
    RootHistory,
    find_proposal,
    read_events,
    root_history,
    scan_claims,
)
from settlement.adapters.chain.local import free_port, wait_until
from settlement.adapters.chain.provider import connect
from settlement.adapters.chain.revert import rpc_errors
from settlement.adapters.chain.tx import Call, Chain, Fees, Mined, NonceManager, PreparedTx
from settlement.adapters.keys import Key
from settlement.client.claims import ClaimInfo

__all__ = [
    "ABI_DIR",
    "DEFAULT_ADMIN_ROLE",
    "DISTRIBUTOR_EVENTS",
    "GUARDIAN_ROLE",
    "MINTER_ROLE",
    "POSTER_ROLE",
    "PROPOSAL_EVENTS",
    "ZERO_BYTES32",
    "Artifact",
    "Call",
    "Chain",
    "ChainEvent",
    "ClaimInfo",
    "ClaimResult",
    "ClaimScan",
    "Deployment",
    "Distributor",
    "Fees",
    "Key",
    "Mined",
    "NonceManager",
    "PendingRoot",
    "PreparedTx",
    "RootHistory",
    "Token",
    "claim_info",
    "claim_infos",
    "connect",
    "deploy",
    "find_proposal",
    "free_port",
    "fund_distributor",
    "load_artifact",
    "load_deployment",
    "load_tree",
    "paid_in",
    "read_events",
    "refresh_claim",
    "relay_claims",
    "root_history",
    "rpc_errors",
    "save_deployment",
    "scan_claims",
    "send_claim",
    "submit_proposal",
    "wait_until",
]

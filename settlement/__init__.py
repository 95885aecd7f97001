"""W2E settlement engine: signed delivery and view receipts in, Merkle roots on-chain, claims out."""

__version__ = "0.1.0"
PROTOCOL_VERSION = 1

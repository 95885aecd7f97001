"""The plain values of a transaction's life: its fees, the call to send, the signed
`PreparedTx` a caller persists before sending it, and the `Mined` receipt. No I/O: the
submitter's store and the CLI's JSON hold them as they are."""

from __future__ import annotations

import dataclasses
import json
from typing import Any


@dataclasses.dataclass(frozen=True)
class Fees:
    """EIP-1559 fees in wei."""

    max_fee_per_gas: int
    max_priority_fee_per_gas: int

    def bumped(self, percent: int, floor: Fees | None = None, cap: int | None = None) -> Fees:
        """Both fees raised by at least `percent` (rounded up, as nodes compare), and at least
        `floor` (today's suggestion); the fee cap never above `cap`."""
        tip = -(-self.max_priority_fee_per_gas * (100 + percent) // 100)
        fee = -(-self.max_fee_per_gas * (100 + percent) // 100)
        if floor is not None:
            tip = max(tip, floor.max_priority_fee_per_gas)
            fee = max(fee, floor.max_fee_per_gas)
        if cap is not None:
            fee = min(fee, cap)
        return Fees(max(fee, tip), tip)


@dataclasses.dataclass(frozen=True)
class Call:
    """A contract call to send: target, calldata and a label for messages."""

    to: str | None  # None: contract creation
    data: str
    label: str
    value: int = 0


@dataclasses.dataclass(frozen=True)
class PreparedTx:
    """A signed transaction not yet (or not known to be) sent. Persist it before `send`:
    from it alone a restarted process can re-send the same bytes or recognise its receipt."""

    sender: str
    nonce: int
    to: str | None
    data: str
    value: int
    gas: int
    fees: Fees
    chain_id: int
    raw: str
    tx_hash: str
    label: str = ""

    def to_json(self) -> str:
        doc = dataclasses.asdict(self)
        doc["fees"] = {k: str(v) for k, v in doc["fees"].items()}
        for k in ("nonce", "value", "gas", "chain_id"):
            doc[k] = str(doc[k])
        return json.dumps(doc, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> PreparedTx:
        doc = json.loads(text)
        fees = Fees(
            int(doc["fees"]["max_fee_per_gas"]), int(doc["fees"]["max_priority_fee_per_gas"])
        )
        return cls(
            sender=doc["sender"],
            nonce=int(doc["nonce"]),
            to=doc["to"],
            data=doc["data"],
            value=int(doc["value"]),
            gas=int(doc["gas"]),
            fees=fees,
            chain_id=int(doc["chain_id"]),
            raw=doc["raw"],
            tx_hash=doc["tx_hash"],
            label=doc.get("label", ""),
        )


@dataclasses.dataclass(frozen=True)
class Mined:
    """A mined transaction: which of the tracked hashes made it, and its receipt."""

    tx_hash: str
    block_number: int
    status: int
    gas_used: int
    effective_gas_price: int
    receipt: Any

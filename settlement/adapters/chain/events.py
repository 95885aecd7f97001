"""Reading distributor events: decoded logs, the Claimed indexer and the history of a root."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence
from typing import Any

from eth_utils import keccak
from eth_utils.abi import collapse_if_tuple
from hexbytes import HexBytes

from settlement.adapters.chain.contracts import Distributor, _Contract, bytes32, load_artifact
from settlement.adapters.chain.revert import rpc_errors


@dataclasses.dataclass(frozen=True)
class ChainEvent:
    """One decoded distributor event; `args` as the ABI names them (bytes32 as 0x hex)."""

    name: str
    block_number: int
    tx_hash: str
    log_index: int
    args: dict[str, Any]


DISTRIBUTOR_EVENTS = (
    "RootProposed",
    "CorrectionProposed",
    "RootAccepted",
    "RootRevoked",
    "Funded",
    "Claimed",
    "Paused",
    "Unpaused",
)


# A root is announced by one of these (same arguments): ordinary roots and corrections.
PROPOSAL_EVENTS = ("RootProposed", "CorrectionProposed")


@functools.cache
def _events(artifact_name: str) -> dict[bytes, tuple[str, list[tuple[str, str, bool]]]]:
    """topic0 -> (event name, [(input name, type, indexed)]) of an artifact's events."""
    out = {}
    for item in load_artifact(artifact_name).abi:
        if item.get("type") == "event":
            inputs = [
                (i["name"], collapse_if_tuple(i), i.get("indexed", False)) for i in item["inputs"]
            ]
            signature = f"{item['name']}({','.join(t for _, t, _ in inputs)})"
            out[keccak(text=signature)] = (item["name"], inputs)
    return out


def decode_log(contract: _Contract, log: Mapping[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """(name, args) of a log this contract emitted, or None. Indexed inputs of our events
    are all static types, so each is its topic's ABI word. Decoded with eth_abi directly:
    web3's process_log costs close to a millisecond a log."""
    topics = log["topics"]
    if not topics or str(log["address"]).lower() != contract.address_lower:
        return None
    known = _events(contract.artifact_name).get(bytes(topics[0]))
    if known is None:
        return None
    name, inputs = known
    codec = contract.chain.w3.codec
    indexed = [(n, t) for n, t, i in inputs if i]
    plain = [(n, t) for n, t, i in inputs if not i]
    args: dict[str, Any] = {}
    for (n, t), topic in zip(indexed, topics[1:], strict=True):
        args[n] = codec.decode([t], bytes(topic))[0]
    if plain:
        values = codec.decode([t for _, t in plain], bytes(HexBytes(log["data"])))
        args.update({n: v for (n, _), v in zip(plain, values, strict=True)})
    return name, {k: _plain(v) for k, v in args.items()}


def read_events(
    distributor: Distributor,
    from_block: int,
    to_block: int | None = None,
    *,
    names: Sequence[str] = DISTRIBUTOR_EVENTS,
    chunk: int | None = None,
) -> list[ChainEvent]:
    """Distributor events in [from_block, to_block] (default: the head), in chain order,
    asked for in `chunk`-block ranges (default W2E_LOG_CHUNK_BLOCKS), as public RPCs limit
    eth_getLogs."""
    chain = distributor.chain
    head = chain.block_number() if to_block is None else to_block
    topics = [
        "0x" + t.hex()
        for t, (name, _) in _events(distributor.artifact_name).items()
        if name in names
    ]
    out: list[ChainEvent] = []
    start = from_block
    while start <= head:
        end = min(start + (chunk or chain.log_chunk) - 1, head)
        with rpc_errors(chain.url):
            logs = chain.w3.eth.get_logs(
                {
                    "address": distributor.address,
                    "fromBlock": start,
                    "toBlock": end,
                    "topics": [topics],
                }
            )
        for log in logs:
            decoded = decode_log(distributor, log)
            if decoded is None:
                continue
            out.append(
                ChainEvent(
                    name=decoded[0],
                    block_number=log["blockNumber"],
                    tx_hash="0x" + bytes(log["transactionHash"]).hex(),
                    log_index=log["logIndex"],
                    args=decoded[1],
                )
            )
        start = end + 1
    out.sort(key=lambda e: (e.block_number, e.log_index))
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return "0x" + bytes(value).hex()
    if isinstance(value, str) and value.startswith("0x") and len(value) == 42:
        return value.lower()
    return value


@dataclasses.dataclass(frozen=True)
class ClaimScan:
    """What `scan_claims` found: events, each account's claimed cumulative (as of `to_block`,
    for accounts seen), and where the next scan starts."""

    events: list[ChainEvent]
    claimed: dict[str, int]
    paid: dict[str, int]
    next_block: int


def scan_claims(
    distributor: Distributor,
    from_block: int,
    to_block: int | None = None,
    *,
    confirmations: int | None = None,
    chunk: int | None = None,
) -> ClaimScan:
    """The Claimed indexer: read Claimed events from `from_block` up to the head less
    `confirmations - 1` blocks (default: the chain's setting). Persist `next_block` and pass
    it back next time. `claimed` is each account's latest `cumulative` (equal to the
    contract's claimed[account]); `paid` sums the amounts paid in the range."""
    chain = distributor.chain
    if to_block is None:
        need = chain.confirmations if confirmations is None else confirmations
        to_block = chain.block_number() - (need - 1)
    if to_block < from_block:
        return ClaimScan([], {}, {}, from_block)
    events = read_events(distributor, from_block, to_block, names=("Claimed",), chunk=chunk)
    claimed: dict[str, int] = {}
    paid: dict[str, int] = {}
    for e in events:
        account = e.args["account"]
        claimed[account] = e.args["cumulative"]
        paid[account] = paid.get(account, 0) + e.args["amount"]
    return ClaimScan(events, claimed, paid, to_block + 1)


@dataclasses.dataclass(frozen=True)
class RootHistory:
    """What the chain says about one root: its RootProposed / CorrectionProposed / RootAccepted
    / RootRevoked events in chain order, for reconciling a persisted proposal after a restart."""

    root: str
    events: list[ChainEvent]

    @property
    def status(self) -> str:
        """ "absent" (never proposed), "pending", "accepted" or "revoked": its latest event."""
        if not self.events:
            return "absent"
        return {
            "RootProposed": "pending",
            "CorrectionProposed": "pending",
            "RootAccepted": "accepted",
            "RootRevoked": "revoked",
        }[self.events[-1].name]

    @property
    def proposals(self) -> list[ChainEvent]:
        """Its proposals of either kind (ordinary or correction), in chain order."""
        return [e for e in self.events if e.name in PROPOSAL_EVENTS]


def root_history(
    distributor: Distributor,
    root: str | bytes,
    from_block: int,
    to_block: int | None = None,
    *,
    chunk: int | None = None,
) -> RootHistory:
    """Events of `root` from `from_block` (e.g. the deployment block, or the block before a
    persisted proposal was sent). A root proposed twice (after a revoke) shows twice."""
    wanted = "0x" + bytes32(root).hex()
    events = read_events(
        distributor,
        from_block,
        to_block,
        names=(*PROPOSAL_EVENTS, "RootAccepted", "RootRevoked"),
        chunk=chunk,
    )
    return RootHistory(wanted, [e for e in events if e.args["root"] == wanted])


def find_proposal(
    distributor: Distributor,
    root: str | bytes,
    from_block: int,
    to_block: int | None = None,
    *,
    chunk: int | None = None,
) -> ChainEvent | None:
    """The latest event that proposed `root` since `from_block`, RootProposed or
    CorrectionProposed (its args carry dataHash and dataURI), or None."""
    proposals = root_history(distributor, root, from_block, to_block, chunk=chunk).proposals
    return proposals[-1] if proposals else None

"""The chain adapter: web3 connection (embedded eth-tester or JSON-RPC), transactions with
nonces, EIP-1559 fees and same-nonce fee bumps, typed W2EToken / RewardDistributor wrappers,
deployment, claims and event reading.

Transactions are split into build+sign (`Chain.build` -> `PreparedTx`, a plain value the
caller may persist) and send (`Chain.send`), so a crash between the two never loses track of
a nonce or a hash. All amounts are ints of base units (wei); nothing here uses floats for them.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import requests
from eth_abi.exceptions import DecodingError
from eth_tester.exceptions import TransactionFailed as TesterRevert
from eth_utils import keccak, to_checksum_address
from eth_utils.abi import collapse_if_tuple
from eth_utils.exceptions import ValidationError as EthValidationError
from hexbytes import HexBytes
from web3 import EthereumTesterProvider, HTTPProvider, Web3
from web3.exceptions import (
    ContractCustomError,
    ContractLogicError,
    ContractPanicError,
    TransactionNotFound,
    Web3RPCError,
)
from web3.providers.rpc.utils import ExceptionRetryConfiguration

from settlement.adapters.keys import Key
from settlement.config import Settings
from settlement.errors import (
    ArtifactMissing,
    ChainError,
    ConfigError,
    ContractRevert,
    DeploymentMissing,
    DistributorPaused,
    InputError,
    InsolventProposal,
    NothingToClaim,
    RpcUnavailable,
    StaleClaims,
    TransactionFailed,
)

ABI_DIR = Path(__file__).resolve().parents[1] / "abi"

DEFAULT_ADMIN_ROLE = b"\x00" * 32
POSTER_ROLE = keccak(text="POSTER_ROLE")
GUARDIAN_ROLE = keccak(text="GUARDIAN_ROLE")
MINTER_ROLE = keccak(text="MINTER_ROLE")
ZERO_BYTES32 = b"\x00" * 32

_FIRST_POLL = 0.002  # seconds; a local node answers within a few ms, so start there and back off
_GAS_MARGIN_PERCENT = 20  # estimates are exact for the estimated state; claims race other claims


# ---------------------------------------------------------------------------------- artifacts


@dataclasses.dataclass(frozen=True)
class Artifact:
    name: str
    abi: list[dict[str, Any]]
    bytecode: str


@functools.cache
def load_artifact(name: str) -> Artifact:
    """`settlement/adapters/abi/NAME.json` as `scripts/export-abi` writes it."""
    path = ABI_DIR / f"{name}.json"
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise ArtifactMissing(
            f"no artifact {path}: run scripts/export-abi (it builds with forge)"
        ) from None
    return Artifact(name, doc["abi"], _hex0x(doc["bytecode"]))


def _hex0x(value: str) -> str:
    return value if value.startswith("0x") else "0x" + value


# ---------------------------------------------------------------------------------- values


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


# ---------------------------------------------------------------------------------- nonces


class NonceManager:
    """Next nonce per sender, starting from the node's pending count; thread-safe. Not
    shared between processes: the submitter persists each PreparedTx's nonce and calls
    `resync` on start. A built transaction that is never sent leaves a gap: `resync`."""

    def __init__(self, w3: Web3) -> None:
        self._w3 = w3
        self._next: dict[str, int] = {}
        self._lock = threading.Lock()

    def next(self, address: str) -> int:
        address = to_checksum_address(address)
        with self._lock:
            if address not in self._next:
                self._next[address] = self._w3.eth.get_transaction_count(address, "pending")
            nonce = self._next[address]
            self._next[address] = nonce + 1
            return nonce

    def resync(self, address: str) -> int:
        """Forget the local count (after a failed send or a restart); returns the node's."""
        address = to_checksum_address(address)
        with self._lock:
            self._next.pop(address, None)
        return self._w3.eth.get_transaction_count(address, "pending")

    def mined_count(self, address: str) -> int:
        """Transactions of `address` in mined blocks: nonces below it can no longer be sent."""
        return self._w3.eth.get_transaction_count(to_checksum_address(address), "latest")


# ---------------------------------------------------------------------------------- connection


class Chain:
    """A web3 connection with the project's transaction habits. Make it with `connect`."""

    def __init__(
        self,
        w3: Web3,
        *,
        url: str | None,
        poll_interval: float = 0.5,
        confirmations: int = 1,
        tx_timeout: float = 600,
        bump_blocks: int = 3,
        bump_percent: int = 20,
        max_fee_per_gas: int | None = None,
        log_chunk: int = 5000,
        tester: Any = None,
    ) -> None:
        self.w3 = w3
        self.url = url
        self.poll_interval = poll_interval
        self.confirmations = confirmations
        self.tx_timeout = tx_timeout
        self.bump_blocks = bump_blocks
        self.bump_percent = bump_percent
        self.max_fee_per_gas = max_fee_per_gas
        self.log_chunk = log_chunk
        self.tester = tester
        self.nonces = NonceManager(w3)
        self._errors: dict[bytes, tuple[str, list[str]]] = {}
        with rpc_errors(url):
            self.chain_id: int = w3.eth.chain_id

    @property
    def embedded(self) -> bool:
        return self.tester is not None

    def __repr__(self) -> str:
        return f"Chain({self.url or 'embedded'}, chain id {self.chain_id})"

    # -- reading ------------------------------------------------------------------------------

    def block_number(self) -> int:
        with rpc_errors(self.url):
            return self.w3.eth.block_number

    def balance(self, address: str) -> int:
        with rpc_errors(self.url):
            return self.w3.eth.get_balance(to_checksum_address(address))

    def suggest_fees(self) -> Fees:
        """Fee cap of twice the latest base fee plus the tip: survives six full blocks of
        base-fee rises before the transaction stops being includable."""
        with rpc_errors(self.url):
            base = self.w3.eth.get_block("latest").get("baseFeePerGas", 0)
            try:
                tip = self.w3.eth.max_priority_fee
            except (Web3RPCError, ValueError):
                tip = 10**9
        tip = max(tip, 1)
        fee = 2 * base + tip
        if self.max_fee_per_gas is not None:
            fee = min(fee, self.max_fee_per_gas)
            tip = min(tip, fee)
        return Fees(fee, tip)

    # -- transactions ------------------------------------------------------------------------

    def build(
        self,
        key: Key,
        call: Call,
        *,
        nonce: int | None = None,
        fees: Fees | None = None,
        gas: int | None = None,
    ) -> PreparedTx:
        """Estimate (a revert surfaces here, decoded, before anything is sent), pick a nonce
        and fees, and sign. Nothing reaches the network but reads."""
        tx: dict[str, Any] = {"from": key.address, "data": call.data, "value": call.value}
        if call.to is not None:
            tx["to"] = to_checksum_address(call.to)
        if gas is None:
            with rpc_errors(self.url), self.revert_errors(call.label):
                estimate = self.w3.eth.estimate_gas(tx)  # type: ignore[arg-type]
            gas = estimate + estimate * _GAS_MARGIN_PERCENT // 100
        if fees is None:
            fees = self.suggest_fees()
        if nonce is None:
            with rpc_errors(self.url):
                nonce = self.nonces.next(key.address)
        return self.sign(key, call, nonce=nonce, fees=fees, gas=gas)

    def sign(self, key: Key, call: Call, *, nonce: int, fees: Fees, gas: int) -> PreparedTx:
        tx: dict[str, Any] = {
            "type": 2,
            "chainId": self.chain_id,
            "nonce": nonce,
            "gas": gas,
            "maxFeePerGas": fees.max_fee_per_gas,
            "maxPriorityFeePerGas": fees.max_priority_fee_per_gas,
            "data": call.data,
            "value": call.value,
        }
        if call.to is not None:
            tx["to"] = to_checksum_address(call.to)
        raw, tx_hash = key.sign_transaction(tx)
        return PreparedTx(
            sender=key.address,
            nonce=nonce,
            to=tx.get("to"),
            data=call.data,
            value=call.value,
            gas=gas,
            fees=fees,
            chain_id=self.chain_id,
            raw="0x" + raw.hex(),
            tx_hash="0x" + tx_hash.hex(),
            label=call.label,
        )

    def replacement(self, key: Key, prepared: PreparedTx, percent: int | None = None) -> PreparedTx:
        """The same transaction with the same nonce and fees raised by `percent` (default
        the bump setting) or to today's suggestion, whichever is higher. Persist, then send."""
        call = Call(prepared.to, prepared.data, prepared.label, prepared.value)
        percent = self.bump_percent if percent is None else percent
        fees = prepared.fees.bumped(percent, floor=self.suggest_fees(), cap=self.max_fee_per_gas)
        # Nodes take a replacement only when both fees rise by their minimum (10% by default).
        least = prepared.fees.bumped(min(percent, 10))
        if (
            fees.max_fee_per_gas < least.max_fee_per_gas
            or fees.max_priority_fee_per_gas < least.max_priority_fee_per_gas
        ):
            raise ChainError(
                f"cannot bump {prepared.label or prepared.tx_hash}: fees are at the cap "
                f"W2E_MAX_FEE_PER_GAS={self.max_fee_per_gas}; raise it or wait"
            )
        return self.sign(key, call, nonce=prepared.nonce, fees=fees, gas=prepared.gas)

    def send(self, prepared: PreparedTx) -> str:
        """Broadcast the signed bytes. Idempotent: a node that already has them, or mined
        them, is not an error. Returns the hash."""
        with rpc_errors(self.url):
            try:
                self.w3.eth.send_raw_transaction(HexBytes(prepared.raw))
            # eth-tester raises its validation errors as they are; nodes answer RPC errors.
            except (Web3RPCError, EthValidationError, ValueError) as error:
                text = str(error).lower()
                if any(s in text for s in _ALREADY_KNOWN) or self.lookup(prepared.tx_hash):
                    return prepared.tx_hash
                self.nonces.resync(prepared.sender)
                if any(s in text for s in _NONCE_USED):
                    raise TransactionFailed(
                        f"{prepared.label or 'transaction'}: nonce {prepared.nonce} of "
                        f"{prepared.sender} is already used by another transaction; rebuild it "
                        "with a fresh nonce"
                    ) from None
                raise ChainError(
                    f"{prepared.label or 'transaction'} (nonce {prepared.nonce}) refused by the "
                    f"node: {error}"
                ) from None
        return prepared.tx_hash

    def lookup(self, tx_hash: str) -> Mined | None:
        """The receipt of `tx_hash` if it is mined, else None (pending or unknown)."""
        with rpc_errors(self.url):
            try:
                receipt = self.w3.eth.get_transaction_receipt(HexBytes(tx_hash))
            except TransactionNotFound:
                return None
        if receipt is None or receipt.get("blockNumber") is None:
            return None
        return Mined(
            tx_hash="0x" + bytes(receipt["transactionHash"]).hex(),
            block_number=receipt["blockNumber"],
            status=receipt["status"],
            gas_used=receipt["gasUsed"],
            effective_gas_price=receipt.get("effectiveGasPrice", 0),
            receipt=receipt,
        )

    def is_pending(self, tx_hash: str) -> bool:
        """True when the node still holds `tx_hash` unmined (for reconciling after a restart)."""
        with rpc_errors(self.url):
            try:
                tx = self.w3.eth.get_transaction(HexBytes(tx_hash))
            except TransactionNotFound:
                return False
        return tx is not None and tx.get("blockNumber") is None

    def wait(
        self,
        prepared: PreparedTx | Sequence[PreparedTx],
        *,
        key: Key | None = None,
        confirmations: int | None = None,
        timeout: float | None = None,
        before_send: Callable[[PreparedTx], None] | None = None,
        check: bool = True,
    ) -> Mined:
        """Wait until one of the transactions sharing this nonce is mined and confirmed.

        `prepared`: every signed version of the nonce sent so far (after a restart, all the
        caller persisted). Polls start at 2 ms and back off to `poll_interval`. Every tick
        (`poll_interval`, at least 0.1 s) it also re-broadcasts the latest version if the node
        no longer has it (a restarted node forgets its pool), and fails if the nonce was used
        by a transaction that is none of these. With `key`, a version unmined for
        `bump_blocks` blocks is replaced (same nonce, fees up by `bump_percent`);
        `before_send(new)` runs before the replacement is broadcast, so a caller can persist
        it first. `check`: a reverted transaction raises TransactionFailed with its reason.
        """
        tracked = [prepared] if isinstance(prepared, PreparedTx) else list(prepared)
        if not tracked or len({(t.sender, t.nonce) for t in tracked}) != 1:
            raise ValueError("wait takes the versions of one sender's nonce")
        need = self.confirmations if confirmations is None else confirmations
        limit = self.tx_timeout if timeout is None else timeout
        start = time.monotonic()
        deadline = start + limit
        tick = max(self.poll_interval, 0.1)
        next_tick = start + tick
        stuck_since: int | None = None  # head at the first unsuccessful poll
        delay = _FIRST_POLL
        while True:
            mined = self._mined_version(tracked)
            if mined is not None:
                tx, found = mined
                confirmed = self._confirm(found, need, deadline)
                if confirmed is not None:  # None: reorged out, keep waiting for any version
                    if check and confirmed.status != 1:
                        raise TransactionFailed(self._failure(tx, confirmed))
                    return confirmed
            elif key is not None and stuck_since is None:
                stuck_since = self.block_number()
            now = time.monotonic()
            if mined is None and now >= next_tick:
                next_tick = now + tick
                latest = tracked[-1]
                if self.nonces.mined_count(latest.sender) > latest.nonce:
                    if self._mined_version(tracked) is not None:
                        continue  # mined between the two reads
                    raise TransactionFailed(
                        f"{latest.label}: nonce {latest.nonce} of {latest.sender} was used by "
                        f"another transaction; none of {[t.tx_hash for t in tracked]} was mined"
                    )
                if not self.is_pending(latest.tx_hash):
                    self._send_quietly(latest)
                if key is not None and stuck_since is not None:
                    head = self.block_number()
                    if head - stuck_since >= self.bump_blocks:
                        stuck_since = head
                        try:
                            new = self.replacement(key, latest)
                        except ChainError:
                            new = None  # at the fee cap: keep waiting for what was sent
                        if new is not None:
                            if before_send is not None:
                                before_send(new)
                            tracked.append(new)
                            self._send_quietly(new)
            if now > deadline:
                last = tracked[-1]
                raise TransactionFailed(
                    f"{last.label}: not mined after {limit} s (nonce {last.nonce}, hashes "
                    f"{[t.tx_hash for t in tracked]}); it may still be mined: wait again, or "
                    "replace it with higher fees"
                )
            time.sleep(delay)
            delay = min(delay * 2, self.poll_interval)

    def _send_quietly(self, prepared: PreparedTx) -> None:
        """Broadcast while waiting: a refusal (underpriced replacement, a race with the nonce)
        leaves the versions already sent in the pool, so it is no reason to stop waiting."""
        try:
            self.send(prepared)
        except RpcUnavailable:
            raise
        except ChainError:
            pass

    def _mined_version(self, tracked: Sequence[PreparedTx]) -> tuple[PreparedTx, Mined] | None:
        for tx in reversed(tracked):
            mined = self.lookup(tx.tx_hash)
            if mined is not None:
                return tx, mined
        return None

    def _confirm(self, mined: Mined, need: int, deadline: float) -> Mined | None:
        delay = _FIRST_POLL
        while need > 1 and self.block_number() - mined.block_number + 1 < need:
            if time.monotonic() > deadline:
                raise TransactionFailed(
                    f"{mined.tx_hash} mined in block {mined.block_number} but not yet "
                    f"{need} blocks deep; wait again"
                )
            time.sleep(delay)
            delay = min(delay * 2, self.poll_interval)
        if need > 1:
            # A reorg may have dropped the block the receipt came from.
            again = self.lookup(mined.tx_hash)
            if again is None or again.receipt["blockHash"] != mined.receipt["blockHash"]:
                return None
        return mined

    def _failure(self, tx: PreparedTx, mined: Mined) -> str:
        reason = "no reason given"
        call = {"from": tx.sender, "to": tx.to, "data": tx.data, "value": tx.value, "gas": tx.gas}
        try:
            self.w3.eth.call(call, block_identifier=mined.block_number - 1)  # type: ignore[arg-type]
        except (ContractLogicError, ContractCustomError, ContractPanicError, TesterRevert) as error:
            reason = self._describe(error)
        except (Web3RPCError, ValueError):
            pass
        return (
            f"{tx.label or 'transaction'} {mined.tx_hash} reverted in block "
            f"{mined.block_number} ({reason}, gas used {mined.gas_used} of {tx.gas})"
        )

    def transact(
        self,
        key: Key,
        call: Call,
        *,
        bump: bool = True,
        before_send: Callable[[PreparedTx], None] | None = None,
    ) -> Mined:
        """Build, sign, send and wait (bumping fees when stuck): for one-shot commands.
        `before_send` sees each signed version before it is broadcast."""
        prepared = self.build(key, call)
        if before_send is not None:
            before_send(prepared)
        self.send(prepared)
        return self.wait(prepared, key=key if bump else None, before_send=before_send)

    # -- errors -------------------------------------------------------------------------------

    def register_errors(self, abi: Iterable[Mapping[str, Any]]) -> None:
        for item in abi:
            if item.get("type") == "error":
                types = [i["type"] for i in item.get("inputs", [])]
                selector = keccak(text=f"{item['name']}({','.join(types)})")[:4]
                self._errors[selector] = (item["name"], types)

    def decode_error(self, data: str | bytes | None) -> tuple[str, tuple[Any, ...]] | None:
        if data is None:
            return None
        raw = HexBytes(data) if isinstance(data, str) else bytes(data)
        if len(raw) < 4 or bytes(raw[:4]) not in self._errors:
            return None
        name, types = self._errors[bytes(raw[:4])]
        try:
            args = tuple(self.w3.codec.decode(types, bytes(raw[4:]))) if types else ()
        except (DecodingError, ValueError):  # undecodable arguments still name the error
            args = ()
        return name, args

    def _describe(self, error: Exception) -> str:
        decoded = self.decode_error(_revert_data(error))
        if decoded is not None:
            name, args = decoded
            return f"{name}({', '.join(_show(a) for a in args)})"
        return str(error)

    @contextlib.contextmanager
    def revert_errors(self, label: str) -> Iterator[None]:
        """Turn a contract revert into ContractRevert (or a subclass) naming the custom error."""
        try:
            yield
        except (ContractCustomError, ContractLogicError, ContractPanicError, TesterRevert) as error:
            decoded = self.decode_error(_revert_data(error))
            name = decoded[0] if decoded else None
            what = self._describe(error)
            if name == "EnforcedPause":
                raise DistributorPaused(
                    f"{label}: the distributor is paused; wait for the guardian's unpause"
                ) from None
            if name == "StaleClaims":
                raise StaleClaims(
                    f"{label} reverts: StaleClaims(): the claimed amounts were not read at a mined "
                    "block of the current pause (pausedAtBlock() <= claimedAtBlock < the "
                    "proposal's block); read them again and rebuild the correction"
                ) from None
            hint = _REVERT_HINTS.get(name or "", "")
            raise ContractRevert(f"{label} reverts: {what}{hint}", name) from None

    # -- dev chains ---------------------------------------------------------------------------

    def mine(self, blocks: int = 1) -> None:
        if self.tester is not None:
            self.tester.mine_blocks(blocks)
        else:
            self.w3.provider.make_request("anvil_mine", [hex(blocks)])  # type: ignore[arg-type]

    def increase_time(self, seconds: int) -> None:
        """Move the dev chain's clock forward and mine a block carrying the new time."""
        if self.tester is not None:
            ts = self.w3.eth.get_block("latest")["timestamp"]
            self.tester.time_travel(ts + seconds)
        else:
            self.w3.provider.make_request("evm_increaseTime", [seconds])  # type: ignore[arg-type]
            self.mine(1)

    def set_balance(self, address: str, wei: int) -> None:
        """Give `address` exactly `wei` of ether on a dev chain (test and demo keys)."""
        address = to_checksum_address(address)
        if self.tester is not None:
            have = self.w3.eth.get_balance(address)
            if wei > have:
                funder = self.tester.get_accounts()[-1]  # dev_key never hands this one out
                self.tester.send_transaction(
                    {"from": funder, "to": address, "value": wei - have, "gas": 21_000}
                )
            return
        self.w3.provider.make_request("anvil_setBalance", [address, hex(wei)])  # type: ignore[arg-type]

    def dev_key(self, index: int = 0) -> Key:
        """A pre-funded key of the embedded chain (there only: it lives in this process)."""
        if self.tester is None:
            raise ConfigError("dev keys exist only on the embedded chain; configure keys for RPC")
        from eth_account import Account

        keys = self.tester.backend.account_keys
        if not 0 <= index < len(keys) - 1:
            raise ConfigError(f"embedded dev keys are 0..{len(keys) - 2}")
        secret = keys[index].to_bytes()
        return Key(Account.from_key(secret), f"embedded-dev-{index}")


_ALREADY_KNOWN = ("already known", "already imported", "known transaction")
_NONCE_USED = ("nonce too low", "nonce is too low")

_REVERT_HINTS = {
    "RootPending": ": a root is pending; accept or revoke it first",
    "NoPendingRoot": ": no root is pending",
    "TooEarly": ": the challenge period has not passed; accept after validAt",
    "EpochNotAfter": ": the epoch is not after the accepted one",
    "TotalDecreased": ": a cumulative total may not go down outside a correction",
    "InvalidProof": ": the proof is not against root() or previousRoot(); fetch a fresh proof",
    "NothingToClaim": ": everything is already claimed",
    "InvalidRoot": ": the root is zero",
    "LengthMismatch": ": accounts, amounts and proofs differ in length",
    "AccessControlUnauthorizedAccount": ": the key lacks the role; use the right key",
    "ExpectedPause": ": the distributor is not paused; a correction needs the guardian's pause",
}


def _revert_data(error: Exception) -> Any:
    if isinstance(error, TesterRevert) and error.args and isinstance(error.args[0], str):
        # eth-tester reports "execution reverted: b'...'" with the revert data as a bytes repr.
        _, _, tail = error.args[0].partition(": ")
        with contextlib.suppress(ValueError, SyntaxError):
            data = ast.literal_eval(tail)
            if isinstance(data, bytes):
                return data
        return None
    data = getattr(error, "data", None)
    if isinstance(data, dict):
        data = data.get("data")
    return data if isinstance(data, str | bytes) and data else None


def _show(value: Any) -> str:
    return "0x" + value.hex() if isinstance(value, bytes) else str(value)


@contextlib.contextmanager
def rpc_errors(url: str | None) -> Iterator[None]:
    """Turn an unreachable JSON-RPC endpoint into RpcUnavailable, which says what to do."""
    try:
        yield
    except (requests.ConnectionError, requests.Timeout, ConnectionError) as error:
        raise RpcUnavailable(
            f"RPC {url} does not answer ({type(error).__name__}): start the node or fix W2E_RPC_URL"
        ) from None


def connect(
    settings: Settings | None = None, *, rpc_url: str | None = None, **overrides: Any
) -> Chain:
    """A Chain from Settings: W2E_RPC_URL, or the embedded eth-tester (py-evm) chain when unset.

    `rpc_url` and keyword overrides (poll_interval, confirmations, ...) win over Settings.
    """
    settings = settings or Settings()
    url = rpc_url if rpc_url is not None else settings.rpc_url
    options: dict[str, Any] = {
        "poll_interval": settings.chain_poll_interval,
        "confirmations": settings.chain_confirmations,
        "tx_timeout": settings.chain_tx_timeout,
        "bump_blocks": settings.fee_bump_blocks,
        "bump_percent": settings.fee_bump_percent,
        "max_fee_per_gas": settings.max_fee_per_gas,
        "log_chunk": settings.log_chunk_blocks,
    }
    options.update(overrides)
    tester = None
    if url:
        provider: Any = HTTPProvider(
            url,
            request_kwargs={"timeout": 30},
            # A few quick retries ride out a node restart; an outage fails fast with advice.
            exception_retry_configuration=ExceptionRetryConfiguration(
                errors=(requests.ConnectionError, requests.Timeout),
                retries=3,
                backoff_factor=0.1,
                method_allowlist=_RETRY_METHODS,
            ),
        )
    else:
        from eth_tester import EthereumTester, PyEVMBackend

        tester = EthereumTester(PyEVMBackend())
        tester.backend.chain.gas_estimator = _estimate_once
        provider = EthereumTesterProvider(tester)
    w3 = Web3(provider)
    # ENS lookups and request validation cost a round trip or a formatter pass per call and
    # are useless against our own contracts; gas is estimated explicitly in Chain.build.
    for name in ("ens_name_to_address", "validation", "gas_estimate", "gas_price_strategy"):
        with contextlib.suppress(ValueError):
            w3.middleware_onion.remove(name)
    chain = Chain(w3, url=url, tester=tester, **options)
    for name in ("W2EToken", "RewardDistributor"):
        with contextlib.suppress(ArtifactMissing):
            chain.register_errors(load_artifact(name).abi)
    return chain


def _estimate_once(state: Any, transaction: Any) -> int:
    """Gas for the embedded chain from one run at the block gas limit (py-evm's default
    bisects with a dozen runs): intrinsic gas plus execution gas before refunds. Chain.build's
    margin covers the 63/64 rule of nested calls."""
    from eth.vm.spoof import SpoofTransaction

    snapshot = state.snapshot()
    try:
        computation = state.apply_transaction(
            SpoofTransaction(transaction, gas=state.gas_limit, gas_price=0)
        )
        if computation.is_error:
            raise computation.error
        return transaction.intrinsic_gas + computation.get_gas_used()
    finally:
        state.revert(snapshot)


# Reads only, and sends of signed bytes (idempotent by hash): safe to retry.
_RETRY_METHODS = (
    "eth_chainId",
    "eth_blockNumber",
    "eth_getBlockByNumber",
    "eth_getTransactionCount",
    "eth_getTransactionReceipt",
    "eth_getTransactionByHash",
    "eth_call",
    "eth_estimateGas",
    "eth_getLogs",
    "eth_maxPriorityFeePerGas",
    "eth_getBalance",
    "eth_getCode",
    "eth_sendRawTransaction",
)


# ---------------------------------------------------------------------------------- contracts


@functools.cache
def _functions(artifact_name: str) -> dict[str, tuple[bytes, list[str], list[str]]]:
    """name -> (selector, input types, output types) of an artifact's functions."""
    out = {}
    for item in load_artifact(artifact_name).abi:
        if item.get("type") == "function":
            inputs = [collapse_if_tuple(i) for i in item["inputs"]]
            outputs = [collapse_if_tuple(o) for o in item.get("outputs", [])]
            selector = keccak(text=f"{item['name']}({','.join(inputs)})")[:4]
            out[item["name"]] = (selector, inputs, outputs)
    return out


class _Contract:
    artifact_name = ""

    def __init__(self, chain: Chain, address: str) -> None:
        self.chain = chain
        self.address = to_checksum_address(address)
        self.address_lower = self.address.lower()
        self.artifact = load_artifact(self.artifact_name)
        self.contract = chain.w3.eth.contract(address=self.address, abi=self.artifact.abi)
        self._abi = _functions(self.artifact_name)

    def _encode(self, name: str, args: Sequence[Any]) -> str:
        # eth_abi directly: web3's encode_abi re-validates against the whole ABI on every
        # call, which costs more than the RPC round trip of a local node.
        selector, types, _ = self._abi[name]
        return "0x" + (selector + self.chain.w3.codec.encode(types, list(args))).hex()

    def _view(self, name: str, *args: Any) -> Any:
        _, _, outputs = self._abi[name]
        tx: Any = {"to": self.address, "data": self._encode(name, args)}
        with rpc_errors(self.chain.url), self.chain.revert_errors(f"{self.artifact_name}.{name}"):
            raw = self.chain.w3.eth.call(tx)
        values = self.chain.w3.codec.decode(outputs, bytes(raw))
        return values[0] if len(values) == 1 else tuple(values)

    def _call(self, name: str, *args: Any) -> Call:
        return Call(self.address, self._encode(name, args), f"{self.artifact_name}.{name}")

    def has_role(self, role: bytes, account: str) -> bool:
        return self._view("hasRole", role, to_checksum_address(account))

    def grant_role(self, role: bytes, account: str) -> Call:
        return self._call("grantRole", role, to_checksum_address(account))

    def renounce_role(self, role: bytes, account: str) -> Call:
        return self._call("renounceRole", role, to_checksum_address(account))


class Token(_Contract):
    """W2EToken (PROTOCOL section 7)."""

    artifact_name = "W2EToken"

    def balance_of(self, account: str) -> int:
        return self._view("balanceOf", to_checksum_address(account))

    def total_supply(self) -> int:
        return self._view("totalSupply")

    def allowance(self, owner: str, spender: str) -> int:
        return self._view("allowance", to_checksum_address(owner), to_checksum_address(spender))

    def mint(self, to: str, amount: int) -> Call:
        return self._call("mint", to_checksum_address(to), _uint(amount))

    def approve(self, spender: str, amount: int) -> Call:
        return self._call("approve", to_checksum_address(spender), _uint(amount))

    def transfer(self, to: str, amount: int) -> Call:
        return self._call("transfer", to_checksum_address(to), _uint(amount))


@dataclasses.dataclass(frozen=True)
class PendingRoot:
    epoch: int
    root: str
    cumulative_total: int
    data_hash: str
    valid_at: int


class Distributor(_Contract):
    """RewardDistributor (PROTOCOL section 7): typed views and calls to build."""

    artifact_name = "RewardDistributor"

    def __init__(self, chain: Chain, address: str) -> None:
        super().__init__(chain, address)
        self._token: Token | None = None

    @property
    def token(self) -> Token:
        if self._token is None:
            self._token = Token(self.chain, self._view("token"))
        return self._token

    # -- views --------------------------------------------------------------------------------

    def challenge_period(self) -> int:
        return self._view("challengePeriod")

    def root(self) -> str:
        return "0x" + bytes(self._view("root")).hex()

    def previous_root(self) -> str:
        return "0x" + bytes(self._view("previousRoot")).hex()

    def current_epoch(self) -> int:
        return self._view("currentEpoch")

    def cumulative_total(self) -> int:
        return self._view("cumulativeTotal")

    def total_funded(self) -> int:
        return self._view("totalFunded")

    def claimed(self, account: str) -> int:
        return self._view("claimed", to_checksum_address(account))

    def paused(self) -> bool:
        return self._view("paused")

    def paused_at_block(self) -> int:
        """Block of the latest pause (0 before the first; kept after an unpause). A correction's
        claimed amounts must be read at a block from here on, while still paused."""
        return self._view("pausedAtBlock")

    def pending_root(self) -> PendingRoot | None:
        """The staged root, or None (the contract reports zeros when nothing is pending)."""
        epoch, root, total, data_hash, valid_at = self._view("pendingRoot")
        if bytes(root) == ZERO_BYTES32:
            return None
        return PendingRoot(
            epoch, "0x" + bytes(root).hex(), total, "0x" + bytes(data_hash).hex(), valid_at
        )

    def has_code(self) -> bool:
        with rpc_errors(self.chain.url):
            return len(self.chain.w3.eth.get_code(self.address)) > 0

    # -- calls --------------------------------------------------------------------------------

    def check_proposal(
        self,
        cumulative_total: int,
        *,
        correction: bool = False,
        claimed_at_block: int | None = None,
    ) -> None:
        """Refuse before sending what the contract would refuse: an ordinary proposal while
        paused (proposeRoot reverts EnforcedPause) or a correction while not paused
        (proposeCorrection reverts ExpectedPause), a pending root, a total above what is funded
        (with the shortfall), and, for a correction given `claimed_at_block`, a reading outside
        the current pause (StaleClaims)."""
        paused = self.paused()
        if paused and not correction:
            raise DistributorPaused(
                "the distributor is paused: proposeRoot reverts until the guardian unpauses. "
                "A correction is a separate call (propose_correction) made on purpose"
            )
        if correction and not paused:
            raise ContractRevert(
                "a correction needs the distributor paused by the guardian first "
                "(proposeCorrection reverts ExpectedPause)",
                "ExpectedPause",
            )
        if correction and claimed_at_block is not None:
            paused_at, head = self.paused_at_block(), self.chain.block_number()
            # Contract: pausedAtBlock <= claimedAtBlock < block.number. Nodes estimate and
            # simulate at the head block (block.number == head), so a reading at the head itself
            # reverts there: it must be from an earlier block of the pause.
            if not paused_at <= claimed_at_block < head:
                raise StaleClaims(
                    f"claimed amounts read at block {claimed_at_block}, not in the current pause "
                    f"before the head (paused at block {paused_at}, head {head}): read them at a "
                    f"block from {paused_at} to {head - 1} (after the pause's block, wait for one "
                    "more) and rebuild the correction"
                )
        pending = self.pending_root()
        if pending is not None:
            raise ContractRevert(
                f"root {pending.root} of epoch {pending.epoch} is pending (valid at "
                f"{pending.valid_at}); accept or revoke it before proposing another",
                "RootPending",
            )
        funded = self.total_funded()
        if cumulative_total > funded:
            shortfall = cumulative_total - funded
            raise InsolventProposal(
                f"the distributor is short of {shortfall} base units: cumulative total "
                f"{cumulative_total} > totalFunded {funded}. Mint or buy W2E, approve the "
                f"distributor {self.address} and call fund({shortfall}), then propose again",
                shortfall,
            )

    def propose_root(
        self,
        epoch: int,
        root: str | bytes,
        cumulative_total: int,
        data_hash: str | bytes,
        data_uri: str,
    ) -> Call:
        return self._call(
            "proposeRoot",
            epoch,
            _bytes32(root),
            _uint(cumulative_total),
            _bytes32(data_hash),
            data_uri,
        )

    def propose_correction(
        self,
        epoch: int,
        root: str | bytes,
        cumulative_total: int,
        data_hash: str | bytes,
        data_uri: str,
        claimed_at_block: int,
    ) -> Call:
        """proposeCorrection: only while paused; `claimed_at_block` is the block of this pause at
        which the claimed amounts in the leaves were read, mined before the head (see
        check_proposal)."""
        return self._call(
            "proposeCorrection",
            epoch,
            _bytes32(root),
            _uint(cumulative_total),
            _bytes32(data_hash),
            data_uri,
            _block(claimed_at_block),
        )

    def accept_root(self) -> Call:
        return self._call("acceptRoot")

    def revoke_root(self) -> Call:
        return self._call("revokeRoot")

    def pause(self) -> Call:
        return self._call("pause")

    def unpause(self) -> Call:
        return self._call("unpause")

    def fund(self, amount: int) -> Call:
        return self._call("fund", _uint(amount))

    def claim(self, account: str, cumulative_amount: int, proof: Sequence[str | bytes]) -> Call:
        return self._call(
            "claim",
            to_checksum_address(account),
            _uint(cumulative_amount),
            [_bytes32(p) for p in proof],
        )

    def claim_many(self, entries: Sequence[ClaimInfo]) -> Call:
        return self._call(
            "claimMany",
            [to_checksum_address(e.account) for e in entries],
            [_uint(e.cumulative_amount) for e in entries],
            [[_bytes32(p) for p in e.proof] for e in entries],
        )


def _uint(value: int) -> int:
    if type(value) is not int or value < 0:
        raise InputError(f"amount must be a non-negative int of base units, got {value!r}")
    return value


def _block(value: int) -> int:
    if type(value) is not int or value < 0:
        raise InputError(f"a block number must be a non-negative int, got {value!r}")
    return value


def _bytes32(value: str | bytes) -> bytes:
    raw = bytes(HexBytes(value)) if isinstance(value, str) else bytes(value)
    if len(raw) != 32:
        raise InputError(f"expected 32 bytes, got {len(raw)}: {value!r}")
    return raw


def submit_proposal(
    key: Key,
    distributor: Distributor,
    epoch: int,
    root: str | bytes,
    cumulative_total: int,
    data_hash: str | bytes,
    data_uri: str,
    *,
    correction: bool = False,
    claimed_at_block: int | None = None,
) -> Mined:
    """Check (paused, pending, solvency, for a correction its reading's block) then propose
    (proposeRoot, or proposeCorrection when `correction`) and wait: the one-shot path. The
    submitter uses check_proposal + Chain.build/send/wait to persist between steps."""
    if not correction:
        distributor.check_proposal(cumulative_total)
        call = distributor.propose_root(epoch, root, cumulative_total, data_hash, data_uri)
        return distributor.chain.transact(key, call)
    if claimed_at_block is None:
        raise InputError(
            "a correction names the block its claimed amounts were read at: pass "
            "claimed_at_block (a mined block of the current pause)"
        )
    distributor.check_proposal(cumulative_total, correction=True, claimed_at_block=claimed_at_block)
    call = distributor.propose_correction(
        epoch, root, cumulative_total, data_hash, data_uri, claimed_at_block
    )
    return distributor.chain.transact(key, call)


# ---------------------------------------------------------------------------------- deployment


@dataclasses.dataclass(frozen=True)
class Deployment:
    """Where the contracts live, as `settlement deploy` records it for the service."""

    chain_id: int
    block: int
    token: str
    distributor: str
    challenge_period: int
    admin: str
    poster: str
    guardian: str
    minters: tuple[str, ...]
    dev: bool

    def to_json(self) -> str:
        doc = {
            "chainId": self.chain_id,
            "block": self.block,
            "token": self.token,
            "distributor": self.distributor,
            "challengePeriod": self.challenge_period,
            "roles": {
                "admin": self.admin,
                "poster": self.poster,
                "guardian": self.guardian,
                "minters": list(self.minters),
            },
            "dev": self.dev,
        }
        return json.dumps(doc, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Deployment:
        doc = json.loads(text)
        roles = doc["roles"]
        return cls(
            chain_id=int(doc["chainId"]),
            block=int(doc["block"]),
            token=to_checksum_address(doc["token"]),
            distributor=to_checksum_address(doc["distributor"]),
            challenge_period=int(doc["challengePeriod"]),
            admin=roles["admin"],
            poster=roles["poster"],
            guardian=roles["guardian"],
            minters=tuple(roles["minters"]),
            dev=bool(doc["dev"]),
        )


def save_deployment(deployment: Deployment, path: str | Path) -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(target.suffix + ".tmp")
    tmp.write_text(deployment.to_json())
    os.replace(tmp, target)  # readers never see half a file


def load_deployment(path: str | Path, chain: Chain | None = None) -> Deployment:
    """The recorded deployment; with `chain`, also checks it is that chain's and has code."""
    try:
        deployment = Deployment.from_json(Path(path).read_text())
    except FileNotFoundError:
        raise DeploymentMissing(
            f"no deployment record at {path}: run `settlement deploy` or set W2E_DEPLOYMENT_FILE"
        ) from None
    except (ValueError, KeyError) as error:
        raise DeploymentMissing(
            f"deployment record {path} is damaged ({error}); deploy again"
        ) from None
    if chain is not None:
        if deployment.chain_id != chain.chain_id:
            raise DeploymentMissing(
                f"deployment record {path} is for chain {deployment.chain_id}, the RPC is chain "
                f"{chain.chain_id}: point W2E_RPC_URL at the right chain or deploy again"
            )
        if not Distributor(chain, deployment.distributor).has_code():
            raise DeploymentMissing(
                f"no contract at {deployment.distributor} on chain {chain.chain_id} (a fresh dev "
                "chain?): run `settlement deploy` again"
            )
    return deployment


def deploy(
    chain: Chain,
    admin: Key,
    *,
    poster: str | None = None,
    guardian: str | None = None,
    challenge_period: int,
    dev: bool = False,
    mint: int = 0,
    fund: int = 0,
    minters: Sequence[str] = (),
) -> Deployment:
    """Deploy W2EToken and RewardDistributor from the exported artifacts.

    Outside `dev` the poster and guardian must be addresses other than the admin's, the
    admin renounces both roles after granting them, and a challenge period of 0 is refused.
    `mint` base units go to the admin and `fund` of them into the distributor (approve, then
    fund()); each of `minters` gets MINTER_ROLE on the token.
    """
    if challenge_period < 0 or challenge_period >= 2**64:
        raise ConfigError(f"challenge period {challenge_period} is outside uint64")
    if challenge_period == 0 and not dev:
        raise ConfigError(
            "a challenge period of 0 accepts every root at once, leaving no time to revoke a bad "
            "one: refused outside dev mode (set W2E_CHALLENGE_PERIOD, or W2E_DEV_MODE=true for a dev chain)"
        )
    poster = to_checksum_address(poster) if poster else None
    guardian = to_checksum_address(guardian) if guardian else None
    if not dev:
        missing = [n for n, a in (("poster", poster), ("guardian", guardian)) if a is None]
        if missing:
            raise ConfigError(
                f"no {' and '.join(missing)} key: outside dev mode poster and guardian need keys "
                "of their own (W2E_POSTER_KEY_ENV / W2E_GUARDIAN_KEY_ENV or keystores)"
            )
        if admin.address in (poster, guardian) or poster == guardian:
            raise ConfigError(
                "admin, poster and guardian must be three different keys outside dev mode: a "
                "guardian that is also the poster cannot check it"
            )
    if fund > mint:
        raise ConfigError(
            f"cannot fund {fund} with {mint} minted: mint at least as much as you fund"
        )
    poster = poster or admin.address
    guardian = guardian or admin.address

    token_art = load_artifact("W2EToken")
    dist_art = load_artifact("RewardDistributor")
    token_tx = chain.transact(admin, _creation(chain, token_art, admin.address))
    token_address = to_checksum_address(token_tx.receipt["contractAddress"])
    dist_tx = chain.transact(
        admin, _creation(chain, dist_art, token_address, challenge_period, admin.address)
    )
    distributor = Distributor(chain, dist_tx.receipt["contractAddress"])
    token = Token(chain, token_address)

    # Grant before renouncing: the admin never leaves a role without a holder.
    if poster != admin.address:
        chain.transact(admin, distributor.grant_role(POSTER_ROLE, poster))
        chain.transact(admin, distributor.renounce_role(POSTER_ROLE, admin.address))
    if guardian != admin.address:
        chain.transact(admin, distributor.grant_role(GUARDIAN_ROLE, guardian))
        chain.transact(admin, distributor.renounce_role(GUARDIAN_ROLE, admin.address))
    for minter in minters:
        chain.transact(admin, token.grant_role(MINTER_ROLE, minter))
    if mint:
        chain.transact(admin, token.mint(admin.address, mint))
    if fund:
        fund_distributor(admin, distributor, fund)

    return Deployment(
        chain_id=chain.chain_id,
        block=dist_tx.block_number,
        token=token_address,
        distributor=distributor.address,
        challenge_period=challenge_period,
        admin=admin.address,
        poster=poster,
        guardian=guardian,
        minters=(admin.address, *(to_checksum_address(m) for m in minters)),
        dev=dev,
    )


def _creation(chain: Chain, artifact: Artifact, *args: Any) -> Call:
    """Creation code: the bytecode followed by the ABI-encoded constructor arguments."""
    ctor = next((i for i in artifact.abi if i.get("type") == "constructor"), {"inputs": []})
    encoded = chain.w3.codec.encode([i["type"] for i in ctor["inputs"]], list(args))
    return Call(None, artifact.bytecode + encoded.hex(), f"deploy {artifact.name}")


def fund_distributor(
    key: Key, distributor: Distributor, amount: int, *, mint: bool = False
) -> Mined:
    """approve + fund(amount) from `key`'s balance (minting it first with `mint`)."""
    chain, token = distributor.chain, distributor.token
    if mint:
        chain.transact(key, token.mint(key.address, amount))
    chain.transact(key, token.approve(distributor.address, amount))
    return chain.transact(key, distributor.fund(amount))


# ---------------------------------------------------------------------------------- events


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


def _decode_log(contract: _Contract, log: Mapping[str, Any]) -> tuple[str, dict[str, Any]] | None:
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
            decoded = _decode_log(distributor, log)
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
    wanted = "0x" + _bytes32(root).hex()
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


# ---------------------------------------------------------------------------------- claims


@dataclasses.dataclass(frozen=True)
class ClaimInfo:
    """Everything a wallet needs to claim for `account`: the body of
    `GET /v1/accounts/{address}/claim` (see `to_json`)."""

    account: str
    cumulative_amount: int
    claimed: int
    proof: tuple[str, ...]
    root: str
    distributor: str
    chain_id: int
    calldata: str

    @property
    def claimable(self) -> int:
        return max(self.cumulative_amount - self.claimed, 0)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready, integers as decimal strings (PROTOCOL's rule for amounts)."""
        return {
            "account": self.account,
            "cumulativeAmount": str(self.cumulative_amount),
            "claimed": str(self.claimed),
            "claimable": str(self.claimable),
            "proof": list(self.proof),
            "root": self.root,
            "contract": self.distributor,
            "chainId": self.chain_id,
            "calldata": self.calldata,
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> ClaimInfo:
        try:
            return cls(
                account=str(doc["account"]).lower(),
                cumulative_amount=int(doc["cumulativeAmount"]),
                claimed=int(doc["claimed"]),
                proof=tuple(doc["proof"]),
                root=doc["root"],
                distributor=to_checksum_address(doc["contract"]),
                chain_id=int(doc["chainId"]),
                calldata=doc["calldata"],
            )
        except (KeyError, TypeError, ValueError) as error:
            raise InputError(f"claim document lacks or garbles {error}") from None


def claim_info(distributor: Distributor, tree: Any, account: str) -> ClaimInfo:
    """Ready calldata, claimable amount and contract address for `account` from `tree` (a
    settlement.domain.merkle.MerkleTree): what `GET /v1/accounts/{address}/claim` returns.

    Raises InputError when the account has no leaf, ChainError when the tree's root is
    neither root() nor previousRoot() (not accepted yet, or superseded twice).
    """
    return claim_infos(distributor, tree, [account])[0]


def claim_infos(distributor: Distributor, tree: Any, accounts: Iterable[str]) -> list[ClaimInfo]:
    """`claim_info` for many accounts, reading the roots once."""
    root = tree.root
    accepted = distributor.root()
    if root != accepted and root != distributor.previous_root():
        raise ChainError(
            f"tree root {root} is not the distributor's accepted root {accepted} nor its "
            "previous one: use the latest published dump, or wait until this root is accepted"
        )
    values = tree.values  # a fresh list per access: take it once
    out = []
    for account in accounts:
        index = tree.index_of(account)
        address, amount = values[index]
        proof = tuple(tree.proof(index))
        out.append(
            ClaimInfo(
                account=address,
                cumulative_amount=amount,
                claimed=distributor.claimed(address),
                proof=proof,
                root=root,
                distributor=distributor.address,
                chain_id=distributor.chain.chain_id,
                calldata=distributor.claim(address, amount, proof).data,
            )
        )
    return out


def claim_info_from_service(base_url: str, account: str, *, timeout: float = 10) -> ClaimInfo:
    """GET {base_url}/v1/accounts/{account}/claim from a settlement service."""
    import httpx

    url = f"{base_url.rstrip('/')}/v1/accounts/{account.lower()}/claim"
    try:
        response = httpx.get(url, timeout=timeout)
    except httpx.HTTPError as error:
        raise RpcUnavailable(
            f"settlement service {base_url} does not answer ({error}); check the URL"
        ) from None
    if response.status_code == 404:
        raise InputError(f"the service knows no reward for {account}")
    if response.status_code != 200:
        raise ChainError(f"GET {url} answered {response.status_code}: {response.text[:200]}")
    return ClaimInfo.from_json(response.json())


def refresh_claim(distributor: Distributor, info: ClaimInfo) -> ClaimInfo:
    """`info` (e.g. from a service) re-checked against this distributor: its root must be
    claimable now, and `claimed` is read again from the contract."""
    if info.distributor != distributor.address:
        raise ChainError(
            f"claim for {info.account} names contract {info.distributor}, not {distributor.address}"
        )
    if info.root not in (distributor.root(), distributor.previous_root()):
        raise ChainError(
            f"proof of {info.account} is against {info.root}, which the distributor does not "
            "accept (not yet accepted, or superseded twice): fetch a fresh proof"
        )
    calldata = distributor.claim(info.account, info.cumulative_amount, info.proof).data
    return dataclasses.replace(info, claimed=distributor.claimed(info.account), calldata=calldata)


def load_tree(path: str | Path) -> Any:
    """A published standard-v1 tree dump."""
    from settlement.domain.merkle import MerkleTree

    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise InputError(f"cannot read tree dump {path}: {error.strerror or error}") from None
    return MerkleTree.load(data)


@dataclasses.dataclass(frozen=True)
class ClaimResult:
    tx_hash: str
    block_number: int
    gas_used: int
    paid: dict[str, int]  # account (lowercase) -> base units paid by this transaction

    @classmethod
    def of(cls, distributor: Distributor, mined: Mined) -> ClaimResult:
        return cls(mined.tx_hash, mined.block_number, mined.gas_used, paid_in(distributor, mined))

    @property
    def total(self) -> int:
        return sum(self.paid.values())


def paid_in(distributor: Distributor, mined: Mined) -> dict[str, int]:
    """Base units paid per account by a mined claim/claimMany, from its Claimed logs,
    checked against the token's Transfer logs from the distributor."""
    me = distributor.address.lower()
    paid: dict[str, int] = {}
    transferred: dict[str, int] = {}
    for log in mined.receipt["logs"]:
        claimed = _decode_log(distributor, log)
        if claimed is not None and claimed[0] == "Claimed":
            account = claimed[1]["account"]
            paid[account] = paid.get(account, 0) + claimed[1]["amount"]
            continue
        transfer = _decode_log(distributor.token, log)
        if transfer is not None and transfer[0] == "Transfer" and transfer[1]["from"] == me:
            account = transfer[1]["to"]
            transferred[account] = transferred.get(account, 0) + transfer[1]["value"]
    if paid != transferred:
        raise ChainError(
            f"claim {mined.tx_hash}: Claimed logs {paid} disagree with token transfers "
            f"{transferred}; check the token address of the distributor"
        )
    return paid


def send_claim(key: Key, distributor: Distributor, info: ClaimInfo) -> ClaimResult:
    """claim() for one account from `key` (any key pays the gas; tokens go to the account)."""
    if info.claimable == 0:
        raise NothingToClaim(
            f"{info.account}: cumulative {info.cumulative_amount} is already claimed; wait for the next root"
        )
    mined = distributor.chain.transact(
        key, distributor.claim(info.account, info.cumulative_amount, info.proof)
    )
    return ClaimResult.of(distributor, mined)


def relay_claims(
    key: Key, distributor: Distributor, infos: Sequence[ClaimInfo], *, batch_size: int = 100
) -> list[ClaimResult]:
    """claimMany in batches of `batch_size` for the accounts with something claimable.

    Every batch is built (a revert, e.g. a pause, surfaces before anything is sent) and sent
    before any is waited for, on consecutive nonces: throughput is bound by the node, not by
    round trips.
    """
    todo = [i for i in infos if i.claimable > 0]
    chain = distributor.chain
    sent = []
    for o in range(0, len(todo), batch_size):
        prepared = chain.build(key, distributor.claim_many(todo[o : o + batch_size]))
        chain.send(prepared)
        sent.append(prepared)
    return [ClaimResult.of(distributor, chain.wait(p, key=key)) for p in sent]


# ---------------------------------------------------------------------------------- local anvil


def find_anvil(root: str | Path | None = None) -> str | None:
    """anvil's native binary from the npm package (so a kill reaches anvil itself, not the
    Node launcher), else node_modules/.bin/anvil, else anvil on PATH."""
    base = Path(root) if root else Path(__file__).resolve().parents[3]
    modules = base / "node_modules" / "@foundry-rs"
    for native in sorted(modules.glob("anvil-*/bin/anvil")):
        if os.access(native, os.X_OK):
            return str(native)
    launcher = base / "node_modules" / ".bin" / "anvil"
    if launcher.exists():
        return str(launcher)
    return shutil.which("anvil")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Anvil:
    """An anvil process on 127.0.0.1 for tests, benches and demos; stop() always reaps it."""

    def __init__(
        self,
        binary: str | None = None,
        *,
        port: int | None = None,
        args: Sequence[str] = (),
        startup_timeout: float = 20,
    ) -> None:
        self.binary = binary or find_anvil()
        if self.binary is None:
            raise ConfigError("anvil not found: run scripts/setup (npm ci installs it)")
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = list(args)
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen[bytes] | None = None
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in __exit__

    def start(self) -> Anvil:
        cmd = [self.binary, "--host", "127.0.0.1", "--port", str(self.port), "--silent", *self.args]
        # Own process group: if the Node launcher is used, killing the group reaches anvil too.
        self.process = subprocess.Popen(
            cmd, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ChainError(
                    f"anvil exited with {self.process.returncode}: {self.output()[-500:]}"
                )
            try:
                r = requests.post(
                    self.url,
                    json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []},
                    timeout=1,
                )
                if r.ok:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.02)
        self.stop(kill=True)
        raise ChainError(f"anvil did not answer on {self.url} within {self.startup_timeout} s")

    def output(self) -> str:
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def stop(self, *, kill: bool = False) -> None:
        """SIGTERM (anvil dumps --state on the way out) or, with `kill`, SIGKILL (no dump)."""
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            sig = signal.SIGKILL if kill else signal.SIGTERM
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, sig)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        self.process = None

    def __enter__(self) -> Anvil:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop(kill=True)
        self._log.close()


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    delay = _FIRST_POLL
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.1)

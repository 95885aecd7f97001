"""Transactions: fees, nonces, build+sign (`PreparedTx`, a plain value the caller may persist)
then send and wait (`Mined`), with same-nonce fee bumps. Amounts are ints of wei."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from eth_abi.exceptions import DecodingError
from eth_tester.exceptions import TransactionFailed as TesterRevert
from eth_utils import keccak, to_checksum_address
from eth_utils.exceptions import ValidationError as EthValidationError
from hexbytes import HexBytes
from web3 import Web3
from web3.exceptions import (
    ContractCustomError,
    ContractLogicError,
    ContractPanicError,
    TransactionNotFound,
    Web3RPCError,
)

from settlement.adapters.chain.revert import (
    ALREADY_KNOWN,
    NONCE_USED,
    REVERT_HINTS,
    revert_data,
    rpc_errors,
    show_value,
)
from settlement.adapters.chain.txvalues import Call, Fees, Mined, PreparedTx
from settlement.adapters.keys import Key
from settlement.errors import (
    ChainError,
    ConfigError,
    ContractRevert,
    DistributorPaused,
    RpcUnavailable,
    StaleClaims,
    TransactionFailed,
    redact_url,
)

__all__ = ["FIRST_POLL", "Call", "Chain", "Fees", "Mined", "NonceManager", "PreparedTx"]

FIRST_POLL = 0.002  # seconds; a local node answers within a few ms, so start there and back off
_GAS_MARGIN_PERCENT = 20  # estimates are exact for the estimated state; claims race other claims


# ---------------------------------------------------------------------------------- nonces


class NonceManager:
    """Next nonce per sender, starting from the node's pending count; thread-safe. Not
    shared between processes: the submitter persists each PreparedTx's nonce and calls
    `resync` on start. A built transaction that is never sent leaves a gap: `resync`."""

    def __init__(self, w3: Web3, url: str | None = None) -> None:
        self._w3 = w3
        self._url = url  # an unreachable node is RpcUnavailable, as for every other call
        self._next: dict[str, int] = {}
        self._lock = threading.Lock()

    def next(self, address: str) -> int:
        address = to_checksum_address(address)
        with self._lock:
            if address not in self._next:
                with rpc_errors(self._url):
                    self._next[address] = self._w3.eth.get_transaction_count(address, "pending")
            nonce = self._next[address]
            self._next[address] = nonce + 1
            return nonce

    def resync(self, address: str) -> int:
        """Forget the local count (after a failed send or a restart); returns the node's."""
        address = to_checksum_address(address)
        with self._lock:
            self._next.pop(address, None)
        with rpc_errors(self._url):
            return self._w3.eth.get_transaction_count(address, "pending")

    def mined_count(self, address: str) -> int:
        """Transactions of `address` in mined blocks: nonces below it can no longer be sent."""
        with rpc_errors(self._url):
            return self._w3.eth.get_transaction_count(to_checksum_address(address), "latest")


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
        self.nonces = NonceManager(w3, url)
        self._errors: dict[bytes, tuple[str, list[str]]] = {}
        with rpc_errors(url):
            self.chain_id: int = w3.eth.chain_id

    @property
    def embedded(self) -> bool:
        return self.tester is not None

    def __repr__(self) -> str:
        return (
            f"Chain({redact_url(self.url) if self.url else 'embedded'}, chain id {self.chain_id})"
        )

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
                if any(s in text for s in ALREADY_KNOWN) or self.lookup(prepared.tx_hash):
                    return prepared.tx_hash
                self.nonces.resync(prepared.sender)
                if any(s in text for s in NONCE_USED):
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
        delay = FIRST_POLL
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
        delay = FIRST_POLL
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
        decoded = self.decode_error(revert_data(error))
        if decoded is not None:
            name, args = decoded
            return f"{name}({', '.join(show_value(a) for a in args)})"
        return str(error)

    @contextlib.contextmanager
    def revert_errors(self, label: str) -> Iterator[None]:
        """Turn a contract revert into ContractRevert (or a subclass) naming the custom error."""
        try:
            yield
        except (ContractCustomError, ContractLogicError, ContractPanicError, TesterRevert) as error:
            decoded = self.decode_error(revert_data(error))
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
            hint = REVERT_HINTS.get(name or "", "")
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

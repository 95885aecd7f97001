"""Typed wrappers of the exported artifacts: W2EToken and RewardDistributor views, and the calls
to build (PROTOCOL section 7)."""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eth_utils import keccak, to_checksum_address
from eth_utils.abi import collapse_if_tuple
from hexbytes import HexBytes

from settlement.adapters.chain.revert import rpc_errors
from settlement.adapters.chain.tx import Call, Chain, Mined
from settlement.adapters.keys import Key
from settlement.errors import (
    ArtifactMissing,
    ContractRevert,
    DistributorPaused,
    InputError,
    InsolventProposal,
    StaleClaims,
)

if TYPE_CHECKING:
    from settlement.adapters.chain.claims import ClaimInfo

ABI_DIR = Path(__file__).resolve().parents[1] / "abi"

DEFAULT_ADMIN_ROLE = b"\x00" * 32
POSTER_ROLE = keccak(text="POSTER_ROLE")
GUARDIAN_ROLE = keccak(text="GUARDIAN_ROLE")
MINTER_ROLE = keccak(text="MINTER_ROLE")
ZERO_BYTES32 = b"\x00" * 32


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

    def _view(self, name: str, *args: Any, block: int | None = None) -> Any:
        _, _, outputs = self._abi[name]
        tx: Any = {"to": self.address, "data": self._encode(name, args)}
        with rpc_errors(self.chain.url), self.chain.revert_errors(f"{self.artifact_name}.{name}"):
            raw = self.chain.w3.eth.call(tx, "latest" if block is None else block)
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

    def root(self, block: int | None = None) -> str:
        """The accepted root (at `block`, default the head)."""
        return "0x" + bytes(self._view("root", block=block)).hex()

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
            bytes32(root),
            _uint(cumulative_total),
            bytes32(data_hash),
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
            bytes32(root),
            _uint(cumulative_total),
            bytes32(data_hash),
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
            [bytes32(p) for p in proof],
        )

    def claim_many(self, entries: Sequence[ClaimInfo]) -> Call:
        return self._call(
            "claimMany",
            [to_checksum_address(e.account) for e in entries],
            [_uint(e.cumulative_amount) for e in entries],
            [[bytes32(p) for p in e.proof] for e in entries],
        )


def _uint(value: int) -> int:
    if type(value) is not int or value < 0:
        raise InputError(f"amount must be a non-negative int of base units, got {value!r}")
    return value


def _block(value: int) -> int:
    if type(value) is not int or value < 0:
        raise InputError(f"a block number must be a non-negative int, got {value!r}")
    return value


def bytes32(value: str | bytes) -> bytes:
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

"""Claims: what a wallet needs to claim (ClaimInfo), checking it against the chain, and sending
claim / claimMany with what each paid."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from settlement.adapters.chain.contracts import Distributor
from settlement.adapters.chain.events import decode_log
from settlement.adapters.chain.tx import Mined
from settlement.adapters.keys import Key
from settlement.client.claims import ClaimInfo
from settlement.errors import (
    ChainError,
    InputError,
    NothingToClaim,
)


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
    """A published standard-v1 tree dump: its file, or the epoch directory whose
    manifest.json names it (`data/epochs/epoch-00000007`)."""
    from settlement.domain.merkle import MerkleTree

    if Path(path).is_dir():
        path = _tree_of_epoch(Path(path))
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
        claimed = decode_log(distributor, log)
        if claimed is not None and claimed[0] == "Claimed":
            account = claimed[1]["account"]
            paid[account] = paid.get(account, 0) + claimed[1]["amount"]
            continue
        transfer = decode_log(distributor.token, log)
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


def _tree_of_epoch(directory: Path) -> Path:
    """The tree dump file an epoch directory's manifest names (files[] entry `tree`)."""
    import orjson

    manifest = directory / "manifest.json"
    try:
        doc = orjson.loads(manifest.read_bytes())
        entry = next(f for f in doc["files"] if f["name"] == "tree")
        return directory / f"{entry['sha256']}.json"
    except OSError as error:
        raise InputError(
            f"cannot read {manifest}: {error.strerror or error} (give a tree dump file or a "
            "published epoch directory)"
        ) from None
    except (orjson.JSONDecodeError, KeyError, TypeError, StopIteration):
        raise InputError(f"{manifest} names no tree dump: not an epoch manifest") from None

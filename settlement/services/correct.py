"""Corrections (PROTOCOL 6-7): replace a bad accepted root while the guardian holds the
distributor paused, with each leaf at max(balance after the last close, claimed on-chain at
a block of the pause), so the correction stays solvent and nobody's claimed tokens are taken
back. Once accepted, its leaves are the floor of every later close.

`run_correction` is re-runnable: each call moves the procedure one stage on (publish and
propose, then accept once due) and says what the operator or the guardian does next.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

import orjson

from settlement import faults
from settlement.adapters import files as publish
from settlement.adapters.chain import Distributor, find_proposal, scan_claims
from settlement.adapters.db import submitter as sdb
from settlement.adapters.db.epochs import CloseReader, EpochStore, StoredCorrection
from settlement.adapters.db.store import Store
from settlement.config import Settings
from settlement.domain import dataset, merkle
from settlement.domain.floor import correction_leaves
from settlement.errors import ChainError, InputError, NotFound
from settlement.services import published
from settlement.services.submit import Candidate, Submitter

CLAIMED_FILE = "onchain_claimed"  # account, claimed on-chain when the correction was computed
RECOMPUTED_FILE = "recomputed_balances"  # account, cumulative from the store's closes


@dataclasses.dataclass(frozen=True)
class CorrectionPlan:
    epoch: int  # the last closed epoch: its balances are recomputed
    corrects: str  # dataHash of the root replaced
    claimed_at_block: int  # a block of the current pause; claims were read there
    recomputed: dict[str, int]
    claimed: dict[str, int]
    leaves: dict[str, int]
    tree: merkle.MerkleTree

    @property
    def raised(self) -> dict[str, int]:
        """Accounts whose leaf is their on-chain claim, above what the store computes."""
        return {a: v for a, v in self.leaves.items() if v > self.recomputed.get(a, 0)}


def corrected_data_hash(distributor: Distributor, deployment_block: int) -> str:
    """dataHash of the distributor's accepted root, from the event that proposed it
    (RootProposed, or CorrectionProposed when the root is itself a correction)."""
    root = distributor.root()
    if root == "0x" + "00" * 32:
        raise ChainError("no root has been accepted: there is nothing to correct")
    found = find_proposal(distributor, root, deployment_block)
    if found is None:
        raise ChainError(
            f"no RootProposed or CorrectionProposed event for the accepted root {root} "
            f"since block {deployment_block}"
        )
    data_hash: str = found.args["dataHash"]  # 0x hex, as events decode bytes32
    return data_hash


def _block_after_pause(distributor: Distributor, wait_s: float, dev_chain: bool) -> int:
    """The chain's head once it is past the pause's block (a dev chain mines one)."""
    chain = distributor.chain
    paused_at = distributor.paused_at_block()
    deadline = time.monotonic() + wait_s
    head = chain.block_number()
    while head <= paused_at:
        if dev_chain:
            chain.mine(1)
        elif time.monotonic() > deadline:
            raise ChainError(
                f"no block since the pause in block {paused_at} after {wait_s:.0f} s: the claimed "
                "amounts are read at a block of the pause before the proposal's. Run again later"
            )
        else:
            time.sleep(chain.poll_interval)
        head = chain.block_number()
    return head


def plan_correction(
    store: Store,
    distributor: Distributor,
    deployment_block: int,
    *,
    wait_s: float = 120,
    dev_chain: bool = False,
) -> CorrectionPlan:
    """Leaves max(balance after the last close, claimed at a block of the current pause)."""
    epochs = EpochStore(store)
    epoch = epochs.last_closed()
    if epoch < 1:
        raise NotFound("no epoch is closed: close one before correcting against it")
    if not distributor.paused():
        raise ChainError("a correction needs the distributor paused by the guardian first")
    # The claimed amounts are read at a block of this pause, when no claim can land; the
    # contract checks pausedAtBlock() <= claimedAtBlock < block.number at the proposal, so
    # amounts read before the pause (or before a later one) can never be used. One block
    # below the head: some nodes simulate (estimate) the proposal in the head block itself.
    claimed_at = _block_after_pause(distributor, wait_s, dev_chain) - 1
    by_class = epochs.run(lambda cur: CloseReader(epochs, cur).balances(epoch + 1))
    recomputed = {"0x" + a.hex(): n + v + c for a, (n, v, c) in by_class.items()}
    scan = scan_claims(distributor, deployment_block, to_block=claimed_at)
    claimed = dict(scan.claimed)
    for account, amount in claimed.items():
        now = distributor.claimed(account)
        if now != amount:
            raise ChainError(
                f"{account} has claimed {now}, not {amount} as at block {claimed_at}: claims "
                "landed during the correction. Is the distributor still paused?"
            )
    leaves = correction_leaves(recomputed, claimed)
    tree = merkle.tree_for_balances(leaves)
    if tree is None:
        raise InputError("the corrected tree would be empty: nothing to propose")
    return CorrectionPlan(
        epoch=epoch,
        corrects=corrected_data_hash(distributor, deployment_block),
        claimed_at_block=claimed_at,
        recomputed=recomputed,
        claimed=claimed,
        leaves=leaves,
        tree=tree,
    )


def correction_dir(settings: Settings, epoch: int, claimed_at_block: int, corrects: str) -> Path:
    return (
        Path(settings.data_dir)
        / "corrections"
        / f"correction-{epoch:08d}-{claimed_at_block:012d}-{corrects.removeprefix('0x')[:12]}"
    )


def ensure_correction_manifests(store: Store, settings: Settings) -> None:
    """A crash between a correction's commit and its manifest's rename leaves the file
    missing: put every recorded correction's manifest back."""
    for c in EpochStore(store).corrections():
        directory = correction_dir(settings, c.epoch, c.claimed_at_block, c.corrects.hex())
        path = directory / dataset.MANIFEST
        if not path.exists() or path.read_bytes() != c.manifest:
            directory.mkdir(parents=True, exist_ok=True)
            publish.write_atomic(path, c.manifest)


def publish_correction(
    store: Store, settings: Settings, plan: CorrectionPlan
) -> tuple[Path, bytes, str]:
    """Write the tree dump, the recomputed balances and claimed amounts, then the correcting
    manifest, chained to the manifest published just before it; record it and its leaves.
    Under the close lock: manifests are published one at a time (PROTOCOL 6).
    Returns (directory, manifest bytes, tree dump path)."""
    epochs = EpochStore(store)
    directory = correction_dir(settings, plan.epoch, plan.claimed_at_block, plan.corrects)
    writer = publish.DatasetWriter(directory)
    try:
        with (
            epochs.connection() as conn,
            epochs.close_lock(conn),
            epochs.transaction(conn, write=True) as cur,
        ):
            if epochs.last_closed(cur) != plan.epoch:
                raise InputError(
                    f"epoch {plan.epoch + 1} closed while the correction was planned: "
                    "run `settlement correct` again"
                )
            stored = epochs.get(plan.epoch, cur)
            assert stored is not None
            prev = epochs.last_manifest(plan.epoch, cur)
            assert prev is not None
            floor = epochs.floor_hash(cur)  # the floor it replaces
            base = orjson.loads(stored.manifest)
            writer.sink(dataset.TREE, "json").write_raw(plan.tree.dump_json(), len(plan.tree))
            writer.sink(RECOMPUTED_FILE).add_many(
                dataset.canonical_line({"account": a, "amount": v})
                for a, v in sorted(plan.recomputed.items())
                if v > 0
            )
            writer.sink(CLAIMED_FILE).add_many(
                dataset.canonical_line({"account": a, "claimed": v})
                for a, v in sorted(plan.claimed.items())
            )
            files = writer.finish_all()
            data = dataset.manifest_bytes(
                epoch=plan.epoch,
                start=int(base["start"]),
                end=int(base["end"]),
                cutoff=int(base["cutoff"]),
                parameters=base["parameters"],
                pools=base["pools"],
                root=plan.tree.root,
                cumulative_total=plan.tree.cumulative_total,
                floor="0x" + floor.hex(),
                prev_manifest_hash="0x" + dataset.data_hash(prev).hex(),
                files=files,
                correction={
                    "corrects": plan.corrects,
                    "claimedAtBlock": plan.claimed_at_block,
                },
            )
            epochs.record_correction(
                cur,
                StoredCorrection(
                    id=0,
                    data_hash=dataset.data_hash(data),
                    epoch=plan.epoch,
                    corrects=bytes.fromhex(plan.corrects[2:]),
                    claimed_at_block=plan.claimed_at_block,
                    root=bytes.fromhex(plan.tree.root[2:]),
                    cumulative_total=plan.tree.cumulative_total,
                    manifest=data,
                    accepted_block=None,
                ),
                {bytes.fromhex(a[2:]): v for a, v in plan.leaves.items()},
            )
    except BaseException:
        writer.abort()
        raise
    # Last, after the commit, as a close does: the dataset is complete once it is there.
    publish.write_atomic(directory / dataset.MANIFEST, data)
    dump = next(f for f in files if f.name == dataset.TREE)
    return directory, data, str(directory / dump.filename)


@dataclasses.dataclass(frozen=True)
class CorrectionState:
    stage: str  # pending | accepted | unchanged
    row: sdb.Proposal | None
    next_step: str


def run_correction(
    submitter: Submitter,
    *,
    wait: bool = False,
    timeout: float = 3600,
    sleep: Callable[[float], None] = time.sleep,
) -> CorrectionState:
    """One stage on: refuse unless paused; publish and propose the correction; accept it once
    due (with `wait`, sleep until then); tell the guardian to unpause once accepted."""
    d = submitter.distributor
    rows = submitter.rows
    say = submitter.say
    ensure_correction_manifests(submitter.store, submitter.settings)
    row = next((r for r in rows.open() if r.kind == sdb.CORRECTION), None)
    if row is None:
        if not d.paused():
            raise ChainError(
                "the distributor is not paused: the guardian calls pause() first (claims stop), "
                "then run `settlement correct` again"
            )
        pending = d.pending_root()
        if pending is not None:
            raise ChainError(
                f"root {pending.root} of epoch {pending.epoch} is pending: the guardian calls "
                "revokeRoot() first if it is bad (a correction cannot be proposed over it)"
            )
        plan = plan_correction(
            submitter.store,
            d,
            submitter.deployment_block,
            dev_chain=submitter.chain.embedded or submitter.settings.dev_mode,
        )
        if plan.tree.root == d.root():
            step = (
                f"the accepted root {plan.tree.root} already is max(recomputed, claimed) for "
                "every account: nothing to propose. Guardian: call unpause() when satisfied"
            )
            say(step)
            return CorrectionState("unchanged", None, step)
        directory, manifest, dump = publish_correction(submitter.store, submitter.settings, plan)
        faults.point("correct.published")
        data_hash = "0x" + dataset.data_hash(manifest).hex()
        say(
            f"correction of {plan.corrects} against epoch {plan.epoch}: root {plan.tree.root}, "
            f"total {plan.tree.cumulative_total}, {len(plan.raised)} leaf(s) raised to their "
            f"claim at block {plan.claimed_at_block}; published in {directory}"
        )
        uri = published.data_uri(submitter.settings, directory)
        candidate = Candidate(
            epoch=plan.epoch,
            first_epoch=plan.epoch,
            root=plan.tree.root,
            cumulative_total=plan.tree.cumulative_total,
            data_hash=data_hash,
            data_uri=uri,
            dump_path=dump,
            corrects=plan.corrects,
            claimed_at_block=plan.claimed_at_block,
        )
        row = submitter.propose(candidate, correction=True)
        if row is None:
            raise ChainError("the correction was not proposed: see the messages above")
    else:
        row = submitter.advance(row)
    deadline = time.monotonic() + timeout
    while wait and row.status == sdb.MINED and time.monotonic() < deadline:
        sleep(min(5.0, max(0.05, (row.valid_at or 0) - submitter._chain_time())))
        row = submitter.advance(row)
    return _state(submitter, row)


def _state(submitter: Submitter, row: sdb.Proposal) -> CorrectionState:
    if row.status == sdb.ACCEPTED:  # the submitter marked the corrected row superseded
        step = (
            f"correction accepted in block {row.block}: the bad root is no longer claimable. "
            "Guardian: call unpause() on the distributor now; claims resume against the "
            "corrected root"
        )
        submitter.say(step)
        return CorrectionState("accepted", row, step)
    if row.status == sdb.MINED:
        step = (
            f"correction pending until validAt {row.valid_at} (chain time now "
            f"{submitter._chain_time()}): run `settlement correct` again after it, or use "
            "--wait. Keep the distributor paused"
        )
        submitter.say(step)
        return CorrectionState("pending", row, step)
    raise ChainError(
        f"correction proposal {row.id} ended {row.status}: {row.note or 'see the log'}"
    )

"""The root submitter: closed epochs -> proposeRoot -> acceptRoot, a state machine persisted in
the store (one `proposal` row per proposal, see adapters.submitter_db) and reconciled with
the chain before anything is sent, so a crash at any point never proposes a root twice.

Each signed transaction is written to its row before it is broadcast (fee bumps too), so a
restarted process knows every hash that may be mined. While a root is pending, closed epochs
accumulate; the next proposal carries the latest one (roots are cumulative: folding).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

import orjson
from prometheus_client import Gauge

from settlement import faults
from settlement.adapters import files as publish
from settlement.adapters.chain import (
    PROPOSAL_EVENTS,
    Chain,
    Distributor,
    Mined,
    PreparedTx,
    read_events,
    root_history,
)
from settlement.adapters.db import submitter as sdb
from settlement.adapters.db.epochs import EpochStore
from settlement.adapters.db.store import Store
from settlement.adapters.keys import Key
from settlement.config import Settings
from settlement.domain import dataset
from settlement.errors import (
    ChainError,
    ContractRevert,
    DistributorPaused,
    InsolventProposal,
    TransactionFailed,
)

log = logging.getLogger(__name__)

# Alerts: a shortfall above 0 means a root is waiting for funds; revoked roots need a look.
SHORTFALL = Gauge(
    "w2e_submitter_shortfall_base_units",
    "W2E base units the distributor lacks to cover the next root (0: solvent)",
)
REVOKED = Gauge("w2e_submitter_revoked_roots", "Roots of this service revoked by the guardian")
PAUSED = Gauge("w2e_distributor_paused", "1 while the distributor is paused (no proposals)")
PENDING_EPOCHS = Gauge(
    "w2e_submitter_unproposed_epochs", "Closed epochs not yet carried by an accepted root"
)
FOREIGN_ROOT = Gauge(
    "w2e_submitter_foreign_root",
    "1 while the distributor's root is not this service's last accepted proposal: a root it "
    "did not make was accepted; no proposal until a correction is accepted",
)
BELOW_CHAIN = Gauge(
    "w2e_submitter_tree_below_chain_total",
    "1 when the next tree's total is below the distributor's cumulativeTotal (never expected: "
    "leaves are max(balance, floor)); nothing is proposed",
)
DATA_MISSING = Gauge(
    "w2e_submitter_dataset_incomplete_epoch",
    "The closed epoch not proposed because data files its manifest names are not in "
    "W2E_DATA_DIR (0: every dataset complete)",
)
STALE_FLOOR = Gauge(
    "w2e_submitter_stale_floor_epoch",
    "The latest closed epoch when it was built under an older floor than the one in force "
    "(not proposed: the next close folds it); 0 otherwise",
)


@dataclasses.dataclass(frozen=True)
class Candidate:
    """What a proposal carries: the latest closed epoch that changed balances (or a correction)."""

    epoch: int
    first_epoch: int
    root: str
    cumulative_total: int
    data_hash: str
    data_uri: str
    dump_path: str | None = None
    corrects: str | None = None
    claimed_at_block: int | None = None  # a correction's: where its claimed amounts were read


def data_uri(settings: Settings, epoch: int) -> str:
    """What a proposal of `epoch` names as its dataURI (`published.data_uri`)."""
    from settlement.services.published import epoch_data_uri

    return epoch_data_uri(settings, epoch)


def epoch_dump_path(settings: Settings, manifest: bytes) -> str | None:
    """Path of the tree dump a manifest names (None: no tree)."""
    doc = orjson.loads(manifest)
    for f in doc["files"]:
        if f["name"] == dataset.TREE:
            return str(
                publish.epoch_dir(settings.data_dir, int(doc["epoch"])) / f"{f['sha256']}.json"
            )
    return None


class Submitter:
    """Moves proposals forward one `step` at a time. Not thread-safe: one per process (the
    job runs it with max_instances=1); two processes on one store must not both run it."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        chain: Chain,
        distributor: Distributor,
        key: Key,
        *,
        deployment_block: int = 0,
        say: Callable[[str], None] | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.chain = chain
        self.distributor = distributor
        self.key = key
        self.deployment_block = deployment_block
        self.rows = sdb.SubmitterStore(store)
        self.epochs = EpochStore(store)
        self.reconciled = False
        self._say = say
        self.rpc_down_since: float | None = None  # monotonic time of the first failure
        self.rpc_failures = 0
        self.retry_at = 0.0  # monotonic: no tick before this while the RPC is down

    def say(self, message: str) -> None:
        """What the submitter did, once: to `say` when given (the CLI's stderr), else the log."""
        if self._say is not None:
            self._say(message)
        else:
            log.info("%s", message)

    def alert(self, message: str) -> None:
        """What needs an operator, once: "ALERT: ..." to `say` when given, else the error log."""
        if self._say is not None:
            self._say(f"ALERT: {message}")
        else:
            log.error("ALERT: %s", message)

    # -- the tick ------------------------------------------------------------------------------

    def step(self) -> list[sdb.Proposal]:
        """Reconcile (first call), finish what is in flight, accept what is due, then propose
        the latest closed epoch when nothing is pending. Returns the rows it touched."""
        touched: dict[int, sdb.Proposal] = {}  # latest state of each row, first touch first
        if not self.reconciled:
            touched.update((r.id, r) for r in self.reconcile())
            self.reconciled = True
        for row in self.rows.open():
            touched[row.id] = self.advance(row)
        if not self.rows.open():
            proposed = self.propose_next()
            if proposed is not None:
                touched[proposed.id] = proposed
        self._gauges()
        return list(touched.values())

    def reconcile(self) -> list[sdb.Proposal]:
        """Match every open row with the chain (receipts, the node's pool, events) before
        anything is sent: a hash already mined is adopted, never proposed again."""
        self.chain.nonces.resync(self.key.address)
        out = []
        for row in self.rows.open():
            before = row.status
            row = self._sync(row)
            if row.status != before:
                self.say(
                    f"reconciled proposal {row.id} (epoch {row.epoch}): {before} -> {row.status}"
                )
            out.append(row)
        return out

    # -- one row -------------------------------------------------------------------------------

    def _sync(self, row: sdb.Proposal) -> sdb.Proposal:
        """Status from the chain alone, sending nothing."""
        if row.status in (sdb.PREPARED, sdb.SENT):
            mined = self._mined(row.txs)
            if mined is not None:
                return self._on_mined(row, mined)
            if any(self.chain.is_pending(t.tx_hash) for t in row.txs):
                return self.rows.update(row.id, status=sdb.SENT) if row.status != sdb.SENT else row
            latest = row.txs[-1]
            if self.chain.nonces.mined_count(latest.sender) > latest.nonce:
                # Our nonce went to another transaction: did someone else propose the root?
                return self._from_events(
                    row, note=f"nonce {latest.nonce} used by another transaction"
                )
            return row  # never reached the node (or the node forgot it): advance re-sends it
        if row.status == sdb.MINED:
            return self._from_events(row)
        return row

    def _from_events(self, row: sdb.Proposal, note: str | None = None) -> sdb.Proposal:
        history = root_history(self.distributor, row.root, row.from_block)
        status = history.status
        if status == "absent":
            if row.status == sdb.MINED:  # a reorg dropped it: wait for the versions again
                return self.rows.update(row.id, status=sdb.SENT, block=None)
            return self.rows.update(row.id, status=sdb.FAILED, note=note or "not on chain")
        last = history.events[-1]
        if status == "accepted":
            # A correction: first the floor, then the row. A crash in between re-syncs the
            # open row and sets the floor again (idempotent).
            if row.kind == sdb.CORRECTION and not self.epochs.accept_correction(
                bytes.fromhex(row.data_hash[2:]), last.block_number
            ):
                log.error("ALERT: correction %s was not published here", row.data_hash)
            if row.kind == sdb.CORRECTION and row.status != sdb.ACCEPTED:
                for old in self.rows.all():
                    if old.status == sdb.ACCEPTED and old.data_hash == row.corrects:
                        self.rows.update(
                            old.id, status=sdb.SUPERSEDED, note=f"corrected by proposal {row.id}"
                        )
            return self.rows.update(row.id, status=sdb.ACCEPTED, block=last.block_number)
        if status == "revoked":
            return self._revoked(row)
        proposed = history.proposals[-1]
        return self.rows.update(
            row.id,
            status=sdb.MINED,
            block=proposed.block_number,
            tx_hash=proposed.tx_hash,
            valid_at=proposed.args["validAt"],
        )

    def _revoked(self, row: sdb.Proposal) -> sdb.Proposal:
        self.alert(
            f"root {row.root} of epoch {row.epoch} was revoked by the guardian; it will not be "
            "proposed again as it was: the next proposal comes from a new close or a correction"
        )
        return self.rows.update(row.id, status=sdb.REVOKED, note="revoked by the guardian")

    def _mined(self, versions: tuple[PreparedTx, ...]) -> Mined | None:
        for tx in reversed(versions):
            mined = self.chain.lookup(tx.tx_hash)
            if mined is not None:
                return mined
        return None

    def _on_mined(self, row: sdb.Proposal, mined: Mined) -> sdb.Proposal:
        if mined.status != 1:
            return self.rows.update(
                row.id,
                status=sdb.FAILED,
                tx_hash=mined.tx_hash,
                block=mined.block_number,
                note=(
                    f"{'proposeCorrection' if row.kind == sdb.CORRECTION else 'proposeRoot'} "
                    f"{mined.tx_hash} reverted in block {mined.block_number}"
                ),
            )
        row = self.rows.update(
            row.id, status=sdb.MINED, tx_hash=mined.tx_hash, block=mined.block_number
        )
        return self._from_events(row)

    def advance(self, row: sdb.Proposal) -> sdb.Proposal:
        """Drive one open row: (re)send and wait for its transaction, then accept when due."""
        if row.status in (sdb.PREPARED, sdb.SENT):
            row = self._sync(row)
        if row.status in (sdb.PREPARED, sdb.SENT):
            row = self._send_and_wait(row)
        if row.status == sdb.MINED:
            row = self._accept_if_due(row)
        return row

    def _send_and_wait(self, row: sdb.Proposal) -> sdb.Proposal:
        versions = list(row.txs)
        row_id = row.id

        def persist(new: PreparedTx) -> None:
            versions.append(new)
            self.rows.update(row_id, txs=versions, tx_hash=new.tx_hash)
            self.say(f"proposal {row_id}: fees bumped, replacement {new.tx_hash}")

        self.chain.send(versions[-1])  # idempotent: a node that has it says so
        if row.status != sdb.SENT:
            row = self.rows.update(row_id, status=sdb.SENT)
            self.say(f"proposal {row_id} (epoch {row.epoch}) sent: {versions[-1].tx_hash}")
        faults.point("propose.sent")
        try:
            mined = self.chain.wait(versions, key=self.key, before_send=persist, check=False)
        except TransactionFailed as error:
            if "was used by another transaction" in str(error):
                return self._from_events(self.rows.get(row_id) or row, note=str(error))
            raise
        faults.point("propose.mined")
        return self._on_mined(self.rows.get(row_id) or row, mined)

    def _accept_if_due(self, row: sdb.Proposal) -> sdb.Proposal:
        pending = self.distributor.pending_root()
        if pending is None or pending.root != row.root:
            return self._from_events(row)  # accepted or revoked meanwhile
        if row.valid_at != pending.valid_at:
            row = self.rows.update(row.id, valid_at=pending.valid_at)
        if not self.settings.submitter_accept:
            return row
        if row.kind != sdb.CORRECTION and self.distributor.paused():
            return row  # ordinary acceptance waits for the unpause
        if self._chain_time() + 1 < pending.valid_at:  # the next block is at least 1 s later
            return row
        versions = list(row.accept_txs)
        open_accept = (
            versions and self.chain.nonces.mined_count(versions[-1].sender) <= versions[-1].nonce
        )
        if not open_accept:
            try:
                prepared = self.chain.build(self.key, self.distributor.accept_root())
            except ContractRevert as error:  # TooEarly by a block, or paused: next tick
                self.say(f"acceptRoot of epoch {row.epoch} not yet: {error}")
                self.chain.nonces.resync(self.key.address)
                return row
            versions.append(prepared)
            row = self.rows.update(row.id, accept_txs=versions)
        row_id = row.id

        def persist(new: PreparedTx) -> None:
            versions.append(new)
            self.rows.update(row_id, accept_txs=versions)

        self.chain.send(versions[-1])
        try:
            self.chain.wait(versions, key=self.key, before_send=persist, check=False)
        except TransactionFailed as error:
            if "was used by another transaction" not in str(error):
                raise
        row = self._from_events(self.rows.get(row_id) or row)
        if row.status == sdb.ACCEPTED:
            self.say(f"root of epoch {row.epoch} accepted: {row.root}")
        return row

    def _chain_time(self) -> int:
        return int(self.chain.w3.eth.get_block("latest")["timestamp"])

    # -- choosing what to propose -------------------------------------------------------------

    def candidate(self) -> Candidate | None:
        """The latest closed epoch that changed balances, if it is after the chain's epoch."""
        last = self.epochs.last_closed()
        current = self.distributor.current_epoch()
        PENDING_EPOCHS.set(max(0, last - current))
        epoch = last
        floor = self.epochs.floor_hash()
        while epoch > current:
            stored = self.epochs.get(epoch)
            if stored is not None and stored.proposes:
                if stored.floor != floor:
                    # PROTOCOL 6: its leaves may fall below what was claimed against the
                    # correction; the next close, built under the floor in force, folds it.
                    STALE_FLOOR.set(epoch)
                    self.say(
                        f"not proposing epoch {epoch}: it was closed under floor "
                        f"0x{stored.floor.hex()}, the floor in force is 0x{floor.hex()}; "
                        "the next close folds it"
                    )
                    return None
                STALE_FLOOR.set(0)
                if not self._published(stored.epoch, stored.manifest):
                    return None
                return Candidate(
                    epoch=epoch,
                    first_epoch=current + 1,
                    root="0x" + stored.root.hex(),
                    cumulative_total=stored.cumulative_total,
                    data_hash="0x" + stored.data_hash.hex(),
                    data_uri=data_uri(self.settings, epoch),
                    dump_path=epoch_dump_path(self.settings, stored.manifest),
                )
            epoch -= 1
        return None

    def _published(self, epoch: int, manifest: bytes) -> bool:
        """Whether `epoch`'s dataset is where its dataURI serves it, completed first: a root
        goes on chain only once anyone can check it (a watchtower revokes a root whose data
        it cannot read). A crash between the close's commit and its manifest leaves the
        manifest out; it is put back from the stored bytes, as the next close tick would."""
        directory = publish.epoch_dir(self.settings.data_dir, epoch)
        files = orjson.loads(manifest)["files"]
        missing = publish.missing_files(directory, (f["sha256"] for f in files))
        DATA_MISSING.set(epoch if missing else 0)
        if missing:
            self.alert(
                f"not proposing epoch {epoch}: {len(missing)} of its data files are not in "
                f"{directory} (first {missing[0]}): restore them from a backup (docs/operations.md)"
            )
            return False
        if publish.ensure_file(directory / dataset.MANIFEST, manifest):
            self.say(f"published the manifest of epoch {epoch}, missing after its close")
        return True

    def foreign_root(self) -> str | None:
        """Why not to propose, when the distributor's root is not this service's last accepted
        proposal (ordinary or correction): a root it did not make was accepted (PROTOCOL 6).
        None when it is."""
        own = self.rows.latest_accepted()
        expected = own.root if own is not None else "0x" + "00" * 32
        on_chain = self.distributor.root()
        if on_chain == expected:
            FOREIGN_ROOT.set(0)
            if own is not None and own.kind == sdb.CORRECTION:
                floor = self.epochs.floor_hash()
                if "0x" + floor.hex() != own.data_hash:
                    # A correction accepted without its leaves recorded as the floor (made
                    # by a version 1 service): later closes could fall below its claims.
                    return (
                        f"the accepted correction {own.data_hash} is not the floor in force "
                        f"(0x{floor.hex()}): it was made before protocol version 2. Correct "
                        "again (guardian pause, `settlement correct`) so its leaves become the "
                        "floor"
                    )
            return None
        FOREIGN_ROOT.set(1)
        return (
            f"the distributor's root {on_chain} is not this service's last accepted proposal "
            f"({expected}): a root it did not make was accepted. No proposal until a correction "
            "is accepted: the guardian pauses, then `settlement correct`"
        )

    def propose_next(self) -> sdb.Proposal | None:
        foreign = self.foreign_root()
        if foreign is not None:
            self.alert(foreign)
            return None
        candidate = self.candidate()
        if candidate is None:
            return None
        for row in self.rows.by_root(candidate.root):
            if row.status == sdb.REVOKED and row.data_hash == candidate.data_hash:
                self.say(
                    f"not proposing epoch {candidate.epoch}: its root {candidate.root} was revoked; "
                    "waiting for a new close or a correction"
                )
                return None
        if candidate.root == self.distributor.root():
            return None
        return self.propose(candidate)

    def propose(self, candidate: Candidate, *, correction: bool = False) -> sdb.Proposal | None:
        """Check (paused, pending, solvency), persist the signed proposeRoot, send, wait."""
        paused = self.distributor.paused()
        PAUSED.set(1 if paused else 0)
        if paused and not correction:
            self.say("the distributor is paused: no proposal until the guardian unpauses")
            return None
        try:
            self.distributor.check_proposal(
                candidate.cumulative_total,
                correction=correction,
                claimed_at_block=candidate.claimed_at_block,
            )
        except InsolventProposal as error:
            SHORTFALL.set(error.shortfall)
            self.alert(str(error))
            return None
        except DistributorPaused:
            return None
        except ContractRevert as error:  # a root someone else proposed is pending
            self.say(f"not proposing epoch {candidate.epoch}: {error}")
            return None
        SHORTFALL.set(0)
        if correction:
            if candidate.claimed_at_block is None:
                raise ChainError("a correction names the block its claimed amounts were read at")
            call = self.distributor.propose_correction(
                candidate.epoch,
                candidate.root,
                candidate.cumulative_total,
                candidate.data_hash,
                candidate.data_uri,
                candidate.claimed_at_block,
            )
        else:
            on_chain = self.distributor.cumulative_total()
            if candidate.cumulative_total < on_chain:
                # Unreachable by construction (leaves are max(balance, floor) and the floor
                # holds every leaf of the last correction): a bug or a foreign root. Loud.
                BELOW_CHAIN.set(1)
                message = (
                    f"the tree of epoch {candidate.epoch} totals {candidate.cumulative_total}, "
                    f"below the distributor's cumulativeTotal {on_chain}: not proposed. This "
                    "should not happen (leaves are max(balance, floor)): check the floor in "
                    "force and whether a root this service did not make was accepted"
                )
                self.alert(message)
                return None
            BELOW_CHAIN.set(0)
            call = self.distributor.propose_root(
                candidate.epoch,
                candidate.root,
                candidate.cumulative_total,
                candidate.data_hash,
                candidate.data_uri,
            )
        from_block = self.chain.block_number()
        self.chain.nonces.resync(self.key.address)
        try:
            prepared = self.chain.build(self.key, call)  # a revert surfaces here, unsent
        except ContractRevert as error:
            # e.g. EnforcedPause when the guardian paused after the check: nothing is sent.
            self.chain.nonces.resync(self.key.address)
            self.alert(f"proposal of epoch {candidate.epoch} refused: {error}")
            return None
        row = self.rows.insert(
            kind=sdb.CORRECTION if correction else sdb.ROOT,
            epoch=candidate.epoch,
            first_epoch=candidate.first_epoch,
            root=candidate.root,
            cumulative_total=candidate.cumulative_total,
            data_hash=candidate.data_hash,
            data_uri=candidate.data_uri,
            from_block=from_block,
            prepared=prepared,
            dump_path=candidate.dump_path,
            corrects=candidate.corrects,
            claimed_at_block=candidate.claimed_at_block,
        )
        what = "correction" if correction else "root"
        folded = (
            f"epochs {candidate.first_epoch}-{candidate.epoch}"
            if candidate.first_epoch < candidate.epoch
            else f"epoch {candidate.epoch}"
        )
        self.say(f"proposing {what} {candidate.root} for {folded} (proposal {row.id})")
        faults.point("propose.prepared")
        return self.advance(row)

    def release_revoked(self, root: str) -> int:
        """An operator's decision: a revoked `root` may be proposed again (e.g. revoked by
        mistake). Returns how many revoked rows were released."""
        released = 0
        for row in self.rows.by_root(root.lower()):
            if row.status == sdb.REVOKED:
                self.rows.update(
                    row.id, status=sdb.FAILED, note="revoked; released by the operator"
                )
                released += 1
        self._gauges()
        return released

    def _gauges(self) -> None:
        REVOKED.set(self.rows.count(sdb.REVOKED))
        PAUSED.set(1 if self.distributor.paused() else 0)


def proposals_on_chain(distributor: Distributor, from_block: int) -> dict[str, int]:
    """root -> how many times it was proposed (ordinary or correction) since `from_block`."""
    counts: dict[str, int] = {}
    for e in read_events(distributor, from_block, names=PROPOSAL_EVENTS):
        counts[e.args["root"]] = counts.get(e.args["root"], 0) + 1
    return counts

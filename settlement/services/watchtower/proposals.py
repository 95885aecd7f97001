"""What the watchtower audits (`Proposal`, one proposal event) and the answer (`Verdict`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from settlement.adapters.chain import ChainEvent, PendingRoot


@dataclass(frozen=True, slots=True)
class Proposal:
    """One RootProposed or CorrectionProposed event: what the watchtower audits."""

    epoch: int
    root: str
    cumulative_total: int
    data_hash: str
    valid_at: int
    data_uri: str
    correction: bool
    block_number: int
    log_index: int
    tx_hash: str

    @classmethod
    def of(cls, e: ChainEvent) -> Proposal:
        return cls(
            epoch=int(e.args["epoch"]),
            root=e.args["root"],
            cumulative_total=int(e.args["cumulativeTotal"]),
            data_hash=e.args["dataHash"],
            valid_at=int(e.args["validAt"]),
            data_uri=e.args["dataURI"],
            correction=e.name == "CorrectionProposed",
            block_number=e.block_number,
            log_index=e.log_index,
            tx_hash=e.tx_hash,
        )

    @property
    def key(self) -> tuple[int, int]:
        return (self.block_number, self.log_index)

    def is_pending(self, pending: PendingRoot | None) -> bool:
        return (
            pending is not None
            and pending.root == self.root
            and pending.data_hash == self.data_hash
            and pending.valid_at == self.valid_at
        )

    def __str__(self) -> str:
        what = "correction" if self.correction else "root"
        return f"{what} {self.root} of epoch {self.epoch} (block {self.block_number})"


@dataclass(frozen=True, slots=True)
class Verdict:
    """An audit's answer on one proposal: `ok`, and when not, what did not match (the
    auditor's first mismatches, one a line)."""

    ok: bool
    summary: str = ""
    mismatches: int | None = None  # how many the audit found, when it counted them

    @property
    def count(self) -> int:
        """Mismatches: the audit's count, else one per line of `summary` (at least one when
        it failed: a verdict that could not complete is one failure)."""
        if self.ok:
            return 0
        if self.mismatches is not None:
            return max(1, self.mismatches)
        return max(1, len([line for line in self.summary.splitlines() if line.strip()]))

    @property
    def first(self) -> str:
        """The first mismatch (the summary's first line), "" when it passed."""
        lines = [line for line in self.summary.strip().splitlines() if line.strip()]
        return lines[0] if lines and not self.ok else ""


# The audit of one pending proposal. Raises DataUnavailable when it could not read the data
# (tried again next tick; a failure once the window is about to close). Any other
# SettlementError is a failure: a dataset that breaks the auditor cannot be shown correct.
PendingAudit = Callable[[Proposal], Verdict]

# Keeps each completed audit's verdict (pass or fail) where the explorer reads it: the wiring
# passes one in (cli: the store's verdicts table); the watchtower reaches no store itself.
# What it raises is logged and the watchtower goes on.
VerdictRecorder = Callable[[Proposal, Verdict], None]

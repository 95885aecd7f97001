"""What the auditor finds: one `Mismatch` a finding, an `EpochSummary` a manifest audited,
the `AuditReport` of a run (JSON for machines)."""

from __future__ import annotations

import dataclasses
from typing import Any, Final

import orjson

SHOWN_PER_KIND: Final = 20  # mismatches of one (epoch, file, what) listed; the rest counted


@dataclasses.dataclass(frozen=True, slots=True)
class Mismatch:
    """One thing that is not as the published data and the rules say. `epoch` None: the
    chain as a whole; `file` a dataset file's name, `manifest.json` or `chain`."""

    epoch: int | None
    file: str | None
    line: int | None
    account: str | None
    receipt: str | None
    what: str
    expected: str | None = None
    found: str | None = None

    def __str__(self) -> str:
        where = ", ".join(
            p
            for p in (
                f"epoch {self.epoch}" if self.epoch is not None else "",
                self.file or "",
                f"line {self.line}" if self.line is not None else "",
                f"account {self.account}" if self.account else "",
                f"receipt {self.receipt}" if self.receipt else "",
            )
            if p
        )
        out = f"{where}: {self.what}" if where else self.what
        if self.expected is not None or self.found is not None:
            out += f" (expected {self.expected}, found {self.found})"
        return out


@dataclasses.dataclass(slots=True)
class EpochSummary:
    """One manifest audited: an epoch's, or a correction's (`kind`)."""

    epoch: int
    kind: str  # "epoch" or "correction"
    data_hash: str
    root: str
    cumulative_total: int
    receipts: int = 0
    signatures_checked: int = 0
    accounts: int = 0
    on_chain: str = "not proposed"  # "accepted", "pending", "revoked", "not proposed"
    mismatches: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.mismatches == 0


@dataclasses.dataclass(slots=True)
class AuditReport:
    chain_id: int
    distributor: str
    source: str
    mismatches: list[Mismatch] = dataclasses.field(default_factory=list)
    epochs: list[EpochSummary] = dataclasses.field(default_factory=list)
    suppressed: int = 0  # mismatches counted, not listed (beyond SHOWN_PER_KIND of a kind)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.mismatches and not self.suppressed

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "chainId": self.chain_id,
            "distributor": self.distributor,
            "source": self.source,
            "seconds": round(self.seconds, 3),
            "mismatches": [dataclasses.asdict(m) for m in self.mismatches],
            "suppressed": self.suppressed,
            "epochs": [
                {**dataclasses.asdict(e), "cumulative_total": str(e.cumulative_total), "ok": e.ok}
                for e in self.epochs
            ],
        }

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())

"""The state one audit shares across its phases (`Context`), what a close carries to the
next (`State`), a manifest as read (`Manifest`), and small value helpers."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any, Final

import numpy as np

from settlement.domain import dataset
from settlement.domain.columns import U64
from settlement.domain.receipts import Domain, Params
from settlement.domain.rewards import ClassAmounts
from settlement.services.audit.chain import ChainView
from settlement.services.audit.report import SHOWN_PER_KIND, AuditReport, Mismatch
from settlement.services.audit.sources import DataSource

Progress = Callable[[str, int, int], None]

ZERO: Final = dataset.ZERO_HASH
MAX64: Final = 2**64 - 1


@dataclasses.dataclass(slots=True)
class Manifest:
    """A manifest as read at `relpath`: its bytes, its JSON object and its dataHash."""

    relpath: str
    raw: bytes
    doc: dict[str, Any]
    data_hash: str

    @property
    def kind(self) -> str:
        return "correction" if "corrects" in self.doc else "epoch"

    @property
    def epoch(self) -> int:
        try:
            return int(self.doc.get("epoch", "0"))
        except (TypeError, ValueError):
            return 0

    @property
    def directory(self) -> str:
        return self.relpath.rsplit("/", 1)[0]


@dataclasses.dataclass(slots=True)
class State:
    """What a close carries to the next, rebuilt from the published files."""

    dm_keys: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, "S72"))
    dm_bytes: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, U64))
    dm_segs: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, U64))
    vm_keys: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, "S52"))
    vm_watch: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, U64))
    vm_credited: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, U64))
    balances: dict[bytes, int] = dataclasses.field(default_factory=dict)
    carried: ClassAmounts = dataclasses.field(default_factory=ClassAmounts)
    last_epoch: int = 0
    last_epoch_doc: dict[str, Any] | None = None
    floors: dict[str, dict[bytes, int]] = dataclasses.field(default_factory=dict)
    # The recomputed leaves of each manifest audited, by its dataHash.
    leaves_by_hash: dict[str, dict[bytes, int]] = dataclasses.field(default_factory=dict)


class Context:
    """What every phase of one audit shares: the chain and its domain, the epochs audited in
    full, the report being written (`bad` adds a mismatch), and the memos across manifests.
    The state a close carries to the next is a `State`, passed apart."""

    def __init__(
        self,
        source: DataSource | None,
        chain: ChainView,
        epochs: Iterable[int] | None,
        progress: Progress | None,
        workers: int | None,
    ) -> None:
        self.source = source
        self.chain = chain
        self.only = None if epochs is None else set(epochs)
        self.progress = progress or (lambda d, i, n: None)
        self.workers = workers
        self.domain = Domain(chain.chain_id, bytes.fromhex(chain.address[2:]))
        self.report = AuditReport(
            chain.chain_id,
            chain.address,
            source.description if source is not None else "dataURI on chain",
        )
        self.kinds: dict[tuple[Any, ...], int] = {}
        self.evidence: dict[tuple[bytes, Params], Any] = {}
        # Mismatches of an epoch found while loading or checking the chain (not while its
        # manifest was audited): counted into its summary at the end.
        self.inside = False
        self.outside: dict[int, int] = {}
        # Each proposal's manifest as found at its dataURI (its hash may differ: reported).
        self.at_uri: dict[tuple[int, int], Manifest] = {}
        self.sources: dict[str, DataSource] = {}

    def bad(
        self,
        epoch: int | None,
        file: str | None,
        what: str,
        expected: Any = None,
        found: Any = None,
        *,
        line: int | None = None,
        account: str | None = None,
        receipt: str | None = None,
    ) -> None:
        if not self.inside and epoch is not None:
            self.outside[epoch] = self.outside.get(epoch, 0) + 1
        kind = (epoch, file, what.split(":")[0])
        n = self.kinds[kind] = self.kinds.get(kind, 0) + 1
        if n > SHOWN_PER_KIND:
            self.report.suppressed += 1
            return
        self.report.mismatches.append(
            Mismatch(
                epoch,
                file,
                line,
                account,
                receipt,
                what,
                None if expected is None else str(expected),
                None if found is None else str(found),
            )
        )


def from_hex(value: Any) -> bytes:
    if type(value) is not str or value[:2] != "0x":
        raise ValueError(f"not 0x hex: {value!r}")
    return bytes.fromhex(value[2:])


def to_hex(row: np.ndarray) -> str:
    return "0x" + row.tobytes().hex()


def int_or_zero(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0

"""The independent auditor (issue 14): every root on-chain recomputed from the published
datasets alone, with the core's own rules; no database, no secret.

Entry point (stable; the watchtower and the benchmark call it):

    audit(source, chain, epochs=None, progress=None, *, workers=None) -> AuditReport

- `source`: a `DataSource`, the published files: `open_source(DIR_OR_URL)` for a folder or an
  http(s) base (the `<data dir>` of docs/protocol.md 9.2), or None to follow each proposal's
  `dataURI` on chain.
- `chain`: a `ChainView` of one RewardDistributor: `ChainView.connect(rpc_url, address,
  from_block)`, or `ChainView(distributor, from_block)` over an open
  `adapters.chain.Distributor`. It reads the events (again at every audit: a watchtower may
  keep one) and the views only.
- `epochs`: the epochs to audit in full (signatures included); None: all. Earlier epochs are
  replayed from their files (hashes, recomputation) without their signatures, since the
  state (watermarks, balances, carried pools, floor) must come from somewhere; later ones
  are not read, and their roots and claims not judged.
- `progress(description, done, total)`: called per manifest audited (None: silent).
- `workers`: processes verifying signatures (default: every core, the verify pool of
  `settlement.parallel`; small datasets stay in this process).
- `AuditReport`: `.ok` (no mismatch), `.mismatches` (`Mismatch(epoch, file, line, account,
  receipt, what, expected, found)`; `epoch` None: the chain as a whole; `file` "chain" for
  what the events say), `.suppressed` (mismatches of a kind beyond the first 20, counted),
  `.epochs` (`EpochSummary` per manifest audited, in publication order, with `on_chain`:
  "accepted", "pending", "revoked" or "not proposed"), `.to_dict()` / `.to_json()`.
- Raises `DataUnavailable` when a file cannot be read now (network, 5xx, 429): no verdict,
  try again; a file the server says is absent (404) or whose bytes differ is a mismatch.
"""

from __future__ import annotations

from settlement.services.audit.chain import ChainView
from settlement.services.audit.context import ZERO, Progress
from settlement.services.audit.files import EPOCH_FILES
from settlement.services.audit.receipts import conflict as _conflict
from settlement.services.audit.report import AuditReport, EpochSummary, Mismatch
from settlement.services.audit.run import audit
from settlement.services.audit.sources import (
    DataSource,
    FolderSource,
    HttpSource,
    open_source,
    split_data_uri,
)
from settlement.services.audit.tree import ONCHAIN_CLAIMED, RECOMPUTED_BALANCES

__all__ = [
    "EPOCH_FILES",
    "ONCHAIN_CLAIMED",
    "RECOMPUTED_BALANCES",
    "ZERO",
    "AuditReport",
    "ChainView",
    "DataSource",
    "EpochSummary",
    "FolderSource",
    "HttpSource",
    "Mismatch",
    "Progress",
    "_conflict",
    "audit",
    "open_source",
    "split_data_uri",
]

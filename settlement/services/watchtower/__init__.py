"""The watchtower (`settlement audit --watch`): follows the distributor's proposals, audits
each pending root inside its challenge window, and with the guardian key revokes one that
fails (optionally pausing too, so a correction can follow). Its state is Prometheus metrics;
each verdict also goes to a `VerdictRecorder` when the wiring gives one (`settlement serve`:
the store's audit_verdict table, which the explorer's epoch page reads).

What "audit" means is a function passed in (`PendingAudit`): the auditor of
`services.audit` on the proposal's dataset. This module decides when to audit and what to do
with the verdict, never how to recompute a root.
"""

from __future__ import annotations

from settlement.services.watchtower.audits import FullAudit, _as_proposed, chained, manifest_audit
from settlement.services.watchtower.metrics import WatchMetrics
from settlement.services.watchtower.proposals import (
    PendingAudit,
    Proposal,
    Verdict,
    VerdictRecorder,
)
from settlement.services.watchtower.tower import Action, WatchState, Watchtower, run_step
from settlement.services.watchtower.wiring import open_watchtower

__all__ = [
    "Action",
    "FullAudit",
    "PendingAudit",
    "Proposal",
    "Verdict",
    "VerdictRecorder",
    "WatchMetrics",
    "WatchState",
    "Watchtower",
    "_as_proposed",
    "chained",
    "manifest_audit",
    "open_watchtower",
    "run_step",
]

"""What "audit" means for the watchtower: the manifest check (milliseconds), then the full
auditor of `services.audit` on the chain as the proposal would leave it."""

from __future__ import annotations

from collections.abc import Callable

import orjson

from settlement.adapters import files as publish
from settlement.adapters.chain import PROPOSAL_EVENTS, ChainEvent, Distributor
from settlement.domain import dataset
from settlement.errors import redact
from settlement.services import audit as auditor
from settlement.services.audit import ChainView
from settlement.services.watchtower.proposals import PendingAudit, Proposal, Verdict


def manifest_audit(read: Callable[[str], bytes] = publish.read_uri) -> PendingAudit:
    """The check every proposal gets first, in milliseconds: the manifest at its dataURI
    hashes to its dataHash and names its epoch, root and total (and `corrects` exactly for
    a correction). What it cannot see (the dataset behind the manifest) the full audit does.
    """

    def check(p: Proposal) -> Verdict:
        raw = read(p.data_uri)
        found = "0x" + dataset.data_hash(raw).hex()
        if found != p.data_hash:
            return Verdict(
                False,
                f"manifest at {redact(p.data_uri)}: keccak256 is {found}, the proposal's "
                f"dataHash is {p.data_hash}",
            )
        try:
            m = orjson.loads(raw)
            named = {
                "epoch": int(m["epoch"]),
                "root": str(m["root"]).lower(),
                "cumulativeTotal": int(m["cumulativeTotal"]),
                "corrects": "corrects" in m,
            }
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            return Verdict(False, f"manifest at {redact(p.data_uri)} is not a manifest: {error}")
        expected = {
            "epoch": p.epoch,
            "root": p.root,
            "cumulativeTotal": p.cumulative_total,
            "corrects": p.correction,
        }
        wrong = [
            f"{k}: manifest {named[k]}, proposal {expected[k]}"
            for k in expected
            if named[k] != expected[k]
        ]
        return Verdict(not wrong, "\n".join(f"manifest vs proposal, {w}" for w in wrong))

    return check


def chained(*audits: PendingAudit) -> PendingAudit:
    """Run `audits` in order; the first failure is the verdict (cheap checks go first)."""

    def run(p: Proposal) -> Verdict:
        for audit in audits:
            verdict = audit(p)
            if not verdict.ok:
                return verdict
        return Verdict(True)

    return run


class FullAudit:
    """The auditor (`services.audit`) on a pending proposal: every manifest back to the
    first replayed, the epochs the proposal would add (after the accepted one, up to its
    own) audited in full, signatures included, and the proposal's root and total checked
    against its manifest.

    The auditor sees the chain as the proposal would leave it: proposals revoked before it
    are left out with their revocations (they changed nothing; the tower may have revoked
    them itself, and a bad root revoked must not fail every later audit of its epoch).
    """

    def __init__(
        self,
        distributor: Distributor,
        *,
        from_block: int,
        data: str | None = None,
        workers: int | None = None,
    ) -> None:
        self.distributor = distributor
        self.from_block = from_block
        self.data = data
        self.workers = workers

    def __call__(self, p: Proposal) -> Verdict:
        accepted = self.distributor.current_epoch()
        epochs = [p.epoch] if p.correction else list(range(accepted + 1, p.epoch + 1))
        source = auditor.open_source(self.data or auditor.split_data_uri(p.data_uri)[0])
        try:
            report = auditor.audit(
                source,
                _AsProposed(self.distributor, self.from_block, p),
                epochs or [p.epoch],
                workers=self.workers,
            )
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()  # an HTTP source's downloads: one dataset a proposal, for days
        shown = [str(m) for m in report.mismatches[:5]]
        more = len(report.mismatches) - len(shown) + report.suppressed
        if more:
            shown.append(f"... and {more} more")
        return Verdict(report.ok, "\n".join(shown), len(report.mismatches) + report.suppressed)


def _as_proposed(events: list[ChainEvent], p: Proposal) -> list[ChainEvent]:
    """`events` up to `p`'s own proposal, less the proposals revoked before it and their
    RootRevoked (each proposal is revoked, accepted or pending before the next one)."""
    out: list[ChainEvent] = []
    open_at: int | None = None  # index in `out` of the proposal still pending
    for e in events:
        if (e.block_number, e.log_index) > p.key:
            break
        if e.name in PROPOSAL_EVENTS:
            open_at = len(out)
        elif e.name == "RootRevoked" and open_at is not None:
            del out[open_at : open_at + 1]
            open_at = None
            continue
        elif e.name == "RootAccepted":
            open_at = None
        out.append(e)
    return out


class _AsProposed(ChainView):
    """The auditor's view of the distributor, its events the chain as `p` would leave it."""

    def __init__(self, distributor: Distributor, from_block: int, p: Proposal) -> None:
        super().__init__(distributor, from_block)
        self.proposal = p

    def events(self, refresh: bool = False) -> list[ChainEvent]:
        return _as_proposed(super().events(refresh), self.proposal)

"""Events and claims: each proposal's root and total against its manifest, the floor in force,
acceptances, revocations, and no Claimed above the account's recomputed leaf."""

from __future__ import annotations

from typing import Any

from settlement.domain import dataset
from settlement.services.audit.context import ZERO, Context, Manifest, State, from_hex, int_or_zero
from settlement.services.audit.report import EpochSummary


def check_chain(
    ctx: Context,
    events: list[Any],
    manifests: dict[str, Manifest],
    summaries: dict[str, EpochSummary],
    state: State,
) -> None:
    """Roots and totals against the events, the floor in force at each proposal, and
    no Claimed above the account's leaf."""
    accepted_floor = ZERO  # dataHash of the last accepted correction
    paused_at: int | None = None  # block of the pause in force
    pending: Any = None
    current: tuple[str, dict[bytes, int] | None] | None = None
    previous: tuple[str, dict[bytes, int] | None] | None = None
    for ev in events:
        a = ev.args
        if ev.name in ("RootProposed", "CorrectionProposed"):
            pending = ev
            m = manifests.get(a["dataHash"]) or ctx.at_uri.get((ev.block_number, ev.log_index))
            s = summaries.get(m.data_hash) if m is not None else None
            if m is None:
                ctx.bad(a["epoch"], "chain", f"{ev.name} dataHash is keccak256 of no published manifest",
                         None, a["dataHash"])  # fmt: skip
                continue
            if s is not None:
                s.on_chain = "pending"
            if ctx.only is not None and m.epoch not in ctx.only:
                continue
            if m.doc.get("root") != a["root"]:
                ctx.bad(m.epoch, "chain", f"{ev.name} root differs from the manifest's (block {ev.block_number})",
                         m.doc.get("root"), a["root"])  # fmt: skip
            if m.doc.get("cumulativeTotal") != str(a["cumulativeTotal"]):
                ctx.bad(m.epoch, "chain", f"{ev.name} cumulativeTotal differs from the manifest's",
                         m.doc.get("cumulativeTotal"), a["cumulativeTotal"])  # fmt: skip
            if m.epoch != a["epoch"]:
                ctx.bad(
                    m.epoch,
                    "chain",
                    f"{ev.name} epoch differs from the manifest's",
                    m.epoch,
                    a["epoch"],
                )
            if (ev.name == "CorrectionProposed") != (m.kind == "correction"):
                ctx.bad(m.epoch, "chain", f"{ev.name} names a manifest of kind {m.kind}")
            if ev.name == "RootProposed" and m.doc.get("floor") != accepted_floor:
                ctx.bad(m.epoch, "chain", "proposed under another floor than the one in force",
                         accepted_floor, m.doc.get("floor"))  # fmt: skip
            if ev.name == "CorrectionProposed":
                at = int_or_zero(m.doc.get("claimedAtBlock"))
                if paused_at is None or not paused_at <= at < ev.block_number:
                    ctx.bad(m.epoch, dataset.MANIFEST,
                             "claimedAtBlock is not a block of the pause the correction was proposed in",
                             f"in [{paused_at}, {ev.block_number})", at)  # fmt: skip
                if m.doc.get("floor") != accepted_floor:
                    ctx.bad(m.epoch, dataset.MANIFEST, "a correction's floor names the floor it replaces",
                             accepted_floor, m.doc.get("floor"))  # fmt: skip
                replaced = _accepted_hash(current, manifests)
                if replaced is not None and m.doc.get("corrects") != replaced:
                    ctx.bad(m.epoch, dataset.MANIFEST, "corrects is not the dataHash of the accepted root",
                             replaced, m.doc.get("corrects"))  # fmt: skip
        elif ev.name == "RootAccepted":
            if pending is None or pending.args["root"] != a["root"]:
                ctx.bad(a["epoch"], "chain", "RootAccepted of a root not pending", None, a["root"])
                continue
            # What the account may claim: its leaf as recomputed from the data the
            # proposal names (a root that is not that data's earns it nothing more).
            pm = manifests.get(pending.args["dataHash"]) or ctx.at_uri.get(
                (pending.block_number, pending.log_index)
            )
            leaves = state.leaves_by_hash.get(pm.data_hash) if pm is not None else None
            if pm is not None and summaries.get(pm.data_hash) is not None:
                summaries[pm.data_hash].on_chain = "accepted"
            if pending.name == "CorrectionProposed":
                accepted_floor = pending.args["dataHash"]
                previous = None
            else:
                previous = current
            current = (a["root"], leaves)
            pending = None
        elif ev.name == "Paused":
            paused_at = ev.block_number
        elif ev.name == "Unpaused":
            paused_at = None
        elif ev.name == "RootRevoked":
            if pending is not None:
                s = summaries.get(pending.args["dataHash"])
                if s is not None:
                    s.on_chain = "revoked"
            pending = None
        elif ev.name == "Claimed":
            account = a["account"]
            amount = a["cumulative"]
            leaves_now = [_leaf(r, account) for r in (current, previous) if r is not None]
            if None in leaves_now:
                continue  # a root whose data was not audited (or names none): reported above
            limit = max((x for x in leaves_now if x is not None), default=0)
            if amount > limit:
                ctx.bad(None, "chain", f"Claimed above the account's leaf (block {ev.block_number})",
                         f"<= {limit}", amount, account=account)  # fmt: skip
    if current is not None:
        on_chain = ctx.chain.root()
        if on_chain != current[0]:
            ctx.bad(None, "chain", "root() is not the last accepted root", current[0], on_chain)


def _accepted_hash(current: Any, manifests: dict[str, Manifest]) -> str | None:
    if current is None:
        return None
    for h, m in manifests.items():
        if m.doc.get("root") == current[0]:
            return h
    return None


def _leaf(root: tuple[str, dict[bytes, int] | None], account: str) -> int | None:
    """The account's leaf in a root's recomputed leaves; None: that root's data unknown."""
    if root[1] is None:
        return None
    return root[1].get(from_hex(account), 0)

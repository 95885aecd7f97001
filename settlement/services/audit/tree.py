"""The tree a manifest's leaves make (root, total, the dump), and a correction's manifest:
its balances and the Claimed events it read, giving the leaves that replace the root's."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Final

from settlement.domain import dataset, merkle, published
from settlement.domain.floor import correction_leaves
from settlement.errors import InputError
from settlement.services.audit.context import (
    ZERO,
    Context,
    Manifest,
    State,
    from_hex,
    int_or_zero,
)
from settlement.services.audit.files import check_files
from settlement.services.audit.report import EpochSummary
from settlement.services.audit.sources import DataSource

RECOMPUTED_BALANCES: Final = "recomputed_balances"
ONCHAIN_CLAIMED: Final = "onchain_claimed"


def check_tree(
    ctx: Context,
    e: int,
    m: Manifest,
    files: dict[str, Path],
    leaves: dict[bytes, int],
    s: EpochSummary,
) -> merkle.MerkleTree | None:
    tree = merkle.tree_for_balances(leaves)
    root = merkle.root_of(tree)
    total = sum(leaves.values())
    s.accounts = len(leaves)
    if m.doc.get("root") != root:
        ctx.bad(
            e,
            dataset.MANIFEST,
            "root differs from the recomputed tree",
            root,
            m.doc.get("root"),
        )
    if m.doc.get("cumulativeTotal") != str(total):
        ctx.bad(e, dataset.MANIFEST, "cumulativeTotal differs from the sum of the recomputed leaves",
                 total, m.doc.get("cumulativeTotal"))  # fmt: skip
    path = files.get(dataset.TREE)
    if tree is None:
        if path is not None:
            ctx.bad(e, dataset.TREE, "a tree dump with no positive leaf")
        return None
    if path is None:
        ctx.bad(e, dataset.TREE, "no tree dump", "a dump", "none")
        return tree
    got = path.read_bytes()
    if got == tree.dump_json():
        return tree
    try:
        published_tree = merkle.MerkleTree.load(got)
        values = dict(published_tree.values)
    except (InputError, ValueError, KeyError, TypeError) as error:
        ctx.bad(e, dataset.TREE, f"tree dump is not a standard-v1 dump: {error}")
        return tree
    mine = dict(tree.values)
    for account in sorted(set(values) | set(mine)):
        if values.get(account) != mine.get(account):
            ctx.bad(e, dataset.TREE, "leaf differs from the recomputation",
                     mine.get(account, "no leaf"), values.get(account, "no leaf"), account=account)  # fmt: skip
    if values == mine:
        ctx.bad(e, dataset.TREE, "dump bytes differ from OpenZeppelin's for the same leaves",
                 hashlib.sha256(tree.dump_json()).hexdigest(), hashlib.sha256(got).hexdigest())  # fmt: skip
    return tree


def audit_correction(
    ctx: Context, source: DataSource, m: Manifest, state: State, s: EpochSummary, events: list[Any]
) -> None:
    e = m.epoch
    doc = m.doc
    want_fields = tuple(sorted((*dataset.MANIFEST_FIELDS, *dataset.CORRECTION_FIELDS)))
    if tuple(sorted(doc)) != want_fields:
        ctx.bad(e, dataset.MANIFEST, "correction manifest fields", list(want_fields), sorted(doc))
        return
    if e != state.last_epoch:
        ctx.bad(
            e,
            dataset.MANIFEST,
            "a correction's epoch is the last closed epoch",
            state.last_epoch,
            e,
        )
    last = state.last_epoch_doc or {}
    for field in ("start", "end", "cutoff", "parameters", "pools"):
        if doc[field] != last.get(field):
            ctx.bad(
                e,
                dataset.MANIFEST,
                f"correction's {field} differs from epoch {state.last_epoch}'s",
            )
    files = check_files(
        ctx, source, m, frozenset((RECOMPUTED_BALANCES, ONCHAIN_CLAIMED)), doc["root"] != ZERO
    )
    if RECOMPUTED_BALANCES not in files or ONCHAIN_CLAIMED not in files:
        return
    # recomputed_balances: the auditor's own balances after the close of e
    want = "".join(
        dataset.canonical_line({"account": a, "amount": n})
        for a, n in sorted(state.balances.items()) if n > 0
    ).encode()  # fmt: skip
    got = files[RECOMPUTED_BALANCES].read_bytes()
    if want != got:
        theirs = {o["account"]: int(o["amount"]) for o in published.parse_lines(got)}
        mine = {"0x" + a.hex(): n for a, n in state.balances.items() if n > 0}
        for a in sorted(set(theirs) | set(mine)):
            if theirs.get(a) != mine.get(a):
                ctx.bad(e, RECOMPUTED_BALANCES, "balance differs from the recomputation",
                         mine.get(a, "no line"), theirs.get(a, "no line"), account=a)  # fmt: skip
    # onchain_claimed: Claimed events up to claimedAtBlock
    at_block = int_or_zero(doc["claimedAtBlock"])
    claimed: dict[str, int] = {}
    for ev in events:
        if ev.name == "Claimed" and ev.block_number <= at_block:
            claimed[ev.args["account"]] = ev.args["cumulative"]
    want = "".join(
        dataset.canonical_line({"account": a, "claimed": n}) for a, n in sorted(claimed.items())
    ).encode()
    got = files[ONCHAIN_CLAIMED].read_bytes()
    theirs = {o["account"]: int(o["claimed"]) for o in published.parse_lines(got)}
    if want != got:
        for a in sorted(set(theirs) | set(claimed)):
            if theirs.get(a) != claimed.get(a):
                ctx.bad(e, ONCHAIN_CLAIMED, f"claimed at block {at_block} differs from the Claimed events",
                         claimed.get(a, "no line"), theirs.get(a, "no line"), account=a)  # fmt: skip
    leaves = correction_leaves(state.balances, {from_hex(a): n for a, n in claimed.items()})
    check_tree(ctx, e, m, files, leaves, s)
    state.floors[m.data_hash] = leaves
    state.leaves_by_hash[m.data_hash] = leaves

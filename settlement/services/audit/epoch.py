"""One epoch's manifest audited: its fields and parameters, then each phase in the close's
order (files, receipts, recomputed credit and rewards, tree), and the state carried on."""

from __future__ import annotations

import numpy as np

from settlement.domain import dataset
from settlement.domain.columns import key, lookup
from settlement.domain.epochs import EpochClock
from settlement.domain.floor import leaves_under_floor
from settlement.domain.receipts import Params
from settlement.domain.rewards import CLASSES, EpochWeights, RewardParams, settle_weights
from settlement.services.audit.context import ZERO, Context, Manifest, State
from settlement.services.audit.files import EPOCH_FILES, check_files, parse_big
from settlement.services.audit.receipts import check_sessions, check_sorted, quarantine, registries
from settlement.services.audit.recompute import (
    advance_marks,
    check_allocations,
    check_continuity,
    recompute_credit,
)
from settlement.services.audit.report import SHOWN_PER_KIND, EpochSummary
from settlement.services.audit.sources import DataSource
from settlement.services.audit.tree import check_tree


def audit_epoch(
    ctx: Context, source: DataSource, m: Manifest, state: State, s: EpochSummary, full: bool
) -> None:
    e = m.epoch
    doc = m.doc
    if tuple(sorted(doc)) != dataset.MANIFEST_FIELDS:
        ctx.bad(e, dataset.MANIFEST, "manifest fields", list(dataset.MANIFEST_FIELDS), sorted(doc))
        return
    if doc["protocolVersion"] != dataset.PROTOCOL_VERSION:
        ctx.bad(
            e,
            dataset.MANIFEST,
            "protocolVersion",
            dataset.PROTOCOL_VERSION,
            doc["protocolVersion"],
        )
    if e != state.last_epoch + 1:
        ctx.bad(
            e, dataset.MANIFEST, "epoch does not follow the one before", state.last_epoch + 1, e
        )
    try:
        params, rparams, clock, allowlist = parameters(ctx, m)
    except (KeyError, TypeError, ValueError) as error:
        ctx.bad(e, dataset.MANIFEST, f"parameters unreadable: {error}")
        return
    for field, value in (
        ("start", clock.start(e)),
        ("end", clock.end(e)),
        ("cutoff", clock.cutoff(e)),
    ):
        if doc[field] != str(value):
            ctx.bad(e, dataset.MANIFEST, f"{field} is not the epoch's", value, doc[field])
    tree_expected = doc["root"] != ZERO
    files = check_files(ctx, source, m, EPOCH_FILES, tree_expected)
    if set(files) != (EPOCH_FILES | ({dataset.TREE} if tree_expected else set())):
        state.last_epoch = e
        return
    big = parse_big(ctx, files, m, params, clock, full)
    d, v = big[dataset.DELIVERY_RECEIPTS], big[dataset.VIEW_RECEIPTS]
    dm, vm = big[dataset.DELIVERY_WATERMARKS], big[dataset.VIEW_WATERMARKS]
    s.receipts = len(d["viewer"]) + len(v["viewer"])
    s.signatures_checked = s.receipts if full else 0
    for name, cols, keys in (
        (dataset.DELIVERY_RECEIPTS, d, ("viewer", "session_id", "node")),
        (dataset.VIEW_RECEIPTS, v, ("viewer", "session_id")),
        (dataset.DELIVERY_WATERMARKS, dm, ("viewer", "session_id", "node")),
        (dataset.VIEW_WATERMARKS, vm, ("viewer", "session_id")),
    ):
        check_sorted(ctx, e, name, key(*(cols[k] for k in keys)))
    nodes, content, _viewers = registries(ctx, e, files, allowlist)
    # Section 3 row 5 (nodes are never removed from the registry, only deactivated, and a
    # verdict is final: a node must be in the snapshot, active or not) and row 6.
    if len(d["node"]):
        known = np.array(sorted(nodes), dtype="S20") if nodes else np.zeros(0, "S20")
        _, found = lookup(known, key(d["node"]))
        for i in np.flatnonzero(~found)[:SHOWN_PER_KIND]:
            ctx.bad(
                e, dataset.DELIVERY_RECEIPTS, "node is not in the registry snapshot (UNKNOWN_NODE)",
                None, "0x" + d["node"][i].tobytes().hex(), line=int(i) + 1,
                account="0x" + d["viewer"][i].tobytes().hex(),
                receipt="0x" + d["session_id"][i].tobytes().hex(),
            )  # fmt: skip
    quarantined = quarantine(ctx, e, files, params)
    sessions = check_sessions(ctx, e, d, v, quarantined)
    check_continuity(ctx, e, state, dm, vm, d, v, sessions)
    cc = recompute_credit(ctx, e, d, v, dm, vm, sessions, clock, rparams)
    if cc is None:
        state.last_epoch = e
        return
    creators = dict(content)
    weights = cc.weights(
        rparams.max_bytes_per_viewer, rparams.max_watch_seconds_per_epoch, creators
    )
    rewards = settle_weights(
        EpochWeights(
            node=weights.node,
            viewer=weights.viewer,
            creator=weights.creator,
            capped_bytes=weights.capped_bytes,
            capped_watch=weights.capped_watch,
        ),
        creators,
        state.balances,
        state.carried,
        rparams,
    )
    check_allocations(ctx, e, files, rewards.allocations)
    pools = {
        cls: {
            "emitted": str(rewards.pools.emitted.get(cls)),
            "carriedIn": str(rewards.pools.carried_in.get(cls)),
            "allocated": str(rewards.pools.allocated.get(cls)),
            "carriedOut": str(rewards.pools.carried_out.get(cls)),
        }
        for cls in CLASSES
    }
    for cls in CLASSES:
        got = doc["pools"].get(cls) if type(doc["pools"]) is dict else None
        if got != pools[cls]:
            ctx.bad(
                e,
                dataset.MANIFEST,
                f"pools.{cls} differ from the recomputation",
                pools[cls],
                got,
            )
    floor_hash = str(doc["floor"])
    floor: dict[bytes, int] = {}
    if floor_hash != ZERO:
        if floor_hash not in state.floors:
            ctx.bad(
                e, dataset.MANIFEST,
                "floor names no correction published before this close",
                " or ".join([ZERO, *state.floors]) , floor_hash,
            )  # fmt: skip
        floor = state.floors.get(floor_hash, {})
    leaves = leaves_under_floor(rewards.balances, floor)
    check_tree(ctx, e, m, files, leaves, s)
    # The state the next close starts from.
    state.balances = rewards.balances
    state.carried = rewards.pools.carried_out
    advance_marks(state, cc)
    state.last_epoch = e
    state.last_epoch_doc = doc
    state.leaves_by_hash[m.data_hash] = leaves


def parameters(ctx: Context, m: Manifest) -> tuple[Params, RewardParams, EpochClock, bool]:
    p = m.doc["parameters"]
    e = m.epoch
    if p["chainId"] != str(ctx.chain.chain_id):
        ctx.bad(
            e,
            dataset.MANIFEST,
            "dataset of another chain: parameters.chainId",
            ctx.chain.chain_id,
            p["chainId"],
        )
    if p["distributor"] != ctx.chain.address:
        ctx.bad(
            e, dataset.MANIFEST, "dataset of another distributor: parameters.distributor",
            ctx.chain.address, p["distributor"],
        )  # fmt: skip
    n = {k: int(v) for k, v in p.items() if k not in ("distributor", "viewerAllowlist")}
    params = Params(
        genesis=n["genesis"],
        clock_skew=n["clockSkew"],
        max_age=n["maxAge"],
        max_session_age=n["maxSessionAge"],
        segment_seconds=n["segmentSeconds"],
        max_bitrate=n["maxBitrate"],
        max_lead_seconds=n["maxLeadSeconds"],
        min_segment_bytes=n["minSegmentBytes"],
    )
    rparams = RewardParams(
        emission=n["emission"],
        bps_node=n["bpsNode"],
        bps_viewer=n["bpsViewer"],
        segment_seconds=n["segmentSeconds"],
        max_bytes_per_viewer=n["maxBytesPerViewer"],
        max_watch_seconds_per_epoch=n["maxWatchSecondsPerEpoch"],
    )
    clock = EpochClock(n["genesis"], n["epochSeconds"], n["graceSeconds"])
    return params, rparams, clock, p["viewerAllowlist"] is True

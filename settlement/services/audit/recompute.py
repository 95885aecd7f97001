"""Recomputation: the watermarks continue from the closes before, PROTOCOL 4's credit by
`domain.credit` over the published receipts, the allocations it yields, and the marks carried."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import orjson

from settlement.domain import credit, dataset
from settlement.domain.columns import U64, Cols, key, lookup, max_per_key
from settlement.domain.epochs import EpochClock
from settlement.domain.rewards import CLASSES, RewardParams
from settlement.services.audit.context import Context, State, to_hex
from settlement.services.audit.report import SHOWN_PER_KIND


def check_continuity(
    ctx: Context,
    e: int,
    state: State,
    dm: dict[str, np.ndarray],
    vm: dict[str, np.ndarray],
    d: dict[str, np.ndarray],
    v: dict[str, np.ndarray],
    sessions: Cols,
) -> None:
    """The previous watermarks published are those the closes before left, and they are
    all there: every delivery key of each credited session, one view line each."""
    skeys = key(sessions["viewer"], sessions["session_id"])  # sorted, unique
    # delivery_watermarks: values continue
    mkeys = key(dm["viewer"], dm["session_id"], dm["node"])
    at, found = lookup(state.dm_keys, mkeys)
    wb = np.where(found, state.dm_bytes[at] if len(state.dm_bytes) else U64(0), U64(0))
    ws = np.where(found, state.dm_segs[at] if len(state.dm_segs) else U64(0), U64(0))
    name = dataset.DELIVERY_WATERMARKS
    for i in np.flatnonzero((wb != dm["bytes_served"]) | (ws != dm["segments"]))[:SHOWN_PER_KIND]:
        ctx.bad(
            e, name, "watermark does not continue from the closes before",
            f"{wb[i]} bytes, {ws[i]} segments", f"{dm['bytes_served'][i]} bytes, {dm['segments'][i]} segments",
            line=int(i) + 1, account=to_hex(dm["viewer"][i]),
            receipt=f"{to_hex(dm['session_id'][i])}/node {to_hex(dm['node'][i])}",
        )  # fmt: skip
    # every line's session is credited; every key of a credited session is there
    _, in_s = lookup(skeys, key(dm["viewer"], dm["session_id"]))
    for i in np.flatnonzero(~in_s)[:SHOWN_PER_KIND]:
        ctx.bad(e, name, "watermark line of a session with no included key", line=int(i) + 1,
                 account=to_hex(dm["viewer"][i]), receipt=to_hex(dm["session_id"][i]))  # fmt: skip
    if len(state.dm_keys) and len(skeys):
        prefix = _prefix(state.dm_keys, 52)
        _, of_credited = lookup(skeys, prefix)
        need = state.dm_keys[of_credited]
        _, there = lookup(np.sort(mkeys), need)
        for k in need[~there][:SHOWN_PER_KIND]:
            raw = k.ljust(72, b"\0")
            ctx.bad(
                e, name, "a delivery key of a credited session is missing (its watermark counts in segments_cum)",
                "a line", "none", account="0x" + raw[:20].hex(),
                receipt=f"0x{raw[20:52].hex()}/node 0x{raw[52:].hex()}",
            )  # fmt: skip
    dkeys = np.sort(key(d["viewer"], d["session_id"], d["node"]))
    _, has_mark = lookup(np.sort(mkeys), dkeys)
    if (~has_mark).any():
        ctx.bad(e, name, "an included delivery key has no previous-watermark line",
                 "a line per delivery receipt", f"{int((~has_mark).sum())} missing")  # fmt: skip
    # view_watermarks
    name = dataset.VIEW_WATERMARKS
    vkeys = key(vm["viewer"], vm["session_id"])
    at, found = lookup(state.vm_keys, vkeys)
    pw = np.where(found, state.vm_watch[at] if len(state.vm_watch) else U64(0), U64(0))
    pc = np.where(found, state.vm_credited[at] if len(state.vm_credited) else U64(0), U64(0))
    for i in np.flatnonzero((pw != vm["watch_seconds"]) | (pc != vm["credited"]))[:SHOWN_PER_KIND]:
        ctx.bad(
            e, name, "view watermark or credited does not continue from the closes before",
            f"watchSeconds {pw[i]}, credited {pc[i]}",
            f"watchSeconds {vm['watch_seconds'][i]}, credited {vm['credited'][i]}",
            line=int(i) + 1, account=to_hex(vm["viewer"][i]), receipt=to_hex(vm["session_id"][i]),
        )  # fmt: skip
    if len(vkeys) != len(skeys) or not np.array_equal(np.sort(vkeys), skeys):
        ctx.bad(
            e, name, "one line per session with an included key",
            f"{len(skeys)} sessions", f"{len(vkeys)} lines",
        )  # fmt: skip


def recompute_credit(
    ctx: Context,
    e: int,
    d: dict[str, np.ndarray],
    v: dict[str, np.ndarray],
    dm: dict[str, np.ndarray],
    vm: dict[str, np.ndarray],
    sessions: Cols,
    clock: EpochClock,
    rparams: RewardParams,
) -> credit.CloseCredit | None:
    """PROTOCOL 4 by `domain.credit`, as the close runs it: the published receipts are
    the candidates; a key with a watermark line and no receipt is not included, its
    candidate standing at its watermark."""
    nd, nv = len(d["viewer"]), len(v["viewer"])
    mkeys = key(dm["viewer"], dm["session_id"], dm["node"])
    _, has = lookup(np.sort(key(d["viewer"], d["session_id"], d["node"])), mkeys)
    extra = np.flatnonzero(~has)
    deliveries = Cols(
        viewer=np.concatenate([d["viewer"], dm["viewer"][extra]]),
        session_id=np.concatenate([d["session_id"], dm["session_id"][extra]]),
        node=np.concatenate([d["node"], dm["node"][extra]]),
        bucket=np.concatenate([d["bucket"], np.full(len(extra), e, U64)]),
        bytes_served=np.concatenate([d["bytes_served"], dm["bytes_served"][extra]]),
        segments=np.concatenate([d["segments"], dm["segments"][extra]]),
    )
    vkeys = key(vm["viewer"], vm["session_id"])
    _, has = lookup(np.sort(key(v["viewer"], v["session_id"])), vkeys)
    extra = np.flatnonzero(~has)
    views = Cols(
        viewer=np.concatenate([v["viewer"], vm["viewer"][extra]]),
        session_id=np.concatenate([v["session_id"], vm["session_id"][extra]]),
        bucket=np.concatenate([v["bucket"], np.full(len(extra), e, U64)]),
        watch_seconds=np.concatenate([v["watch_seconds"], vm["watch_seconds"][extra]]),
    )
    delivery_marks = Cols(
        viewer=dm["viewer"], session_id=dm["session_id"], node=dm["node"],
        bytes_served=dm["bytes_served"], segments=dm["segments"],
    )  # fmt: skip
    view_marks = Cols(
        viewer=vm["viewer"], session_id=vm["session_id"],
        watch_seconds=vm["watch_seconds"], credited=vm["credited"],
    )  # fmt: skip
    cc = credit.credit_epoch(
        deliveries, views, sessions, delivery_marks, view_marks,
        now=clock.cutoff(e), segment_seconds=rparams.segment_seconds,
    )  # fmt: skip
    # Every published receipt is an included key's candidate (section 4).
    dk = cc.delivery
    real = dk.row < nd
    for i in np.flatnonzero(real & ~dk.included)[:SHOWN_PER_KIND]:
        row = int(dk.row[i])
        ctx.bad(
            e, dataset.DELIVERY_RECEIPTS, "published receipt is not above its watermark (not included)",
            f"above {dk.mark_bytes[i]} bytes, {dk.mark_segments[i]} segments",
            f"{dk.bytes_served[i]} bytes, {dk.segments[i]} segments", line=row + 1,
            account=to_hex(d["viewer"][row]), receipt=f"{to_hex(d['session_id'][row])}/node {to_hex(d['node'][row])}",
        )  # fmt: skip
    if int(real.sum()) != nd:
        ctx.bad(
            e,
            dataset.DELIVERY_RECEIPTS,
            "receipts of sessions the close could not credit",
            nd,
            int(real.sum()),
        )
    vk = cc.view
    real = vk.row < nv
    for i in np.flatnonzero(real & ~vk.included)[:SHOWN_PER_KIND]:
        row = int(vk.row[i])
        ctx.bad(
            e, dataset.VIEW_RECEIPTS, "published receipt is not above its watermark (not included)",
            f"above {vk.mark_watch[i]} s", f"{v['watch_seconds'][row]} s", line=row + 1,
            account=to_hex(v["viewer"][row]), receipt=to_hex(v["session_id"][row]),
        )  # fmt: skip
    return cc


def check_allocations(
    ctx: Context, e: int, files: dict[str, Path], allocations: dict[str, dict[bytes, int]]
) -> None:
    name = dataset.ALLOCATIONS
    rows = sorted((a, cls, amount) for cls in CLASSES for a, amount in allocations[cls].items())
    want = "".join(dataset.allocation_line(a, cls, amount) for a, cls, amount in rows).encode()
    got = files[name].read_bytes()
    if want == got:
        return
    expected = {("0x" + a.hex(), cls): amount for a, cls, amount in rows}
    seen: set[tuple[str, str]] = set()
    for i, raw in enumerate(got.split(b"\n")[:-1], 1):
        try:
            o = orjson.loads(raw)
            k = (o["account"], o["class"])
            amount = int(o["amount"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            ctx.bad(e, name, "line is malformed", line=i)
            continue
        seen.add(k)
        if k not in expected:
            ctx.bad(e, name, f"account earns nothing in class {k[1]} by the recomputation",
                     "no line", amount, line=i, account=k[0])  # fmt: skip
        elif expected[k] != amount:
            ctx.bad(e, name, f"{k[1]} allocation differs from the recomputation",
                     expected[k], amount, line=i, account=k[0])  # fmt: skip
    for k, amount in expected.items():
        if k not in seen:
            ctx.bad(e, name, f"{k[1]} allocation missing", amount, "no line", account=k[0])
    if {k for k in expected} == seen:
        ctx.bad(e, name, "file differs from the recomputation's bytes (order or form)",
                 hashlib.sha256(want).hexdigest(), hashlib.sha256(got).hexdigest())  # fmt: skip


def advance_marks(state: State, cc: credit.CloseCredit) -> None:
    dw = cc.delivery_watermarks().all()
    k = np.concatenate([state.dm_keys, key(dw["viewer"], dw["session_id"], dw["node"])])
    state.dm_keys, state.dm_bytes, state.dm_segs = max_per_key(
        k,
        np.concatenate([state.dm_bytes, dw["bytes_served"].astype(U64)]),
        np.concatenate([state.dm_segs, dw["segments"].astype(U64)]),
    )
    vw = cc.view_watermarks().all()
    k = np.concatenate([state.vm_keys, key(vw["viewer"], vw["session_id"])])
    state.vm_keys, state.vm_watch, state.vm_credited = max_per_key(
        k,
        np.concatenate([state.vm_watch, vw["watch_seconds"].astype(U64)]),
        np.concatenate([state.vm_credited, vw["credited"].astype(U64)]),
    )


def _prefix(keys: np.ndarray, width: int) -> np.ndarray:
    n = len(keys)
    raw = np.zeros((n, keys.dtype.itemsize), np.uint8)
    if n:
        raw[:] = keys.view(np.uint8).reshape(n, keys.dtype.itemsize)
    return key(raw[:, :width])

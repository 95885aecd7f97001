"""Receipts and signatures: key order, the registry snapshots, the quarantine's evidence
(each pair of signed receipts verified and shown to conflict), and the sessions credited."""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import numpy as np
import orjson

from settlement.domain import dataset
from settlement.domain.columns import U64, Cols, key, lookup
from settlement.domain.receipts import Params, Rejected, verify
from settlement.domain.wire import parse_wire
from settlement.errors import InputError, MalformedReceipt
from settlement.services.audit.context import MAX64, Context, from_hex
from settlement.services.audit.report import SHOWN_PER_KIND


def check_sorted(ctx: Context, e: int, name: str, keys: np.ndarray) -> None:
    if len(keys) > 1:
        bad = np.flatnonzero(~(keys[1:] > keys[:-1]))
        if len(bad):
            ctx.bad(
                e,
                name,
                "lines are not in ascending key order, or repeat a key",
                line=int(bad[0]) + 2,
            )


def registries(
    ctx: Context, e: int, files: dict[str, Path], allowlist: bool
) -> tuple[set[bytes], list[tuple[bytes, bytes]], list[bytes]]:
    nodes: set[bytes] = set()
    content: list[tuple[bytes, bytes]] = []
    viewers: list[bytes] = []
    checks: tuple[tuple[str, Callable[[dict[str, Any]], str], Callable[[dict[str, Any]], str]], ...] = (
        (dataset.REGISTRY_NODES,
         lambda o: dataset.node_line(from_hex(o["address"]), o["label"], o["active"]),
         lambda o: o["address"]),
        (dataset.REGISTRY_CONTENT,
         lambda o: dataset.content_line(from_hex(o["contentId"]), from_hex(o["creator"])),
         lambda o: o["contentId"]),
        (dataset.REGISTRY_VIEWERS, lambda o: dataset.viewer_line(from_hex(o["address"])),
         lambda o: o["address"]),
    )  # fmt: skip
    for name, fmt, sort_key in checks:
        data = files[name].read_bytes()
        fast = _fixed_registry(name, data)
        if fast is not None:
            if name == dataset.REGISTRY_CONTENT:
                content = fast
            else:
                viewers = fast
            continue
        previous = None
        for i, raw in enumerate(data.split(b"\n")[:-1], 1):
            try:
                o = orjson.loads(raw)
                line = fmt(o)
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as error:
                ctx.bad(e, name, f"line is malformed: {error}", line=i)
                continue
            if line.encode() != raw + b"\n":
                ctx.bad(
                    e,
                    name,
                    "line is not in canonical form",
                    line.rstrip("\n"),
                    raw.decode(errors="replace"),
                    line=i,
                )
            k = sort_key(o)
            if previous is not None and not k > previous:
                ctx.bad(e, name, "lines are not in ascending key order, or repeat a key", line=i)
            previous = k
            if name == dataset.REGISTRY_NODES:
                nodes.add(from_hex(o["address"]))
            elif name == dataset.REGISTRY_CONTENT:
                content.append((from_hex(o["contentId"]), from_hex(o["creator"])))
            else:
                viewers.append(from_hex(o["address"]))
    return nodes, content, viewers


# The registries of fixed-width lines, checked whole by one regular expression (their lines
# are the canonical form by construction) and sliced; others are read line by line.
_FIXED: Final = {
    dataset.REGISTRY_VIEWERS: re.compile(rb'(?:\{"address":"0x[0-9a-f]{40}"\}\n)*'),
    dataset.REGISTRY_CONTENT: re.compile(
        rb'(?:\{"contentId":"0x[0-9a-f]{64}","creator":"0x[0-9a-f]{40}"\}\n)*'
    ),
}


def _fixed_registry(name: str, data: bytes) -> list[Any] | None:
    """The rows of a fixed-width registry file whose lines are all canonical and ascending,
    else None (the caller reads it line by line and names the faulty lines)."""
    pattern = _FIXED.get(name)
    if pattern is None or pattern.fullmatch(data) is None:
        return None
    lines = data.split(b"\n")[:-1]
    if any(b <= a for a, b in itertools.pairwise(lines)):
        return None
    if name == dataset.REGISTRY_VIEWERS:
        return [bytes.fromhex(line[14:54].decode()) for line in lines]
    return [
        (bytes.fromhex(line[16:80].decode()), bytes.fromhex(line[95:135].decode()))
        for line in lines
    ]


def quarantine(ctx: Context, e: int, files: dict[str, Path], params: Params) -> set[bytes]:
    """The quarantined sessions (viewer + sessionId), each shown by two valid signed
    receipts that conflict (PROTOCOL 3). Each close republishes the whole set: a line
    is judged once and its findings repeated for every epoch that publishes it."""
    out: set[bytes] = set()
    name = dataset.QUARANTINE
    for i, raw in enumerate(files[name].read_bytes().split(b"\n")[:-1], 1):
        memo = (raw, params)
        found = ctx.evidence.get(memo)
        if found is None:
            found = ctx.evidence[memo] = _judge_evidence(ctx, raw, params)
        session, account, receipt, problems = found
        if session is not None:
            out.add(session)
        for what, expected, got in problems:
            ctx.bad(e, name, what, expected, got, line=i, account=account, receipt=receipt)
    return out


def _judge_evidence(
    ctx: Context, raw: bytes, params: Params
) -> tuple[bytes | None, str | None, str | None, list[tuple[str, str | None, str | None]]]:
    """(session key, viewer, sessionId, problems) of one quarantine line."""
    problems: list[tuple[str, str | None, str | None]] = []
    try:
        o = orjson.loads(raw)
        viewer, sid = from_hex(o["viewer"]), from_hex(o["sessionId"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None, None, None, [("line is malformed", None, None)]
    if dataset.canonical_bytes(o) != raw:
        problems.append(("line is not in canonical form", None, None))
    receipts = []
    for side in ("evidenceStored", "evidenceReceived"):
        ev = o.get(side)
        if ev is None:
            problems.append(
                (f"quarantine without evidence: {side} is null", "a signed receipt", "null")
            )
            continue
        try:
            r = parse_wire(ev)
        except (MalformedReceipt, InputError) as error:
            problems.append((f"{side} is not a receipt: {error}", None, None))
            continue
        if r.viewer != viewer or r.session_id != sid:
            problems.append((f"{side} is of another session", None, None))
        verdict = verify(r, ctx.domain, params, r.issued_at)
        if type(verdict) is Rejected:
            problems.append(
                (
                    f"{side} fails {verdict.reason.value}: {verdict.detail}",
                    "a valid signature",
                    verdict.reason.value,
                )
            )
        receipts.append(r)
    if len(receipts) == 2 and not conflict(*receipts):
        problems.append(("the two evidence receipts do not conflict", None, None))
    return viewer + sid, o["viewer"], o["sessionId"], problems


def conflict(a: Any, b: Any) -> bool:
    """Two receipts of one session that PROTOCOL 3 calls a CONFLICT."""
    if a.content_id != b.content_id or a.started_at != b.started_at:
        return True
    if a.kind == "delivery" and b.kind == "delivery" and a.node == b.node:
        up = (a.bytes_served > b.bytes_served, a.segments_served > b.segments_served)
        down = (a.bytes_served < b.bytes_served, a.segments_served < b.segments_served)
        return any(up) and any(down)
    return False


def check_sessions(
    ctx: Context,
    e: int,
    d: dict[str, np.ndarray],
    v: dict[str, np.ndarray],
    quarantined: set[bytes],
) -> Cols:
    """The sessions of the published receipts: one contentId and startedAt each."""
    viewer = np.concatenate([d["viewer"], v["viewer"]])
    sid = np.concatenate([d["session_id"], v["session_id"]])
    cid = np.concatenate([d["content_id"], v["content_id"]])
    started = np.concatenate([d["started_at"], v["started_at"]])
    skeys = key(viewer, sid)
    order = np.argsort(skeys, kind="stable")
    sk = skeys[order]
    first = np.ones(len(sk), bool)
    first[1:] = sk[1:] != sk[:-1]
    group = np.cumsum(first) - 1
    rep = order[first][group]  # each row's session's first row
    differs = (cid[order] != cid[rep]).any(axis=1) | (started[order] != started[rep])
    nd = len(d["viewer"])
    for i in np.flatnonzero(differs)[:SHOWN_PER_KIND]:
        row = int(order[i])
        name = dataset.DELIVERY_RECEIPTS if row < nd else dataset.VIEW_RECEIPTS
        ctx.bad(
            e, name, "receipts of one session name another contentId or startedAt (a CONFLICT)",
            line=(row if row < nd else row - nd) + 1, account="0x" + viewer[row].tobytes().hex(),
            receipt="0x" + sid[row].tobytes().hex(),
        )  # fmt: skip
    if quarantined:
        q = np.array(sorted(quarantined), dtype="S52")
        _, hit = lookup(q, sk[first])
        for i in np.flatnonzero(hit)[:SHOWN_PER_KIND]:
            row = int(order[first][i])
            ctx.bad(
                e, dataset.DELIVERY_RECEIPTS if row < nd else dataset.VIEW_RECEIPTS,
                "a quarantined session is credited", "no receipt", "a receipt",
                account="0x" + viewer[row].tobytes().hex(), receipt="0x" + sid[row].tobytes().hex(),
            )  # fmt: skip
    rows = order[first]
    return Cols(
        viewer=viewer[rows],
        session_id=sid[rows],
        content_id=cid[rows],
        started_at=started[rows],
        quarantined_at=np.full(len(rows), MAX64, U64),
    )

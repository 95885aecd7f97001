"""The run: the manifests found from the chain's proposals and the source, put in publication
order by their prevManifestHash chain, each audited, then the chain checked against them."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import orjson

from settlement.domain import dataset
from settlement.errors import InputError
from settlement.services.audit.chain import ChainView
from settlement.services.audit.context import (
    ZERO,
    Context,
    Manifest,
    Progress,
    State,
    int_or_zero,
)
from settlement.services.audit.epoch import audit_epoch
from settlement.services.audit.events import check_chain
from settlement.services.audit.report import AuditReport, EpochSummary
from settlement.services.audit.sources import DataSource, open_source, split_data_uri
from settlement.services.audit.tree import audit_correction


def audit(
    source: DataSource | None,
    chain: ChainView,
    epochs: Iterable[int] | None = None,
    progress: Progress | None = None,
    *,
    workers: int | None = None,
) -> AuditReport:
    """Audit `chain`'s roots against the datasets in `source` (None: each proposal's
    dataURI). See the package docstring."""
    ctx = Context(source, chain, epochs, progress, workers)
    try:
        return _run(ctx)
    finally:
        for opened in ctx.sources.values():  # the HTTP downloads it made itself
            close = getattr(opened, "close", None)
            if close is not None:
                close()


def _run(ctx: Context) -> AuditReport:
    t0 = time.perf_counter()
    ctx.progress("reading the chain", 0, 1)
    events = ctx.chain.events(refresh=True)  # a watchtower reuses its ChainView
    proposals = [e for e in events if e.name in ("RootProposed", "CorrectionProposed")]
    latest_uri = proposals[-1].args["dataURI"] if proposals else None
    source = _source_of(ctx, latest_uri)
    manifests: dict[str, Manifest] = {}

    def add(m: Manifest | None) -> None:
        if m is not None:
            manifests.setdefault(m.data_hash, m)

    for p in proposals:
        try:
            _, rel = split_data_uri(p.args["dataURI"])
        except InputError as error:
            ctx.bad(p.args["epoch"], "chain", str(error))
            continue
        m = _load(ctx, _source_of(ctx, p.args["dataURI"]), rel)
        if m is not None:
            ctx.at_uri[(p.block_number, p.log_index)] = m
            if m.data_hash != p.args["dataHash"]:
                ctx.bad(
                    m.epoch, rel,
                    f"keccak256(manifest.json) differs from the dataHash of {p.name} "
                    f"(block {p.block_number})",
                    p.args["dataHash"], m.data_hash,
                )  # fmt: skip
        if m is None:
            ctx.bad(
                p.args["epoch"], rel, "the manifest a proposal names is not published",
                p.args["dataHash"], "no file",
            )  # fmt: skip
            continue
        add(m)
    top = max((p.args["epoch"] for p in proposals), default=0)
    e = 1
    while True:
        m = _load(ctx, source, f"epoch-{e:08d}/{dataset.MANIFEST}")
        if m is None and e > top:
            break
        add(m)
        e += 1
    for rel in source.list_corrections():
        add(_load(ctx, source, rel))
    chain = _order(ctx, manifests, proposals)
    ctx.progress("auditing", 0, len(chain))
    state = State()
    last_full = max(ctx.only) if ctx.only else None
    summaries: dict[str, EpochSummary] = {}
    for i, m in enumerate(chain):
        if last_full is not None and m.epoch > last_full:
            break
        t = time.perf_counter()
        before = len(ctx.report.mismatches) + ctx.report.suppressed
        ctx.inside = True
        full = ctx.only is None or m.epoch in ctx.only
        summary = EpochSummary(
            m.epoch,
            m.kind,
            m.data_hash,
            str(m.doc.get("root", "")),
            int_or_zero(m.doc.get("cumulativeTotal")),
        )
        if m.kind == "epoch":
            audit_epoch(ctx, source, m, state, summary, full)
        else:
            audit_correction(ctx, source, m, state, summary, events)
        summary.seconds = time.perf_counter() - t
        summary.mismatches = len(ctx.report.mismatches) + ctx.report.suppressed - before
        ctx.inside = False
        summaries[m.data_hash] = summary
        ctx.report.epochs.append(summary)
        ctx.progress(f"{m.kind} {m.epoch}", i + 1, len(chain))
    check_chain(ctx, events, manifests, summaries, state)
    for epoch, count in ctx.outside.items():
        mine = [x for x in ctx.report.epochs if x.epoch == epoch]
        mine.sort(key=lambda x: x.kind != "epoch")
        if mine:
            mine[0].mismatches += count
    ctx.report.seconds = time.perf_counter() - t0
    return ctx.report


def _order(ctx: Context, manifests: dict[str, Manifest], proposals: list[Any]) -> list[Manifest]:
    """The manifests in publication order: the prevManifestHash chain from the newest
    back to the first, each link checked."""
    if not manifests:
        return []
    named = {str(m.doc.get("prevManifestHash", "")) for m in manifests.values()}
    heads = [m for h, m in manifests.items() if h not in named]
    # The newest: the head whose chain holds the latest proposal, else the highest epoch.
    latest = proposals[-1].args["dataHash"] if proposals else None
    chains = []
    for head in heads:
        seq = [head]
        seen = {head.data_hash}
        while True:
            prev = str(seq[-1].doc.get("prevManifestHash", ""))
            if prev == ZERO or prev not in manifests or prev in seen:
                break
            seen.add(prev)
            seq.append(manifests[prev])
        chains.append(seq)
    chains.sort(key=lambda s: (latest in {m.data_hash for m in s}, s[0].epoch, len(s)))
    best = chains[-1] if chains else []
    best.reverse()
    on_chain = {m.data_hash for m in best}
    first = best[0] if best else None
    if first is not None:
        prev = str(first.doc.get("prevManifestHash", ""))
        if prev != ZERO:
            # Which manifest it should have named: the one published just before it.
            want = _expected_prev(first, manifests)
            ctx.bad(
                first.epoch, first.relpath,
                "broken manifest chain: prevManifestHash names no published manifest",
                want, prev,
            )  # fmt: skip
    rest = sorted(
        (m for h, m in manifests.items() if h not in on_chain),
        key=lambda m: (m.epoch, m.kind == "correction"),
    )
    for m in rest:
        ctx.bad(
            m.epoch, m.relpath,
            "manifest is not on the prevManifestHash chain of the newest manifest",
            None, m.data_hash,
        )  # fmt: skip
    # Audit them too, in epoch order before the chain they failed to join.
    merged = sorted(rest + best, key=lambda m: (m.epoch, m.kind == "correction"))
    return merged if rest else best


def _expected_prev(m: Manifest, manifests: dict[str, Manifest]) -> str:
    """The manifests that may have been published just before `m`: for an epoch's, the
    epoch before's or a correction at it; for a correction's, its epoch's or another
    correction at it."""
    if m.kind == "epoch" and m.epoch == 1:
        return ZERO
    at = m.epoch - 1 if m.kind == "epoch" else m.epoch
    options = [
        f"{o.data_hash} ({o.kind} {o.epoch})"
        for o in manifests.values()
        if o.epoch == at and o is not m
    ]
    return " or ".join(options) or f"a manifest of epoch {at}"


def _source_of(ctx: Context, uri: str | None) -> DataSource:
    if ctx.source is not None:
        return ctx.source
    if uri is None:
        raise InputError("no --data and no proposal on chain: nothing says where the data is")
    base, _ = split_data_uri(uri)
    if base not in ctx.sources:
        ctx.sources[base] = open_source(base)
    return ctx.sources[base]


def _read(source: DataSource, relpath: str) -> bytes | None:
    path = source.fetch(relpath)
    return None if path is None else path.read_bytes()


def _load(ctx: Context, source: DataSource, relpath: str) -> Manifest | None:
    raw = _read(source, relpath)
    if raw is None:
        return None
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        doc = None
    if type(doc) is not dict:
        ctx.bad(None, relpath, "manifest is not a JSON object")
        doc = {}
    return Manifest(relpath, raw, doc, "0x" + dataset.data_hash(raw).hex())

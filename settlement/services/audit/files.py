"""Files and manifests: each data file a manifest lists, fetched and checked against its entry
(sha256, size, rows); the four big files parsed, and their receipts verified, on every core."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import numpy as np

from settlement import parallel
from settlement.domain import dataset, published
from settlement.domain.columns import U64
from settlement.domain.epochs import EpochClock
from settlement.domain.receipts import Domain, Params
from settlement.services.audit.context import Context, Manifest
from settlement.services.audit.report import SHOWN_PER_KIND
from settlement.services.audit.sources import DataSource

_PART_BYTES: Final = 16 << 20  # a verify task's share of a big file
_INLINE_BYTES: Final = 2 << 20  # below this the files are parsed and verified here
_DROPPED: Final = "(problems of the same kinds, counted)"
BIG: Final = (
    dataset.DELIVERY_RECEIPTS,
    dataset.VIEW_RECEIPTS,
    dataset.DELIVERY_WATERMARKS,
    dataset.VIEW_WATERMARKS,
)
EPOCH_FILES: Final = frozenset(
    (
        *BIG,
        dataset.QUARANTINE,
        dataset.REGISTRY_NODES,
        dataset.REGISTRY_CONTENT,
        dataset.REGISTRY_VIEWERS,
        dataset.ALLOCATIONS,
    )
)


def check_files(
    ctx: Context, source: DataSource, m: Manifest, wanted: frozenset[str], tree: bool
) -> dict[str, Path]:
    """The manifest's data files, each checked against its entry (sha256, size, rows)."""
    e = m.epoch
    out: dict[str, Path] = {}
    files = m.doc.get("files")
    if type(files) is not list:
        ctx.bad(e, dataset.MANIFEST, "manifest has no files list")
        return out
    names = [f.get("name") if type(f) is dict else None for f in files]
    expected = sorted(wanted | ({dataset.TREE} if tree else set()))
    if names != expected:
        ctx.bad(e, dataset.MANIFEST, "files listed", expected, names)
    counts = m.doc.get("counts")
    if counts != {f["name"]: f["rows"] for f in files if type(f) is dict and "name" in f}:
        ctx.bad(e, dataset.MANIFEST, "counts differ from the files' rows")
    for f in files:
        if type(f) is not dict or f.get("name") not in expected:
            continue
        name = f["name"]
        ext = "json" if name == dataset.TREE else "ndjson"
        rel = f"{m.directory}/{f.get('sha256')}.{ext}"
        path = source.fetch(rel)
        if path is None:
            ctx.bad(e, name, "file is not published", rel, "no file")
            continue
        digest, size, lines = _digest(path)
        if digest != f.get("sha256"):
            ctx.bad(
                e, name, "sha256 of the file differs from the manifest", f.get("sha256"), digest
            )
        if str(size) != f.get("size"):
            ctx.bad(e, name, "size differs from the manifest", f.get("size"), size)
        if name != dataset.TREE and str(lines) != f.get("rows"):
            ctx.bad(e, name, "line count differs from the manifest's rows", f.get("rows"), lines)
        out[name] = path
    return out


def parse_big(
    ctx: Context, files: dict[str, Path], m: Manifest, params: Params, clock: EpochClock, full: bool
) -> dict[str, dict[str, np.ndarray]]:
    """The four big files as columns, parsed and (receipts, when `full`) verified on every
    core."""
    tasks: list[tuple[Any, ...]] = []
    owners: list[str] = []
    for name in BIG:
        path = files.get(name)
        if path is None:
            continue
        judged = full and name in (dataset.DELIVERY_RECEIPTS, dataset.VIEW_RECEIPTS)
        for start, end, first in _parts(path):
            tasks.append(
                (
                    str(path), start, end, first, name,
                    ctx.domain if judged else None, params if judged else None,
                    clock, m.epoch,
                )
            )  # fmt: skip
            owners.append(name)
    # Small datasets stay in this process: starting the pool costs more than it saves.
    small = sum(t[2] - t[1] for t in tasks) < _INLINE_BYTES
    results = parallel.map_tasks(_parse_part, tasks, workers=1 if small else ctx.workers)
    parts: dict[str, list[dict[str, np.ndarray]]] = {n: [] for n in BIG}
    for name, (cols, problems) in zip(owners, results, strict=True):
        parts[name].append(cols)
        for line, what, expected, found, account, receipt in problems:
            if what == _DROPPED:
                ctx.report.suppressed += int(found or 0)
                continue
            ctx.bad(
                m.epoch,
                name,
                what,
                expected,
                found,
                line=line,
                account=account,
                receipt=receipt,
            )
    out: dict[str, dict[str, np.ndarray]] = {}
    for name in BIG:
        out[name] = _concat(parts[name], name)
    return out


def _parse_part(
    path: str,
    start: int,
    end: int,
    first_line: int,
    name: str,
    domain: Domain | None,
    params: Params | None,
    clock: EpochClock | None,
    epoch: int,
) -> tuple[dict[str, np.ndarray], list[published.Problem]]:
    """One task of the verify pool: a byte range of whole lines of a published file. Of
    its problems only the first few of each kind cross back (a dataset of another domain
    fails every line): the rest are counted, as a last problem of line 0."""
    with open(path, "rb") as f:
        f.seek(start)
        data = f.read(end - start)
    cols, problems = published.parse_chunk(name, data, first_line, domain, params, clock, epoch)
    kept: list[published.Problem] = []
    per_kind: dict[str, int] = {}
    dropped = 0
    for p in problems:
        kind = p[1].split(":")[0]
        per_kind[kind] = per_kind.get(kind, 0) + 1
        if per_kind[kind] <= SHOWN_PER_KIND:
            kept.append(p)
        else:
            dropped += 1
    if dropped:
        kept.append((0, _DROPPED, None, str(dropped), None, None))
    # Verified here: the signatures (a third of a receipt's bytes) need not cross back.
    cols.pop("signature", None)
    return cols, kept


def _parts(path: Path) -> Iterator[tuple[int, int, int]]:
    """(start, end, first line) of ranges of whole lines, about _PART_BYTES each."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        start, line = 0, 1
        while start < size:
            f.seek(min(start + _PART_BYTES, size))
            f.readline()
            end = min(f.tell(), size)
            f.seek(start)
            lines = f.read(end - start).count(b"\n")
            yield start, end, line
            start, line = end, line + lines


def _digest(path: Path) -> tuple[str, int, int]:
    h = hashlib.sha256()
    size = lines = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
            size += len(chunk)
            lines += chunk.count(b"\n")
    return h.hexdigest(), size, lines


def _concat(parts: list[dict[str, np.ndarray]], name: str) -> dict[str, np.ndarray]:
    fields = [published.COLUMN[f] for f in published.FIELDS[name] if f != "signature"]
    if not parts:
        widths = {"viewer": 20, "node": 20, "session_id": 32, "content_id": 32, "signature": 65}
        return {
            f: np.zeros((0, widths[f]), np.uint8) if f in widths else np.zeros(0, U64)
            for f in fields
        }
    return {f: np.concatenate([p[f] for p in parts]) for f in fields}

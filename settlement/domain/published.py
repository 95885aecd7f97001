"""Reading a published dataset back (docs/protocol.md section 9), pure: a chunk of a big
file's lines in, columns and problems out, each line held to the very bytes the close's
formatter (`dataset.*_line`) gives its values, and each receipt judged by `receipts.verify`.

The auditor runs `parse_chunk` on every core (settlement.parallel.map_chunks): the
signature recovery is the costly step, exactly as at ingest. A problem is
`(line, what, expected, found, account, receipt)`, line numbers from 1.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Final

import numpy as np
import orjson

from settlement.domain import dataset
from settlement.domain.epochs import EpochClock
from settlement.domain.receipts import (
    DeliveryReceipt,
    Domain,
    Params,
    Rejected,
    ViewReceipt,
    verify,
)

Problem = tuple[int, str, str | None, str | None, str | None, str | None]

_DEC: Final = re.compile(r"^(0|[1-9][0-9]*)$")
_MAX64: Final = 2**64 - 1

# Per file: its fields, byte columns (name, width) and integer columns, by wire name.
_BYTES: Final = {"viewer": 20, "node": 20, "sessionId": 32, "contentId": 32, "signature": 65}
FIELDS: Final[dict[str, tuple[str, ...]]] = {
    dataset.DELIVERY_RECEIPTS: (
        "bucket", "bytesServed", "contentId", "issuedAt", "node", "segmentsServed",
        "sessionId", "signature", "startedAt", "viewer",
    ),
    dataset.VIEW_RECEIPTS: (
        "bucket", "contentId", "issuedAt", "sessionId", "signature", "startedAt", "viewer",
        "watchSeconds",
    ),
    dataset.DELIVERY_WATERMARKS: ("bytesServed", "node", "segmentsServed", "sessionId", "viewer"),
    dataset.VIEW_WATERMARKS: ("credited", "sessionId", "viewer", "watchSeconds"),
}  # fmt: skip
# Columns as `domain.credit` names them.
COLUMN: Final = {
    "viewer": "viewer",
    "node": "node",
    "sessionId": "session_id",
    "contentId": "content_id",
    "signature": "signature",
    "bucket": "bucket",
    "bytesServed": "bytes_served",
    "segmentsServed": "segments",
    "issuedAt": "issued_at",
    "startedAt": "started_at",
    "watchSeconds": "watch_seconds",
    "credited": "credited",
}
_UINT32: Final = frozenset({"segmentsServed", "watchSeconds", "credited"})

_FORMAT: Final[dict[str, Callable[..., str]]] = {
    dataset.DELIVERY_RECEIPTS: lambda v: dataset.delivery_line(
        v["viewer"], v["sessionId"], v["node"], v["contentId"], v["startedAt"],
        v["bytesServed"], v["segmentsServed"], v["issuedAt"], v["signature"], v["bucket"],
    ),
    dataset.VIEW_RECEIPTS: lambda v: dataset.view_line(
        v["viewer"], v["sessionId"], v["contentId"], v["startedAt"], v["watchSeconds"],
        v["issuedAt"], v["signature"], v["bucket"],
    ),
    dataset.DELIVERY_WATERMARKS: lambda v: dataset.delivery_mark_line(
        v["viewer"], v["sessionId"], v["node"], v["bytesServed"], v["segmentsServed"]
    ),
    dataset.VIEW_WATERMARKS: lambda v: dataset.view_mark_line(
        v["viewer"], v["sessionId"], v["watchSeconds"], v["credited"]
    ),
}  # fmt: skip


def _values(obj: Any, fields: tuple[str, ...]) -> tuple[dict[str, Any] | None, str]:
    """The line's values (bytes and ints), or None and why not."""
    if type(obj) is not dict or tuple(sorted(obj)) != fields:
        got = sorted(obj) if type(obj) is dict else type(obj).__name__
        return None, f"fields {got}, not {list(fields)}"
    out: dict[str, Any] = {}
    for name in fields:
        v = obj[name]
        if type(v) is not str:
            return None, f"{name} is not a string"
        width = _BYTES.get(name)
        if width is not None:
            if v[:2] != "0x" or len(v) != 2 + 2 * width:
                return None, f"{name} is not 0x + {2 * width} hex"
            try:
                out[name] = bytes.fromhex(v[2:])
            except ValueError:
                return None, f"{name} is not hex"
        else:
            if not _DEC.match(v):
                return None, f"{name} is not a decimal string"
            n = int(v)
            if n > (2**32 - 1 if name in _UINT32 else _MAX64):
                return None, f"{name} {v} is out of range"
            out[name] = n
    return out, ""


def _receipt_id(values: dict[str, Any]) -> str:
    node = values.get("node")
    sid = "0x" + values["sessionId"].hex()
    return sid if node is None else f"{sid}/node 0x{node.hex()}"


def parse_chunk(
    name: str,
    data: bytes,
    first_line: int,
    domain: Domain | None,
    params: Params | None,
    clock: EpochClock | None,
    epoch: int,
) -> tuple[dict[str, np.ndarray], list[Problem]]:
    """The lines of `data` (whole lines of file `name`, the first being line `first_line`)
    as columns, and their problems: not canonical, a receipt whose signature or section 3
    checks fail under `domain` and `params` (row 3 is judged with `now = issuedAt`: when a
    receipt arrived is not published), a bucket other than its `issuedAt`'s or after
    `epoch`. `domain` None: no receipt is judged (the marks files have none)."""
    fields = FIELDS[name]
    fmt = _FORMAT[name]
    receipts = name in (dataset.DELIVERY_RECEIPTS, dataset.VIEW_RECEIPTS)
    cols: dict[str, list[Any]] = {f: [] for f in fields}
    problems: list[Problem] = []
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    loads = orjson.loads
    for i, raw in enumerate(lines):
        at = first_line + i
        try:
            obj = loads(raw)
        except orjson.JSONDecodeError:
            problems.append(
                (at, "line is not JSON", None, raw[:80].decode(errors="replace"), None, None)
            )
            continue
        values, why = _values(obj, fields)
        if values is None:
            problems.append((at, f"line is malformed: {why}", None, None, None, None))
            continue
        account = "0x" + values["viewer"].hex()
        rid = _receipt_id(values)
        if fmt(values).encode() != raw + b"\n":
            problems.append(
                (
                    at,
                    "line is not in canonical form",
                    fmt(values).rstrip("\n"),
                    raw.decode(errors="replace"),
                    account,
                    rid,
                )
            )
        for f in fields:
            cols[f].append(values[f])
        if not receipts:
            continue
        if domain is not None and params is not None:
            issued = values["issuedAt"]
            r: DeliveryReceipt | ViewReceipt
            if name == dataset.DELIVERY_RECEIPTS:
                r = DeliveryReceipt(
                    values["sessionId"], values["viewer"], values["node"], values["contentId"],
                    values["startedAt"], values["bytesServed"], values["segmentsServed"],
                    issued, values["signature"],
                )  # fmt: skip
            else:
                r = ViewReceipt(
                    values["sessionId"], values["viewer"], values["contentId"],
                    values["startedAt"], values["watchSeconds"], issued, values["signature"],
                )  # fmt: skip
            verdict = verify(r, domain, params, issued)
            if type(verdict) is Rejected:
                problems.append(
                    (at, f"receipt fails {verdict.reason.value}: {verdict.detail}", "accepted",
                     verdict.reason.value, account, rid)
                )  # fmt: skip
        if clock is not None:
            bucket = values["bucket"]
            try:
                want = clock.bucket(values["issuedAt"])
            except ValueError:
                want = 0
            if bucket != want:
                problems.append(
                    (
                        at,
                        "bucket is not the bucket of issuedAt",
                        str(want),
                        str(bucket),
                        account,
                        rid,
                    )
                )
            elif bucket > epoch:
                problems.append(
                    (
                        at,
                        "bucket is after the epoch closed",
                        f"<= {epoch}",
                        str(bucket),
                        account,
                        rid,
                    )
                )
    return _columns(fields, cols), problems


def _columns(fields: tuple[str, ...], cols: dict[str, list[Any]]) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for f in fields:
        width = _BYTES.get(f)
        values = cols[f]
        if width is not None:
            out[COLUMN[f]] = np.frombuffer(b"".join(values), np.uint8).reshape(len(values), width)
        else:
            out[COLUMN[f]] = np.array(values, dtype=np.uint64)
    return out


def parse_lines(data: bytes) -> list[dict[str, Any]]:
    """A small NDJSON file's objects (registries, allocations, quarantine...)."""
    return [orjson.loads(line) for line in data.split(b"\n") if line]

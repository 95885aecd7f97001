"""Reading a published dataset back (docs/protocol.md section 9), pure: a chunk of a big
file's lines in, columns and problems out, each line held to the very bytes the close's
formatter (`dataset.*_line`) gives its values, and each receipt judged by `receipts.verify`.

The auditor runs `parse_chunk` on every core (settlement.parallel.map_chunks): the
signature recovery is the costly step, exactly as at ingest. A problem is
`(line, what, expected, found, account, receipt)`, line numbers from 1.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Callable
from typing import Any, Final

import numpy as np
import orjson

from settlement.domain import dataset, dataset_columns
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


_POW10_DESC19: Final = np.array([10**k for k in range(18, -1, -1)], np.uint64)

_FAST_FORMAT: Final[dict[str, Callable[[dict[str, np.ndarray]], Any]]] = {
    dataset.DELIVERY_RECEIPTS: lambda c: dataset_columns.delivery_lines(
        c["viewer"], c["session_id"], c["node"], c["content_id"], c["started_at"],
        c["bytes_served"], c["segments"], c["issued_at"], c["signature"], c["bucket"],
    ),
    dataset.VIEW_RECEIPTS: lambda c: dataset_columns.view_lines(
        c["viewer"], c["session_id"], c["content_id"], c["started_at"], c["watch_seconds"],
        c["issued_at"], c["signature"], c["bucket"],
    ),
    dataset.DELIVERY_WATERMARKS: lambda c: dataset_columns.delivery_mark_lines(
        c["viewer"], c["session_id"], c["node"], c["bytes_served"], c["segments"]
    ),
    dataset.VIEW_WATERMARKS: lambda c: dataset_columns.view_mark_lines(
        c["viewer"], c["session_id"], c["watch_seconds"], c["credited"]
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
    `epoch`. `domain` None: no receipt is judged (the marks files have none).

    Column-wise first (numpy finds the fields, and the close's own formatter,
    `dataset_columns`, must give back these very bytes); a chunk that is not canonical is
    read again line by line, to name its lines."""
    cols = _fast_columns(name, data)
    if cols is None:
        return _parse_lines(name, data, first_line, domain, params, clock, epoch)
    problems: list[Problem] = []
    if name in (dataset.DELIVERY_RECEIPTS, dataset.VIEW_RECEIPTS):
        if domain is not None and params is not None:
            problems += _judge(name, cols, first_line, domain, params)
        if clock is not None:
            problems += _buckets(cols, first_line, clock, epoch)
    return cols, problems


def _fast_columns(name: str, data: bytes) -> dict[str, np.ndarray] | None:
    """The columns of canonical lines, or None when some line is not exactly what the
    close's formatter gives for its values."""
    fields = FIELDS[name]
    if not data:
        return _columns(fields, {f: [] for f in fields})
    if data[-1:] != b"\n":
        return None
    # 32 bytes before the data: a decimal's 20-byte window never starts before the buffer.
    padded = bytes(32) + data
    buf = np.frombuffer(padded, np.uint8)
    ends_of_lines = np.flatnonzero(buf == 10)
    n = len(ends_of_lines)
    quotes = np.flatnonzero(buf == 34)
    per = 4 * len(fields)  # each key and each value in quotes
    if len(quotes) != per * n:
        return None
    q = quotes.reshape(n, per)
    # Every line's quotes lie within it.
    if (q[:, -1] > ends_of_lines).any() or (n > 1 and (q[1:, 0] < ends_of_lines[:-1]).any()):
        return None
    starts = q[:, 2::4] + 1
    stops = q[:, 3::4]
    out: dict[str, np.ndarray] = {}
    for i, f in enumerate(fields):
        lo, hi = starts[:, i], stops[:, i]
        width = _BYTES.get(f)
        if width is not None:
            if ((hi - lo) != 2 + 2 * width).any():
                return None
            chars = _windows(padded, 2 * width)[lo + 2]
            try:  # upper-case digits pass here; the canonical check below refuses them
                raw = binascii.unhexlify(chars.tobytes())
            except binascii.Error:
                return None
            out[COLUMN[f]] = np.frombuffer(raw, np.uint8).reshape(n, width)
        else:
            size = hi - lo
            if ((size < 1) | (size > 20)).any():
                return None
            w = int(size.max())  # windows as wide as the chunk's longest value
            chars = _windows(padded, w)[hi - w].view(np.uint8).reshape(n, w)
            digits = chars - np.uint8(48)  # the bytes before a shorter value: masked next
            digits[np.arange(w) < (w - size)[:, None]] = 0
            if (digits > 9).any():
                return None
            limit = 2**32 - 1 if f in _UINT32 else _MAX64
            if w < 20:  # below 10**19: no uint64 overflow
                value = digits.astype(np.uint64) @ _POW10_DESC19[-w:]
                if limit < _MAX64 and (value > np.uint64(limit)).any():
                    return None
            else:
                d = digits.astype(np.uint64)
                high = d[:, :10] @ _POW10_DESC19[-10:]
                low = d[:, 10:] @ _POW10_DESC19[-10:]
                lh, ll = divmod(limit, 10**10)
                if (
                    (high > np.uint64(lh)) | ((high == np.uint64(lh)) & (low > np.uint64(ll)))
                ).any():
                    return None
                value = high * np.uint64(10**10) + low
            out[COLUMN[f]] = value
    # Canonical: the close's formatter gives back exactly these bytes.
    if b"".join(_FAST_FORMAT[name](out)) != data:
        return None
    return out


def _windows(data: bytes, width: int) -> np.ndarray:
    """Every `width`-byte window of `data`, one element each (a view: no copy); indexing it
    with the start offsets copies each field in one move."""
    return np.ndarray(
        shape=(len(data) - width + 1,), dtype=f"V{width}", buffer=data, offset=0, strides=(1,)
    )


def _judge(
    name: str, cols: dict[str, np.ndarray], first_line: int, domain: Domain, params: Params
) -> list[Problem]:
    """verify() of every receipt (row 3 at now = issuedAt), as ingest judged it."""
    problems: list[Problem] = []
    viewer = _rows(cols["viewer"])
    sid = _rows(cols["session_id"])
    cid = _rows(cols["content_id"])
    sig = _rows(cols["signature"])
    started = cols["started_at"].tolist()
    issued = cols["issued_at"].tolist()
    r: DeliveryReceipt | ViewReceipt
    if name == dataset.DELIVERY_RECEIPTS:
        node = _rows(cols["node"])
        served = cols["bytes_served"].tolist()
        segments = cols["segments"].tolist()
        for i in range(len(viewer)):
            r = DeliveryReceipt(
                sid[i], viewer[i], node[i], cid[i], started[i], served[i], segments[i],
                issued[i], sig[i],
            )  # fmt: skip
            verdict = verify(r, domain, params, issued[i])
            if type(verdict) is Rejected:
                problems.append(_rejected(first_line + i, verdict, viewer[i], sid[i], node[i]))
    else:
        watch = cols["watch_seconds"].tolist()
        for i in range(len(viewer)):
            r = ViewReceipt(sid[i], viewer[i], cid[i], started[i], watch[i], issued[i], sig[i])
            verdict = verify(r, domain, params, issued[i])
            if type(verdict) is Rejected:
                problems.append(_rejected(first_line + i, verdict, viewer[i], sid[i], None))
    return problems


def _rejected(
    line: int, verdict: Rejected, viewer: bytes, sid: bytes, node: bytes | None
) -> Problem:
    rid = "0x" + sid.hex() + ("" if node is None else f"/node 0x{node.hex()}")
    return (
        line,
        f"receipt fails {verdict.reason.value}: {verdict.detail}",
        "accepted",
        verdict.reason.value,
        "0x" + viewer.hex(),
        rid,
    )


def _buckets(
    cols: dict[str, np.ndarray], first_line: int, clock: EpochClock, epoch: int
) -> list[Problem]:
    issued, bucket = cols["issued_at"], cols["bucket"]
    want = np.zeros(len(issued), np.uint64)
    ok = issued >= np.uint64(clock.genesis)
    past = issued[ok] - np.uint64(clock.genesis)
    e = np.where(
        past >= np.uint64(clock.grace),
        (past - np.minimum(past, np.uint64(clock.grace))) // np.uint64(clock.length) + np.uint64(1),
        np.uint64(1),
    )
    want[ok] = e
    problems: list[Problem] = []
    for i in np.flatnonzero((want != bucket) | (bucket > np.uint64(epoch))).tolist():
        account = "0x" + cols["viewer"][i].tobytes().hex()
        rid = "0x" + cols["session_id"][i].tobytes().hex()
        if "node" in cols:
            rid += "/node 0x" + cols["node"][i].tobytes().hex()
        if want[i] != bucket[i]:
            problems.append(
                (first_line + i, "bucket is not the bucket of issuedAt", str(want[i]),
                 str(bucket[i]), account, rid)
            )  # fmt: skip
        else:
            problems.append(
                (first_line + i, "bucket is after the epoch closed", f"<= {epoch}",
                 str(bucket[i]), account, rid)
            )  # fmt: skip
    return problems


def _rows(matrix: np.ndarray) -> list[bytes]:
    n, width = matrix.shape
    raw = np.ascontiguousarray(matrix).tobytes()
    return [raw[i : i + width] for i in range(0, n * width, width)]


def _parse_lines(
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

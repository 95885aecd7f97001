"""The big dataset files (receipts and watermarks) formatted column-wise with numpy: byte for
byte the lines of `dataset.delivery_line`, `view_line`, `delivery_mark_line` and
`view_mark_line`, for 1,500,000 rows in well under a second where those take seconds.

Columns come as numpy arrays: byte strings as 2-D uint8 (a row a value, any width), integers
as 1-D unsigned (uint64: any value up to 2**64 - 1). Each function checks at once that all
columns have the same length, then lazily yields bytes objects of at most `chunk` whole lines
each, in row order; zero rows yield nothing.

A chunk is laid out as the rows of one uint8 matrix, a line a row: the constant pieces from a
template row, hex by table lookups two bytes at a time, each decimal right-aligned in a field
as wide as the chunk's longest value, with 0 bytes before the shorter ones. JSON has no 0
byte, so deleting them from the matrix's bytes leaves the lines.
"""

from __future__ import annotations

import binascii
from collections.abc import Iterator, Sequence
from typing import Final

import numpy as np
import numpy.typing as npt

U8 = npt.NDArray[np.uint8]
U64 = npt.NDArray[np.uint64]
Part = bytes | np.ndarray

# Rows a chunk. Chunks of a few MB stay in cache between the passes over them, and each yielded
# bytes object stays under glibc's 32 MiB mmap ceiling: 65,536 delivery lines (39 MB) would
# come in fresh pages every chunk, 400,000 page faults and +0.7 s for 1,500,000 lines.
CHUNK: Final = 8192


def delivery_lines(
    viewer: U8,
    session_id: U8,
    node: U8,
    content_id: U8,
    started_at: U64,
    bytes_served: U64,
    segments: U64,
    issued_at: U64,
    signature: U8,
    bucket: U64,
    *,
    chunk: int = CHUNK,
) -> Iterator[bytes]:
    return _lines(
        (
            b'{"bucket":"', bucket,
            b'","bytesServed":"', bytes_served,
            b'","contentId":"0x', content_id,
            b'","issuedAt":"', issued_at,
            b'","node":"0x', node,
            b'","segmentsServed":"', segments,
            b'","sessionId":"0x', session_id,
            b'","signature":"0x', signature,
            b'","startedAt":"', started_at,
            b'","viewer":"0x', viewer,
            b'"}\n',
        ),
        chunk,
    )  # fmt: skip


def view_lines(
    viewer: U8,
    session_id: U8,
    content_id: U8,
    started_at: U64,
    watch_seconds: U64,
    issued_at: U64,
    signature: U8,
    bucket: U64,
    *,
    chunk: int = CHUNK,
) -> Iterator[bytes]:
    return _lines(
        (
            b'{"bucket":"', bucket,
            b'","contentId":"0x', content_id,
            b'","issuedAt":"', issued_at,
            b'","sessionId":"0x', session_id,
            b'","signature":"0x', signature,
            b'","startedAt":"', started_at,
            b'","viewer":"0x', viewer,
            b'","watchSeconds":"', watch_seconds,
            b'"}\n',
        ),
        chunk,
    )  # fmt: skip


def delivery_mark_lines(
    viewer: U8,
    session_id: U8,
    node: U8,
    bytes_served: U64,
    segments: U64,
    *,
    chunk: int = CHUNK,
) -> Iterator[bytes]:
    return _lines(
        (
            b'{"bytesServed":"', bytes_served,
            b'","node":"0x', node,
            b'","segmentsServed":"', segments,
            b'","sessionId":"0x', session_id,
            b'","viewer":"0x', viewer,
            b'"}\n',
        ),
        chunk,
    )  # fmt: skip


def view_mark_lines(
    viewer: U8, session_id: U8, watch_seconds: U64, credited: U64, *, chunk: int = CHUNK
) -> Iterator[bytes]:
    return _lines(
        (
            b'{"credited":"', credited,
            b'","sessionId":"0x', session_id,
            b'","viewer":"0x', viewer,
            b'","watchSeconds":"', watch_seconds,
            b'"}\n',
        ),
        chunk,
    )  # fmt: skip


# -- internals -------------------------------------------------------------------------------

# Deleting the fillers: bytes.replace costs about 10 ns a filler, bytes.translate 0.45 ns a byte
# of the chunk; past one filler in 20 bytes the second is cheaper.
_REPLACE_MAX_SHARE: Final = 20


def _lines(parts: Sequence[Part], chunk: int) -> Iterator[bytes]:
    """Checks the columns now, not at the first next(), then formats lazily."""
    if chunk < 1:
        raise ValueError(f"chunk must be at least 1, not {chunk}")
    resolved: list[Part] = []
    lengths: set[int] = set()
    for p in parts:
        if not isinstance(p, bytes):
            p = _column(p)
            lengths.add(len(p))
        resolved.append(p)
    if len(lengths) > 1:
        raise ValueError(f"columns differ in length: {sorted(lengths)}")
    return _generate(resolved, lengths.pop() if lengths else 0, chunk)


def _column(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim == 2:
        if a.dtype != np.uint8:
            raise TypeError(f"byte columns are uint8 arrays, not {a.dtype}")
        return np.ascontiguousarray(a)  # a chunk is hexed as one flat run of bytes
    if a.ndim == 1:
        if a.dtype.kind != "u":
            raise TypeError(f"integer columns are unsigned arrays, not {a.dtype}")
        return a.astype(np.uint64, copy=False)
    raise ValueError(f"columns are 1-D (integers) or 2-D (bytes), not {a.ndim}-D")


def _generate(parts: list[Part], n: int, chunk: int) -> Iterator[bytes]:
    if n == 0:
        return
    decimals = [p for p in parts if isinstance(p, np.ndarray) and p.ndim == 1]
    fixed = len(_template(parts, (0,) * len(decimals)))  # the line less its decimals
    # One matrix for the whole call, each chunk a view of its first rows: chunks write into
    # warm pages instead of faulting in fresh ones.
    buf = np.empty(min(chunk, n) * (fixed + 20 * len(decimals)), np.uint8)
    layout: tuple[int, ...] = ()
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        m = stop - start
        # Fields as wide as the chunk's longest value: short values cost fillers only in the
        # chunks that also hold long ones.
        spans = [_span(x[start:stop]) for x in decimals]
        widths = tuple(hi for _, hi in spans)
        mat = buf[: m * (fixed + sum(widths))].reshape(m, -1)
        if widths != layout:
            # Columns overwrite only their own fields: the constant pieces stay while the
            # widths do.
            mat[:] = _template(parts, widths)
            layout = widths
        fillers = 0
        at = 0
        digits = iter(spans)
        for p in parts:
            if isinstance(p, bytes):
                at += len(p)
            elif p.ndim == 2:
                w = 2 * p.shape[1]
                if w:
                    _field(mat, at, w)[...] = _hex(p[start:stop]).view(f"V{w}")
                at += w
            else:
                lo, hi = next(digits)
                fillers += _decimal(p[start:stop], lo, hi, mat[:, at : at + hi])
                at += hi
        data = mat.tobytes()
        if fillers == 0:
            out = data
        elif fillers * _REPLACE_MAX_SHARE < len(data):
            out = data.replace(b"\0", b"")
        else:
            out = data.translate(None, b"\0")
        # Let go of the copy before the consumer has the chunk, and of the chunk before the
        # next one: buffers held across a yield leave malloc's free space in pieces.
        del data
        yield out
        del out


def _field(mat: U8, at: int, w: int) -> np.ndarray:
    """Columns at..at+w of each row as one w-byte element: numpy copies a row's piece in one
    move instead of looping over its bytes, twice as fast for a 130-byte signature."""
    return mat[:, at : at + w].view(f"V{w}")[:, 0]


def _template(parts: Sequence[Part], widths: tuple[int, ...]) -> U8:
    """One line, with 0 bytes where the columns go."""
    line = bytearray()
    it = iter(widths)
    for p in parts:
        if isinstance(p, bytes):
            line += p
        else:
            line += bytes(2 * p.shape[1] if p.ndim == 2 else next(it))
    return np.frombuffer(bytes(line), np.uint8)


def _hex(block: U8) -> np.ndarray:
    """Lowercase hex of the rows of `block`, as one flat array of 2 * block.size bytes."""
    flat = block.reshape(-1)
    if flat.size % 2:
        return np.frombuffer(binascii.hexlify(flat.data), np.uint8)
    # Two bytes a lookup in a 256 KiB table: twice as fast as binascii.hexlify.
    return _HEX2.take(flat.view("<u2"))


def _span(x: U64) -> tuple[int, int]:
    """The digit counts of the smallest and the largest value."""
    return len(str(int(x.min()))), len(str(int(x.max())))


def _decimal(x: U64, lo: int, hi: int, field: U8) -> int:
    """Writes x in decimal right-aligned into the (len(x), hi) view `field`, 0 bytes before
    the shorter values (the shortest has lo digits); returns the number of 0 bytes."""
    groups = (hi + 3) // 4
    rest = x
    # Four digits a step, from the right: one table lookup where single digits took four
    # divisions, the dearest numpy op here.
    for g in range(groups - 1):
        q = rest // _TEN4
        r = rest - q * _TEN4
        table = _QUADS
        if lo < 4 * (g + 1):
            # Some value is too short to fill these digits: where nothing is left above
            # them, the second half of the table gives fillers for the leading zeros.
            r += (q == 0) * _TEN4
            table = _QUADS_LOWEST if g == 0 else _QUADS_ABOVE
        _field(field, hi - 4 * g - 4, 4)[...] = table.take(r.view(np.int64))
        rest = q
    top = hi - 4 * (groups - 1)
    table = (_TOP_LOWEST if groups == 1 else _TOP_ABOVE)[top]
    _field(field, 0, top)[...] = table.take(rest.view(np.int64))
    # A value below 10**k has a filler in column hi - 1 - k (lo <= k < hi).
    return sum(int(np.count_nonzero(x < _POW10[k])) for k in range(lo, hi))


def _digit_table(t: int, padded: bool, zero: bytes = b"") -> np.ndarray:
    """0..10**t - 1 in decimal as t-byte elements: zero-padded, or right-aligned after 0
    bytes (0 itself then being `zero`)."""
    cells = [b"%0*d" % (t, i) if padded else (b"%d" % i).rjust(t, b"\0") for i in range(10**t)]
    if not padded:
        cells[0] = zero
    return np.frombuffer(b"".join(cells), f"V{t}")


_TEN4: Final = np.uint64(10_000)
_POW10: Final = tuple(np.uint64(10**k) for k in range(20))
_HEX1: Final = np.frombuffer(b"".join(b"%02x" % i for i in range(256)), np.uint16)
# Index b0 + 256 * b1 (a little-endian uint16 of two input bytes) -> hex of b0, then of b1.
_HEX2: Final = np.stack([np.tile(_HEX1, 256), np.repeat(_HEX1, 256)], axis=1).view(np.uint32)
# A group of four digits, by index: below 10**4 zero-padded; 10**4 + v the group a value
# ends in (v right-aligned after 0 bytes). 10**4 itself is the value 0 in the lowest group,
# all fillers above it. (bytes(3), not an implicit concatenation: ruff format 0.17 joins
# b"\0\0\0" b"0" into b"\0\0\00", a 3-byte octal escape.)
_QUADS: Final = _digit_table(4, padded=True)
_QUADS_LOWEST: Final = np.concatenate([_QUADS, _digit_table(4, False, bytes(3) + b"0")])
_QUADS_ABOVE: Final = np.concatenate([_QUADS, _digit_table(4, False, bytes(4))])
# The leftmost group of a field, 1 to 4 digits wide.
_TOP_LOWEST: Final = {t: _digit_table(t, False, bytes(t - 1) + b"0") for t in range(1, 5)}
_TOP_ABOVE: Final = {t: _digit_table(t, False, bytes(t)) for t in range(1, 5)}

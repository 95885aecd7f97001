"""Columns of stored rows as numpy arrays, and the keyed operations on them (sort, group,
sum exactly, pick a best row, look up) that the close's credit is built from.

Keys are the stored bytes (addresses, ids) side by side in one fixed-width `S` value per
row: numpy sorts and compares those as unsigned bytes, lexicographically, the order the
stores give bytea and BLOB keys and the published files use. Counters are `uint64`;
every sum is exact (`group_sum`): beyond 64 bits it falls back to Python integers.
"""

from __future__ import annotations

from typing import Any

import numpy as np

U64 = np.uint64
_LOW32 = np.uint64(0xFFFF_FFFF)


class Cols(dict[str, np.ndarray]):
    """Columns of one table, all of one length: bytes as (n, width) uint8, integers uint64."""

    def __len__(self) -> int:  # rows, not columns
        return 0 if not dict.__len__(self) else len(next(iter(self.values())))

    def take(self, rows: Any) -> Cols:
        return Cols({k: v[rows] for k, v in self.items()})

    def with_(self, **cols: np.ndarray) -> Cols:
        return Cols({**self, **cols})


def key(*cols: np.ndarray) -> np.ndarray:
    """The row keys: the byte columns side by side, one `S` value per row (a view of a single
    contiguous column, else a copy)."""
    n = cols[0].shape[0]
    if len(cols) == 1 and cols[0].flags.c_contiguous and cols[0].shape[1]:
        return cols[0].view(f"S{cols[0].shape[1]}").reshape(n)
    width = sum(c.shape[1] for c in cols)
    out = np.empty((n, width), np.uint8)
    at = 0
    for c in cols:
        out[:, at : at + c.shape[1]] = c
        at += c.shape[1]
    return out.view(f"S{width}").reshape(n)


def as_bytes(matrix: np.ndarray) -> list[bytes]:
    """Rows of an (n, width) uint8 matrix as bytes (an `S` value drops trailing zero bytes,
    an address may end with some: never read keys back through `S`)."""
    n, width = matrix.shape
    raw = np.ascontiguousarray(matrix).tobytes()
    return [raw[i : i + width] for i in range(0, n * width, width)]


def starts_of(sorted_keys: np.ndarray) -> np.ndarray:
    """Boolean: the first row of each run of equal keys."""
    first = np.ones(len(sorted_keys), bool)
    if len(sorted_keys) > 1:
        first[1:] = sorted_keys[1:] != sorted_keys[:-1]
    return first


def group_sum(values: np.ndarray, first: np.ndarray) -> np.ndarray:
    """Exact sums of uint64 `values` over runs starting where `first` is True: uint64, or
    Python integers (object) when some sum needs more than 64 bits."""
    starts = np.flatnonzero(first)
    if len(values) == 0:
        return np.zeros(0, U64)
    # Halves of 32 bits: neither half's sum can overflow below 2**32 rows a run.
    lo = np.add.reduceat(values & _LOW32, starts)
    hi = np.add.reduceat(values >> U64(32), starts) + (lo >> U64(32))
    if bool((hi >> U64(32)).any()):
        return np.array(
            [(int(h) << 32) + (int(x) & 0xFFFF_FFFF) for h, x in zip(hi, lo, strict=True)],
            dtype=object,
        )
    sums: np.ndarray = (hi << U64(32)) | (lo & _LOW32)
    return sums


def best_per_key(keys: np.ndarray, tiebreak: tuple[np.ndarray, ...]) -> np.ndarray:
    """Row indices of the best row of each key, in key order. `tiebreak`: lexsort keys (the
    last most significant) ranking the rows of one key, best first."""
    order = np.argsort(keys, kind="stable")
    first = starts_of(keys[order])
    group = np.cumsum(first) - 1
    several = np.bincount(group)[group] > 1
    if several.any():
        # Keys with rows in several buckets: rank just those rows, within their key's run.
        at = np.flatnonzero(several)
        rows = order[at]
        ranked = np.lexsort((*(t[rows] for t in tiebreak), group[at]))
        order[at] = rows[ranked]
    best: np.ndarray = order[first]
    return best


def max_per_key(keys: np.ndarray, *values: np.ndarray) -> tuple[np.ndarray, ...]:
    """(unique keys sorted, the maximum of each of `values` per key)."""
    order = np.argsort(keys, kind="stable")
    k = keys[order]
    first = starts_of(k)
    starts = np.flatnonzero(first)
    if len(k) == 0:
        return (k, *(np.zeros(0, U64) for _ in values))
    return (k[first], *(np.maximum.reduceat(v[order], starts) for v in values))


def lookup(table_keys: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(position in the sorted unique `table_keys`, found) of each of `keys`."""
    if len(table_keys) == 0:
        return np.zeros(len(keys), np.intp), np.zeros(len(keys), bool)
    pos = np.searchsorted(table_keys, keys)
    pos[pos == len(table_keys)] = 0
    return pos, table_keys[pos] == keys

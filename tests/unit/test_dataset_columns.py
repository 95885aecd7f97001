"""The column-wise formatters of settlement.ndjson: byte for byte the per-row lines of
settlement.adapters.files, in chunks of whole lines, for any widths and any uint64 values."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from settlement.domain import dataset, dataset_columns

D = None  # a decimal column; an int is a byte column of that width
FORMATS = {
    "delivery": (
        dataset_columns.delivery_lines,
        dataset.delivery_line,
        (20, 32, 20, 32, D, D, D, D, 65, D),
    ),
    "view": (dataset_columns.view_lines, dataset.view_line, (20, 32, 32, D, D, D, 65, D)),
    "delivery_mark": (
        dataset_columns.delivery_mark_lines,
        dataset.delivery_mark_line,
        (20, 32, 20, D, D),
    ),
    "view_mark": (dataset_columns.view_mark_lines, dataset.view_mark_line, (20, 32, D, D)),
}
EDGES = (0, 9, 10, 99, 100, 10**19 - 1, 10**19, 2**63 - 1, 2**63, 2**64 - 1)
u64 = st.one_of(st.sampled_from(EDGES), st.integers(0, 2**64 - 1), st.integers(0, 10**6))


@st.composite
def columns(draw, kinds):
    """n rows of random columns. Hypothesis picks each decimal column's few distinct values
    (the digit counts side by side are what matters), numpy fills the rows from them and the
    bytes: a few hundred rows of drawn bytes would overrun hypothesis's buffer."""
    n = draw(st.integers(0, 300))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    cols = []
    for kind in kinds:
        if kind is D:
            pool = np.array(draw(st.lists(u64, min_size=1, max_size=8)), np.uint64)
            cols.append(rng.choice(pool, n))
        else:
            width = draw(st.one_of(st.just(kind), st.integers(0, 70)))
            cols.append(rng.integers(0, 256, (n, width), dtype=np.uint8))
    return cols


def expected(line, cols) -> bytes:
    n = len(cols[0])
    rows = [[bytes(c[i]) if c.ndim == 2 else int(c[i]) for c in cols] for i in range(n)]
    return "".join(line(*row) for row in rows).encode()


def check(name, cols, chunk):
    fast, line, _ = FORMATS[name]
    chunks = list(fast(*cols, chunk=chunk))
    assert b"".join(chunks) == expected(line, cols)
    n = len(cols[0])
    assert len(chunks) == -(-n // chunk)
    for c in chunks:
        assert type(c) is bytes and c.endswith(b"\n") and c.count(b"\n") <= chunk


chunks = st.one_of(st.sampled_from([1, 7, 64, dataset_columns.CHUNK]), st.integers(1, 400))


@settings(deadline=None)
@given(columns(FORMATS["delivery"][2]), chunks)
def test_delivery_lines_are_the_publish_lines(cols, chunk):
    check("delivery", cols, chunk)


@settings(deadline=None)
@given(columns(FORMATS["view"][2]), chunks)
def test_view_lines_are_the_publish_lines(cols, chunk):
    check("view", cols, chunk)


@settings(deadline=None)
@given(columns(FORMATS["delivery_mark"][2]), chunks)
def test_delivery_mark_lines_are_the_publish_lines(cols, chunk):
    check("delivery_mark", cols, chunk)


@settings(deadline=None)
@given(columns(FORMATS["view_mark"][2]), chunks)
def test_view_mark_lines_are_the_publish_lines(cols, chunk):
    check("view_mark", cols, chunk)


def test_every_byte_pair_and_every_digit_count():
    # Hex goes two bytes a lookup: all 65,536 pairs, in a 2-byte column and (odd width)
    # straddling rows of a 3-byte one; decimals of 1 to 20 digits side by side in a chunk.
    n = 65536
    pairs = np.arange(n, dtype="<u2").view(np.uint8).reshape(n, 2)
    odd = np.concatenate([pairs.reshape(-1), pairs.reshape(-1)[:n]]).reshape(n, 3)
    values = np.array([10**k for k in range(20)] + [2**64 - 1], np.uint64)
    watch = values[np.arange(n) % len(values)]
    credited = values[(np.arange(n) * 7 + 3) % len(values)]
    check("view_mark", [odd, pairs, watch, credited], dataset_columns.CHUNK)


def make(kinds, n, values):
    """Byte columns of one repeated byte, decimal columns cycling through `values`."""
    cycle = np.array(values, np.uint64)[np.arange(n) % len(values)]
    return [cycle.copy() if k is D else np.full((n, k), 0xAB, np.uint8) for k in kinds]


@pytest.mark.parametrize("name", FORMATS)
def test_fillers_outnumbering_digits(name):
    # 20-digit values among zeros: more than a tenth of each chunk is fillers.
    check(name, make(FORMATS[name][2], 200, [2**64 - 1] + [0] * 9), 64)


@pytest.mark.parametrize("name", FORMATS)
def test_columns_of_different_lengths_are_refused_at_the_call(name):
    fast, _, kinds = FORMATS[name]
    for short in range(len(kinds)):
        cols = make(kinds, 3, [1])
        cols[short] = cols[short][:2]
        with pytest.raises(ValueError, match="differ in length"):
            fast(*cols)


@pytest.mark.parametrize("name", FORMATS)
def test_zero_rows_yield_nothing(name):
    fast, _, kinds = FORMATS[name]
    assert list(fast(*make(kinds, 0, [1]))) == []

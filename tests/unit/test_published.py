"""Reading published files back (domain.published): the column-wise reader gives exactly the
values the close's formatter wrote, for any uint64; a line that is not canonical sends the
chunk down the line-by-line path, which names it; receipts are judged as ingest judges
them and their bucket checked."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from settlement.domain import dataset, published
from settlement.domain.epochs import EpochClock
from settlement.domain.receipts import DeliveryReceipt, Domain, Params, address_of, sign

EDGES = (0, 9, 10, 99, 10**10 - 1, 10**10, 10**19 - 1, 10**19, 2**63, 2**64 - 1)
u64 = st.one_of(st.sampled_from(EDGES), st.integers(0, 2**64 - 1))
u32 = st.one_of(st.sampled_from((0, 9, 10, 2**32 - 1)), st.integers(0, 2**32 - 1))


def _bytes(rng: np.random.Generator, n: int, width: int) -> np.ndarray:
    return rng.integers(0, 256, (n, width), dtype=np.uint8)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(0, 40),
    st.integers(0, 2**32 - 1),
    st.lists(u64, min_size=1, max_size=5),
    st.lists(u32, min_size=1, max_size=5),
)
def test_columns_round_trip_the_formatter(
    n: int, seed: int, big: list[int], small: list[int]
) -> None:
    rng = np.random.default_rng(seed)

    def pick(values: list[int]) -> np.ndarray:
        return np.array([values[i] for i in rng.integers(0, len(values), n)], np.uint64)

    cols = {
        "viewer": _bytes(rng, n, 20), "session_id": _bytes(rng, n, 32), "node": _bytes(rng, n, 20),
        "content_id": _bytes(rng, n, 32), "started_at": pick(big), "bytes_served": pick(big),
        "segments": pick(small), "issued_at": pick(big), "signature": _bytes(rng, n, 65),
        "bucket": pick(big),
    }  # fmt: skip
    data = b"".join(published._FAST_FORMAT[dataset.DELIVERY_RECEIPTS](cols))
    got = published._fast_columns(dataset.DELIVERY_RECEIPTS, data)
    assert got is not None
    for name, column in cols.items():
        assert np.array_equal(got[name], column), name
    # The line-by-line reader agrees, value for value.
    slow, problems = published._parse_lines(dataset.DELIVERY_RECEIPTS, data, 1, None, None, None, 0)
    assert problems == []
    for name, column in cols.items():
        assert np.array_equal(slow[name], column), name


def _marks(lines: list[bytes]) -> bytes:
    return b"".join(line + b"\n" for line in lines)


def test_a_line_out_of_canonical_form_is_named() -> None:
    good = dataset.view_mark_line(b"\x01" * 20, b"\x02" * 32, 20, 16).encode().rstrip(b"\n")
    variants = {
        "upper-case hex": good.replace(b"0x0101", b"0x0A01"),
        "a leading zero": good.replace(b'"credited":"16"', b'"credited":"016"'),
        "a space": good.replace(b'","sessionId"', b'", "sessionId"'),
        "keys unsorted": b'{"sessionId":"0x' + b"02" * 32 + b'","credited":"16","viewer":"0x'
        + b"01" * 20 + b'","watchSeconds":"20"}',
    }  # fmt: skip
    for why, bad in variants.items():
        data = _marks([good, bad, good])
        assert published._fast_columns(dataset.VIEW_WATERMARKS, data) is None, why
        _, problems = published.parse_chunk(dataset.VIEW_WATERMARKS, data, 7, None, None, None, 1)
        assert [p[0] for p in problems] == [8], (why, problems)


def test_out_of_range_and_malformed_lines() -> None:
    good = dataset.view_mark_line(b"\x01" * 20, b"\x02" * 32, 20, 16).encode().rstrip(b"\n")
    too_big = good.replace(b'"watchSeconds":"20"', b'"watchSeconds":"4294967296"')
    _, problems = published.parse_chunk(
        dataset.VIEW_WATERMARKS, _marks([too_big]), 1, None, None, None, 1
    )
    assert problems[0][:2] == (1, "line is malformed: watchSeconds 4294967296 is out of range")
    _, problems = published.parse_chunk(
        dataset.VIEW_WATERMARKS, _marks([b"{nope"]), 1, None, None, None, 1
    )
    assert problems[0][:2] == (1, "line is not JSON")


def test_receipts_are_judged_and_bucketed() -> None:
    domain = Domain(31337, b"\x05" * 20)
    params = Params.defaults()
    clock = EpochClock(params.genesis, 3600, 300)
    secret = b"\x11" * 32
    viewer = address_of(secret)
    issued = params.genesis + 4000  # bucket 2: cutoff(1) = genesis + 3900
    r = sign(
        DeliveryReceipt(b"\x03" * 32, viewer, b"\x04" * 20, b"\x06" * 32, issued - 40,
                        4_000_000, 10, issued),
        domain, secret,
    )  # fmt: skip

    def line(receipt: DeliveryReceipt, bucket: int) -> bytes:
        return dataset.delivery_line(
            receipt.viewer, receipt.session_id, receipt.node, receipt.content_id,
            receipt.started_at, receipt.bytes_served, receipt.segments_served,
            receipt.issued_at, receipt.signature, bucket,
        ).encode()  # fmt: skip

    data = line(r, 2)
    cols, problems = published.parse_chunk(
        dataset.DELIVERY_RECEIPTS, data, 1, domain, params, clock, 2
    )
    assert problems == [] and cols["bytes_served"].tolist() == [4_000_000]
    # Another distributor: the signature recovers to someone else.
    other = Domain(31337, b"\x07" * 20)
    _, problems = published.parse_chunk(dataset.DELIVERY_RECEIPTS, data, 1, other, params, clock, 2)
    assert [(p[0], p[3]) for p in problems] == [(1, "SIGNER_MISMATCH")]
    # A bucket that is not its issuedAt's, and one after the epoch closed.
    _, problems = published.parse_chunk(
        dataset.DELIVERY_RECEIPTS, line(r, 1), 1, domain, params, clock, 2
    )
    assert [(p[1], p[2], p[3]) for p in problems] == [
        ("bucket is not the bucket of issuedAt", "2", "1")
    ]
    _, problems = published.parse_chunk(
        dataset.DELIVERY_RECEIPTS, data, 1, domain, params, clock, 1
    )
    assert [p[1] for p in problems] == ["bucket is after the epoch closed"]
    # IMPLAUSIBLE survives publication: 10 segments in 44 s of playback is over the lead.
    fast = sign(
        DeliveryReceipt(b"\x03" * 32, viewer, b"\x04" * 20, b"\x06" * 32, issued - 1,
                        4_000_000, 10, issued),
        domain, secret,
    )  # fmt: skip
    _, problems = published.parse_chunk(
        dataset.DELIVERY_RECEIPTS, line(fast, 2), 1, domain, params, clock, 2
    )
    assert [p[3] for p in problems] == ["IMPLAUSIBLE"]


def test_empty_file() -> None:
    cols, problems = published.parse_chunk(dataset.DELIVERY_RECEIPTS, b"", 1, None, None, None, 1)
    assert problems == [] and cols["viewer"].shape == (0, 20)

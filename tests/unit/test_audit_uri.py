"""The auditor's pure helpers: where a dataURI's data lives, and what PROTOCOL 3 calls a
conflict between two receipts of one session."""

from __future__ import annotations

import pytest

from settlement.domain.receipts import DeliveryReceipt, ViewReceipt
from settlement.errors import InputError
from settlement.services.audit import _conflict, split_data_uri


@pytest.mark.parametrize(
    ("uri", "base", "rel"),
    [
        ("https://data.example/w2e/epoch-00000007/manifest.json", "https://data.example/w2e",
         "epoch-00000007/manifest.json"),
        ("/srv/w2e/epochs/epoch-00000012/manifest.json", "/srv/w2e/epochs",
         "epoch-00000012/manifest.json"),
        ("http://h:8000/data/corrections/correction-00000003-000000000118-83ade2e924f0/manifest.json",
         "http://h:8000/data", "corrections/correction-00000003-000000000118-83ade2e924f0/manifest.json"),
    ],
)  # fmt: skip
def test_split_data_uri(uri: str, base: str, rel: str) -> None:
    assert split_data_uri(uri) == (base, rel)


@pytest.mark.parametrize(
    "uri", ["x", "https://h/epoch-7/manifest.json", "/a/epoch-00000001/m.json"]
)
def test_split_data_uri_refuses_other_shapes(uri: str) -> None:
    with pytest.raises(InputError, match="does not end in"):
        split_data_uri(uri)


def _d(content: int, started: int, b: int, s: int, node: int = 1) -> DeliveryReceipt:
    return DeliveryReceipt(b"\1" * 32, b"\2" * 20, bytes([node]) * 20, bytes([content]) * 32,
                           started, b, s, 100)  # fmt: skip


def test_conflicts() -> None:
    assert _conflict(_d(1, 10, 100, 2), _d(2, 10, 100, 2))  # another contentId
    assert _conflict(_d(1, 10, 100, 2), _d(1, 11, 100, 2))  # another startedAt
    assert _conflict(_d(1, 10, 100, 3), _d(1, 10, 200, 2))  # counters cross
    assert not _conflict(_d(1, 10, 100, 2), _d(1, 10, 200, 3))  # one above the other
    assert not _conflict(_d(1, 10, 100, 3), _d(1, 10, 200, 2, node=9))  # other keys
    view = ViewReceipt(b"\1" * 32, b"\2" * 20, b"\1" * 32, 10, 5, 100)
    assert not _conflict(_d(1, 10, 100, 2), view)
    assert _conflict(_d(2, 10, 100, 2), view)

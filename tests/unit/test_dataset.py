"""Dataset formats of PROTOCOL 6 (`domain.dataset`): canonical lines, hand-formatted lines equal
to them, manifest fields and bytes, evidence."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from settlement.adapters import files as publish
from settlement.domain import dataset
from settlement.domain.receipts import keccak

addr = st.binary(min_size=20, max_size=20)
b32 = st.binary(min_size=32, max_size=32)
sig = st.binary(min_size=65, max_size=65)
u64 = st.integers(0, 2**64 - 1)
u32 = st.integers(0, 2**32 - 1)


def test_canonical_sorts_keys_drops_spaces_and_stringifies_integers():
    line = dataset.canonical_bytes(
        {"b": 2**200, "a": b"\xab\xcd", "c": [1, {"z": True, "y": None}], "d": "0xAB"}
    )
    assert (
        line
        == b'{"a":"0xabcd","b":"'
        + str(2**200).encode()
        + b'","c":["1",{"y":null,"z":true}],"d":"0xAB"}'
    )


@given(addr, b32, addr, b32, u64, u64, u32, u64, sig, st.integers(1, 10**6))
def test_delivery_line_is_the_canonical_line(v, s, node, c, started, b, segs, issued, sg, bucket):
    fast = dataset.delivery_line(v, s, node, c, started, b, segs, issued, sg, bucket)
    ref = dataset.canonical_line(
        {
            "viewer": v,
            "sessionId": s,
            "node": node,
            "contentId": c,
            "startedAt": started,
            "bytesServed": b,
            "segmentsServed": segs,
            "issuedAt": issued,
            "signature": sg,
            "bucket": bucket,
        }
    )
    assert fast == ref


@given(addr, b32, b32, u64, u32, u64, sig, st.integers(1, 10**6))
def test_view_line_is_the_canonical_line(v, s, c, started, w, issued, sg, bucket):
    fast = dataset.view_line(v, s, c, started, w, issued, sg, bucket)
    ref = dataset.canonical_line(
        {
            "viewer": v,
            "sessionId": s,
            "contentId": c,
            "startedAt": started,
            "watchSeconds": w,
            "issuedAt": issued,
            "signature": sg,
            "bucket": bucket,
        }
    )
    assert fast == ref


@given(addr, b32, addr, u64, u32, u32, u32)
def test_watermark_lines_are_canonical(v, s, node, b, segs, w, credited):
    assert dataset.delivery_mark_line(v, s, node, b, segs) == dataset.canonical_line(
        {"viewer": v, "sessionId": s, "node": node, "bytesServed": b, "segmentsServed": segs}
    )
    assert dataset.view_mark_line(v, s, w, credited) == dataset.canonical_line(
        {"viewer": v, "sessionId": s, "watchSeconds": w, "credited": credited}
    )


@given(addr, st.sampled_from(["node", "viewer", "creator"]), st.integers(0, 2**256 - 1))
def test_allocation_and_registry_lines_are_canonical(a, cls, amount):
    assert dataset.allocation_line(a, cls, amount) == dataset.canonical_line(
        {"account": a, "class": cls, "amount": amount}
    )
    assert dataset.node_line(a, 'n"\\ \u00e9', True) == dataset.canonical_line(
        {"address": a, "label": 'n"\\ \u00e9', "active": True}
    )
    assert dataset.content_line(a + bytes(12), a) == dataset.canonical_line(
        {"contentId": a + bytes(12), "creator": a}
    )


def test_manifest_has_exactly_the_protocol_fields_and_chains(tmp_path):
    w = publish.DatasetWriter(tmp_path)
    w.sink("b").add('{"k":"1"}\n')
    w.sink("a")
    files = w.finish_all()
    kwargs = dict(
        epoch=2,
        start=10,
        end=20,
        cutoff=25,
        parameters={"emission": 10**24},
        pools={"node": {"emitted": 1}},
        root="0x" + "11" * 32,
        cumulative_total=2**255,
        floor=dataset.ZERO_HASH,
        files=files,
    )
    m1 = dataset.manifest_bytes(prev_manifest_hash=dataset.ZERO_HASH, **kwargs)
    obj = orjson.loads(m1)
    assert tuple(sorted(obj)) == dataset.MANIFEST_FIELDS
    assert obj["epoch"] == "2" and obj["cumulativeTotal"] == str(2**255)
    assert obj["protocolVersion"] == "2" and obj["floor"] == dataset.ZERO_HASH
    assert [f["name"] for f in obj["files"]] == ["a", "b"]
    assert obj["files"][1]["rows"] == "1" and obj["counts"] == {"a": "0", "b": "1"}
    assert b" " not in m1 and dataset.canonical_bytes(obj) == m1
    assert dataset.data_hash(m1) == keccak(m1)
    m2 = dataset.manifest_bytes(prev_manifest_hash="0x" + keccak(m1).hex(), **kwargs)
    assert orjson.loads(m2)["prevManifestHash"] == "0x" + dataset.data_hash(m1).hex()


def test_a_correction_manifest_has_exactly_two_fields_more(tmp_path):
    files = publish.DatasetWriter(tmp_path).finish_all()
    kwargs = dict(
        epoch=3,
        start=10,
        end=20,
        cutoff=25,
        parameters={},
        pools={},
        root="0x" + "11" * 32,
        cumulative_total=7,
        floor="0x" + "22" * 32,
        prev_manifest_hash="0x" + "33" * 32,
        files=files,
    )
    m = orjson.loads(
        dataset.manifest_bytes(
            **kwargs, correction={"corrects": "0x" + "44" * 32, "claimedAtBlock": 12}
        )
    )
    assert set(m) == {*dataset.MANIFEST_FIELDS, *dataset.CORRECTION_FIELDS}
    assert m["claimedAtBlock"] == "12" and m["floor"] == "0x" + "22" * 32
    with pytest.raises(AssertionError):
        dataset.manifest_bytes(**kwargs, correction={"corrects": "0x" + "44" * 32})


@pytest.mark.parametrize("stored", [None, {"kind": "view", "viewer": "0xABCDEF"}])
def test_evidence_hex_is_lowercased(stored):
    out = dataset.wire_evidence(stored)
    assert out is None if stored is None else out["viewer"] == "0xabcdef"

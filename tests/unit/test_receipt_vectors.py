"""tests/vectors/receipts.json (made with eth-account by scripts/gen-receipt-vectors) holds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from settlement.domain.receipts import (
    DELIVERY_TYPEHASH,
    DOMAIN_TYPEHASH,
    VIEW_TYPEHASH,
    Domain,
    MalformedReceipt,
    Params,
    Reason,
    address_of,
    digest,
    recover_signer,
    verify,
)
from settlement.domain.wire import parse_wire, verify_wire
from settlement.parallel import verify_wire_batch

VECTORS = json.loads(
    (Path(__file__).resolve().parents[1] / "vectors" / "receipts.json").read_text()
)
DOMAIN = Domain.from_hex(VECTORS["domain"]["chainId"], VECTORS["domain"]["verifyingContract"])
P = VECTORS["params"]
PARAMS = Params(
    genesis=P["genesis"],
    clock_skew=P["clockSkew"],
    max_age=P["maxAge"],
    max_session_age=P["maxSessionAge"],
    segment_seconds=P["segmentSeconds"],
    max_bitrate=P["maxBitrate"],
    max_lead_seconds=P["maxLeadSeconds"],
    min_segment_bytes=P["minSegmentBytes"],
)
NOW = VECTORS["now"]
CASES = VECTORS["cases"]
STATELESS = {
    Reason.MALFORMED,
    Reason.NON_CANONICAL_SIGNATURE,
    Reason.ISSUED_IN_FUTURE,
    Reason.TOO_OLD,
    Reason.IMPLAUSIBLE,
    Reason.SELF_DEALING,
    Reason.SIGNER_MISMATCH,
}


def text_of(case: dict) -> str:
    return case["wireText"] if "wireText" in case else json.dumps(case["wire"])


def test_domain_and_type_hashes():
    assert "0x" + DOMAIN.separator.hex() == VECTORS["domain"]["separator"]
    hashes = VECTORS["typeHashes"]
    assert "0x" + DOMAIN_TYPEHASH.hex() == hashes["EIP712Domain"]
    assert "0x" + DELIVERY_TYPEHASH.hex() == hashes["DeliveryReceipt"]
    assert "0x" + VIEW_TYPEHASH.hex() == hashes["ViewReceipt"]


def test_keys_match_addresses():
    for key in VECTORS["keys"]:
        assert "0x" + address_of(bytes.fromhex(key["privateKey"][2:])).hex() == key["address"]


def test_every_stateless_reason_and_acceptance_is_covered():
    reasons = {case["reason"] for case in CASES}
    assert {r.value for r in STATELESS} <= reasons
    assert None in reasons


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_case(case):
    verdict = verify_wire(text_of(case), DOMAIN, PARAMS, NOW)
    if case["verdict"] == "accepted":
        assert verdict.accepted, verdict
        assert case["reason"] is None
    else:
        assert not verdict.accepted
        assert verdict.reason.value == case["reason"], verdict.detail
        assert verdict.detail

    if case["reason"] == "MALFORMED":
        with pytest.raises(MalformedReceipt):
            parse_wire(text_of(case))
        return
    receipt = parse_wire(text_of(case))
    if "wire" in case:  # the dict form gives the same receipt and verdict
        assert parse_wire(case["wire"]) == receipt
        assert verify(receipt, DOMAIN, PARAMS, NOW) == verdict
    if "digest" in case:
        assert "0x" + digest(receipt, DOMAIN).hex() == case["digest"]
        signer = recover_signer(receipt, DOMAIN)
        assert (None if signer is None else "0x" + signer.hex()) == case["recovers"]


def test_batch_gives_the_same_verdicts_in_order():
    texts = [text_of(c) for c in CASES] * 3
    one_by_one = [verify_wire(t, DOMAIN, PARAMS, NOW) for t in texts]
    assert verify_wire_batch(texts, DOMAIN, PARAMS, NOW, workers=2, inline_below=0) == one_by_one

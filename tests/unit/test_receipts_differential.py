"""The fast path against eth-account, the reference implementation of EIP-712 and recovery.

A digest differing by one bit pays the wrong people, so every random receipt here is
hashed both ways; every canonical signature is recovered both ways.
"""

from __future__ import annotations

import random

import orjson
from eth_account import Account
from eth_account.messages import _hash_eip191_message, encode_typed_data
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from settlement.domain.receipts import (
    SECP256K1_HALF_N,
    SECP256K1_N,
    UINT32_MAX,
    UINT64_MAX,
    DeliveryReceipt,
    Domain,
    ViewReceipt,
    address_of,
    digest,
    parse_wire,
    recover_signer,
    sign,
    to_wire,
    typed_data,
)


def _edge_ints(maximum: int) -> st.SearchStrategy[int]:
    edges = st.sampled_from([0, 1, maximum - 1, maximum, maximum // 2, 2**31, 2**32 - 1])
    return st.one_of(edges.filter(lambda v: v <= maximum), st.integers(0, maximum))


def _edge_bytes(size: int) -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.sampled_from([bytes(size), b"\xff" * size, b"\x00" * (size - 1) + b"\x01"]),
        st.binary(min_size=size, max_size=size),
    )


uint64 = _edge_ints(UINT64_MAX)
uint32 = _edge_ints(UINT32_MAX)
bytes32 = _edge_bytes(32)
address = _edge_bytes(20)
private_key = st.integers(1, SECP256K1_N - 1).map(lambda k: k.to_bytes(32, "big"))
domains = st.builds(
    Domain,
    st.one_of(st.sampled_from([1, 31337, 2**256 - 1]), st.integers(1, 2**256 - 1)),
    address,
)
deliveries = st.builds(
    DeliveryReceipt, bytes32, address, address, bytes32, uint64, uint64, uint32, uint64
)
views = st.builds(ViewReceipt, bytes32, address, bytes32, uint64, uint32, uint64)


def _mixed_case(receipt, seed: int) -> bytes:
    """The wire JSON with the hex digits of every 0x value in random letter case."""
    rng = random.Random(seed)
    wire = to_wire(receipt)
    for name, value in wire.items():
        if isinstance(value, str) and value.startswith("0x"):
            digits = "".join(c.upper() if rng.random() < 0.5 else c for c in value[2:])
            wire[name] = "0x" + digits
    return orjson.dumps(wire)


# 10,000 receipts in batches of 10: hypothesis spends about a millisecond per example
# on its own, so batches keep the run short without fewer receipts.
BATCH = 10
EXAMPLES = 10_000 // BATCH


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    batch=st.lists(
        st.tuples(st.one_of(deliveries, views), private_key, st.integers(0, 2**32)),
        min_size=BATCH,
        max_size=BATCH,
    ),
    domain=domains,
)
def test_digest_and_signer_match_eth_account(batch, domain):
    for receipt, key, case_seed in batch:
        _check_against_eth_account(receipt, domain, key, case_seed)


def _check_against_eth_account(receipt, domain: Domain, key: bytes, case_seed: int) -> None:
    viewer = address_of(key)
    receipt = (
        DeliveryReceipt(receipt.session_id, viewer, *_rest_delivery(receipt))
        if isinstance(receipt, DeliveryReceipt)
        else ViewReceipt(receipt.session_id, viewer, *_rest_view(receipt))
    )
    message = encode_typed_data(full_message=typed_data(receipt, domain))
    expected = _hash_eip191_message(message)
    assert digest(receipt, domain) == expected

    signed = sign(receipt, domain, key)
    # The wire in any letter case parses back to the same receipt and digest.
    parsed = parse_wire(_mixed_case(signed, case_seed))
    assert parsed == signed
    assert digest(parsed, domain) == expected

    reference_signer = Account.recover_message(message, signature=signed.signature)
    assert reference_signer.lower() == "0x" + viewer.hex()
    assert recover_signer(parsed, domain) == viewer


def _rest_delivery(r: DeliveryReceipt) -> tuple:
    return (r.node, r.content_id, r.started_at, r.bytes_served, r.segments_served, r.issued_at)


def _rest_view(r: ViewReceipt) -> tuple:
    return (r.content_id, r.started_at, r.watch_seconds, r.issued_at)


signatures = st.tuples(
    st.one_of(st.sampled_from([1, SECP256K1_N - 1]), st.integers(1, SECP256K1_N - 1)),
    st.one_of(st.sampled_from([1, SECP256K1_HALF_N]), st.integers(1, SECP256K1_HALF_N)),
    st.sampled_from([27, 28]),
)


@settings(max_examples=2_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(receipt=st.one_of(deliveries, views), domain=domains, rsv=signatures)
def test_arbitrary_canonical_signature_recovers_like_eth_account(receipt, domain, rsv):
    # Signatures nobody made: recovery must still agree, including when it fails.
    r, s, v = rsv
    sig = r.to_bytes(32, "big") + s.to_bytes(32, "big") + bytes((v,))
    candidate = type(receipt)(*_fields(receipt), signature=sig)
    ours = recover_signer(candidate, domain)
    try:
        theirs = Account.recover_message(
            encode_typed_data(full_message=typed_data(receipt, domain)), signature=sig
        )
    except Exception:  # eth-keys raises BadSignature and friends for r off the curve
        theirs = None
    assert ours == (None if theirs is None else bytes.fromhex(theirs[2:]))


def _fields(receipt) -> tuple:
    if isinstance(receipt, DeliveryReceipt):
        return (receipt.session_id, receipt.viewer, *_rest_delivery(receipt))
    return (receipt.session_id, receipt.viewer, *_rest_view(receipt))


@settings(max_examples=300, deadline=None)
@given(receipt=st.one_of(deliveries, views), domain=domains, key=private_key)
def test_high_s_and_raw_v_that_eth_account_accepts_are_not_canonical(receipt, domain, key):
    signed = sign(receipt, domain, key)
    sig = signed.signature
    s = int.from_bytes(sig[32:64], "big")
    high_s = sig[:32] + (SECP256K1_N - s).to_bytes(32, "big") + bytes((55 - sig[64],))
    raw_v = sig[:64] + bytes((sig[64] - 27,))
    message = encode_typed_data(full_message=typed_data(receipt, domain))
    signer = Account.recover_message(message, signature=signed.signature)
    for variant in (high_s, raw_v):
        assert Account.recover_message(message, signature=variant) == signer
        assert recover_signer(type(signed)(*_fields(signed), signature=variant), domain) is None

"""ReceiptSigner: key loading, sessions, cumulative counters, canonical signatures."""

from __future__ import annotations

import copy
import itertools
import json
import pickle

import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data

from settlement.client import CounterWentDown, KeyLoadError, ReceiptArgumentError, ReceiptSigner
from settlement.domain.receipts import (
    ACCEPTED,
    DeliveryReceipt,
    Domain,
    Params,
    ViewReceipt,
    address_of,
    sign,
    verify,
)
from settlement.domain.wire import typed_data

KEY = bytes.fromhex("4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318")
DOMAIN = Domain(31337, bytes.fromhex("5fbdb2315678afecb367f032d93f642f64180aa3"))
PARAMS = Params.defaults()
T0 = 1_767_230_000
NODE_A = bytes.fromhex("aa" * 20)
NODE_B = bytes.fromhex("bb" * 20)
CONTENT = bytes.fromhex("cc" * 32)


def fixed_random(n: int) -> bytes:
    return bytes(range(n))


@pytest.fixture
def signer() -> ReceiptSigner:
    return ReceiptSigner(KEY, DOMAIN, clock=lambda: T0 + 0.9, randbytes=fixed_random)


def test_all_key_sources_give_the_same_address(tmp_path):
    expected = address_of(KEY)
    keystore = tmp_path / "key.json"
    keystore.write_text(json.dumps(Account.encrypt(KEY, "hunter2", iterations=2)))
    signers = [
        ReceiptSigner(KEY, DOMAIN),
        ReceiptSigner("0x" + KEY.hex(), DOMAIN),
        ReceiptSigner.from_hex(KEY.hex().upper(), DOMAIN),
        ReceiptSigner.from_keystore(keystore, "hunter2", DOMAIN),
        ReceiptSigner.from_env("PLAYER_KEY", DOMAIN, environ={"PLAYER_KEY": "0x" + KEY.hex()}),
    ]
    assert {s.address for s in signers} == {expected}
    assert signers[0].address_hex == Account.from_key(KEY).address


def test_key_errors_are_clear_and_never_show_the_key(tmp_path):
    keystore = tmp_path / "key.json"
    keystore.write_text(json.dumps(Account.encrypt(KEY, "right", iterations=2)))
    cases = [
        (KeyLoadError, lambda: ReceiptSigner.from_keystore(keystore, "wrong", DOMAIN)),
        (KeyLoadError, lambda: ReceiptSigner.from_keystore(tmp_path / "missing.json", "", DOMAIN)),
        (KeyLoadError, lambda: ReceiptSigner.from_env("PLAYER_KEY", DOMAIN, environ={})),
        (KeyLoadError, lambda: ReceiptSigner(KEY[:31], DOMAIN)),
        (KeyLoadError, lambda: ReceiptSigner(bytes(32), DOMAIN)),  # zero is not a key
        (ReceiptArgumentError, lambda: ReceiptSigner.from_hex("zz" * 32, DOMAIN)),
    ]
    for error, case in cases:
        with pytest.raises(error) as info:
            case()
        assert KEY.hex() not in str(info.value).lower()


def test_repr_pickle_and_copy_never_leak_the_key(signer):
    text = repr(signer) + str(signer) + repr(signer.start_session(CONTENT, T0))
    assert KEY.hex() not in text.lower()
    assert signer.address_hex in text
    with pytest.raises(TypeError):
        pickle.dumps(signer)
    with pytest.raises(TypeError):
        copy.deepcopy(signer)
    assert not hasattr(signer, "__dict__")  # slots: no stray attribute holds the key


def test_session_defaults_come_from_the_player_clock_and_randomness(signer):
    session = signer.start_session("0x" + CONTENT.hex())
    assert session.session_id == bytes(range(32))
    assert session.content_id == CONTENT
    assert session.started_at == T0
    assert session.viewer == signer.address
    real = ReceiptSigner(KEY, DOMAIN)
    ids = {real.start_session(CONTENT, T0).session_id for _ in range(50)}
    assert len(ids) == 50 and all(len(i) == 32 for i in ids)


def test_signed_receipts_verify_and_match_the_reference_signer(signer):
    session = signer.start_session(CONTENT, T0)
    d = session.delivery(NODE_A, 2_000_000, 2, issued_at=T0 + 8)
    v = session.view(8, issued_at=T0 + 8)
    assert isinstance(d, DeliveryReceipt) and isinstance(v, ViewReceipt)
    for receipt in (d, v):
        assert verify(receipt, DOMAIN, PARAMS, T0 + 60) is ACCEPTED
        assert receipt.signature[64] in (27, 28)
        # Byte-identical to the domain module's signer (RFC 6979 nonces, low-s).
        assert sign(receipt, DOMAIN, KEY).signature == receipt.signature
        # And eth-account, from the standard typed data, recovers the viewer.
        message = encode_typed_data(full_message=typed_data(receipt, DOMAIN))
        assert Account.recover_message(message, signature=receipt.signature) == signer.address_hex
    assert d.session_id == v.session_id == session.session_id
    assert d.started_at == v.started_at == T0


def test_issued_at_defaults_to_now(signer):
    session = signer.start_session(CONTENT, T0 - 30)
    assert session.view(16).issued_at == T0


def test_delivery_counters_are_cumulative_per_node(signer):
    session = signer.start_session(CONTENT, T0)
    session.delivery(NODE_A, 1_000, 1, issued_at=T0 + 4)
    session.delivery(NODE_B, 500, 1, issued_at=T0 + 4)  # another node: its own totals
    session.delivery(NODE_A, 3_000, 3, issued_at=T0 + 12)
    session.delivery(NODE_A, 3_000, 3, issued_at=T0 + 13)  # same totals: allowed (duplicate)
    for bytes_served, segments in [(2_999, 3), (3_000, 2), (5_000, 2), (0, 0)]:
        with pytest.raises(CounterWentDown, match="cumulative"):
            session.delivery(NODE_A, bytes_served, segments, issued_at=T0 + 20)
    # A refusal signs nothing and leaves the totals as they were.
    counters = session.delivery_counters()
    assert (counters[NODE_A].bytes_served, counters[NODE_A].segments_served) == (3_000, 3)
    assert (counters[NODE_B].bytes_served, counters[NODE_B].segments_served) == (500, 1)


def test_watch_seconds_only_grow(signer):
    session = signer.start_session(CONTENT, T0)
    session.view(8, issued_at=T0 + 8)
    session.view(8, issued_at=T0 + 9)
    with pytest.raises(CounterWentDown):
        session.view(7, issued_at=T0 + 10)
    assert session.watch_seconds == 8
    assert session.view(12, issued_at=T0 + 12).watch_seconds == 12


def test_sessions_keep_separate_totals(signer):
    one, two = signer.start_session(CONTENT, T0), signer.start_session(CONTENT, T0)
    one.delivery(NODE_A, 10_000, 10, issued_at=T0 + 40)
    assert two.delivery(NODE_A, 1, 1, issued_at=T0 + 4).bytes_served == 1


def test_values_that_cannot_be_in_a_receipt_are_refused(signer):
    session = signer.start_session(CONTENT, T0)
    bad_calls = [
        lambda: session.delivery(NODE_A, 2**64, 1, issued_at=T0),
        lambda: session.delivery(NODE_A, 1, 2**32, issued_at=T0),
        lambda: session.delivery(NODE_A, -1, 1, issued_at=T0),
        lambda: session.delivery(NODE_A[:19], 1, 1, issued_at=T0),
        lambda: session.delivery(NODE_A, 1, True, issued_at=T0),
        lambda: session.view(2**32, issued_at=T0),
        lambda: session.view(1, issued_at=T0 - 1),  # before startedAt
        lambda: signer.start_session(CONTENT[:31]),
        lambda: signer.start_session(CONTENT, 2**64),
    ]
    for call in bad_calls:
        with pytest.raises(ReceiptArgumentError):
            call()
    assert session.delivery_counters() == {} and session.watch_seconds is None


def test_extreme_values_sign_exactly(signer):
    session = signer.start_session(CONTENT, 0)
    d = session.delivery(NODE_A, 2**64 - 1, 2**32 - 1, issued_at=2**64 - 1)
    assert (d.bytes_served, d.segments_served, d.issued_at) == (2**64 - 1, 2**32 - 1, 2**64 - 1)
    message = encode_typed_data(full_message=typed_data(d, DOMAIN))
    assert Account.recover_message(message, signature=d.signature) == signer.address_hex


def test_sign_refuses_a_receipt_naming_another_viewer(signer):
    other = DeliveryReceipt(bytes(32), NODE_B, NODE_A, CONTENT, T0, 1, 1, T0)
    with pytest.raises(ReceiptArgumentError, match="viewer"):
        signer.sign(other)


def test_another_domain_gives_another_signature(signer):
    elsewhere = ReceiptSigner(KEY, Domain(1, DOMAIN.verifying_contract))
    sid = bytes(32)
    a, b = (
        s.start_session(CONTENT, T0, session_id=sid).view(4, issued_at=T0 + 4)
        for s in (signer, elsewhere)
    )
    assert a.signature != b.signature
    assert verify(b, DOMAIN, PARAMS, T0 + 60).reason == "SIGNER_MISMATCH"


def test_signatures_are_low_s_over_many_receipts(signer):
    n_half = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141 // 2
    session = signer.start_session(CONTENT, T0)
    for i in itertools.islice(itertools.count(1), 64):
        r = session.view(i, issued_at=T0 + i)
        assert 0 < int.from_bytes(r.signature[32:64], "big") <= n_half

"""settlement.domain.secp against eth-account: the private-FFI fast path recovers the same
signer as the reference library, for any key and digest."""

from __future__ import annotations

from eth_account import Account
from eth_keys import keys
from hypothesis import given, settings
from hypothesis import strategies as st

from settlement.domain import secp

SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141

private_keys = st.integers(1, SECP256K1_N - 1).map(lambda k: k.to_bytes(32, "big"))
digests = st.binary(min_size=32, max_size=32)


def _rsv(private_key: bytes, digest32: bytes) -> bytes:
    rs_recid = secp.sign_recoverable(private_key, digest32)
    return rs_recid[:64] + bytes((rs_recid[64] + 27,))


@settings(max_examples=200, deadline=None)
@given(private_keys, digests)
def test_recovery_equals_eth_account(private_key, digest32):
    sig = _rsv(private_key, digest32)
    expected = bytes.fromhex(Account._recover_hash(digest32, signature=sig)[2:])
    assert secp.address_of(private_key) == expected
    assert bytes.fromhex(Account.from_key(private_key).address[2:]) == expected
    assert secp.recover_address(digest32, sig) == expected
    assert secp.signer_unless(digest32, sig, expected) is None  # learns the key
    assert secp.signer_unless(digest32, sig, expected) is None  # memo hit
    assert secp.signer_unless(digest32, sig, bytes(20)) == expected


@settings(max_examples=100, deadline=None)
@given(private_keys, digests, digests)
def test_another_digest_recovers_to_another_key(private_key, digest32, other):
    sig = _rsv(private_key, digest32)
    address = secp.address_of(private_key)
    recovered = secp.recover_address(other, sig)
    if other != digest32:
        assert recovered != address
        assert secp.signer_unless(other, sig, address) in (recovered, secp.NO_KEY)
    if recovered is not None:
        public = keys.Signature(sig[:64] + bytes((sig[64] - 27,))).recover_public_key_from_msg_hash(
            other
        )
        assert public.to_canonical_address() == recovered


def test_r_off_the_curve_recovers_to_no_key():
    digest32 = bytes(range(32))
    sig = (5).to_bytes(32, "big") + (1).to_bytes(32, "big") + b"\x1b"  # x = 5 is not on it
    assert secp.recover_address(digest32, sig) is None
    assert secp.signer_unless(digest32, sig, bytes(20)) == secp.NO_KEY

"""The one face over coincurve (libsecp256k1): signing, recovery and the fast signer check.

Only this module touches coincurve's private FFI (`_libsecp256k1`, the global context);
pyproject pins the coincurve versions it was tested on, and
tests/unit/test_secp.py checks its recovery against eth-account's on random inputs.
"""

from __future__ import annotations

import threading
from typing import Any, Final

from coincurve import PrivateKey, PublicKey
from coincurve._libsecp256k1 import ffi as _ffi
from coincurve._libsecp256k1 import lib as _lib
from coincurve.context import GLOBAL_CONTEXT
from tiny_keccak import keccak256 as _keccak256

__all__ = ["NO_KEY", "address_of", "recover_address", "sign_recoverable", "signer_unless"]

_CTX: Final = GLOBAL_CONTEXT.ctx
_EC_UNCOMPRESSED: Final = _lib.SECP256K1_EC_UNCOMPRESSED
_RECID: Final = {27: b"\x00", 28: b"\x01"}

# What signer_unless() returns when r is no x-coordinate of the curve: no key signed this.
NO_KEY: Final = b""


def sign_recoverable(private_key: bytes, digest32: bytes) -> bytes:
    """r || s || recid (0 or 1) of `digest32` signed by `private_key`; always low-s."""
    return PrivateKey(private_key).sign_recoverable(digest32, hasher=None)


def address_of(private_key: bytes) -> bytes:
    """The 20-byte Ethereum address of a 32-byte private key."""
    return _keccak256(PrivateKey(private_key).public_key.format(compressed=False)[1:])[12:]


def recover_address(digest32: bytes, sig: bytes) -> bytes | None:
    """Signer address of an r||s||v signature (v 27 or 28), or None when recovery fails."""
    try:
        public = PublicKey.from_signature_and_message(
            sig[:64] + _RECID[sig[64]], digest32, hasher=None
        )
    except ValueError:  # r is no x-coordinate of the curve: no key signed this
        return None
    return _keccak256(public.format(compressed=False)[1:])[12:]


class _Scratch(threading.local):
    """Per-thread output buffer for the uncompressed public key (cffi calls drop the GIL)."""

    def __init__(self) -> None:
        out = _ffi.new("unsigned char[65]")
        self.bufs = (out, _ffi.new("size_t *", 65))


_scratch = _Scratch()

# A viewer signs many receipts (cumulative counters, every few segments). Once its key has
# been shown to hash to its address, comparing a recovered key with it (one C call) proves
# the same as serializing and hashing the key again. A memo of a pure function: verdicts
# do not depend on what is in it.
_known_keys: dict[bytes, Any] = {}
_KNOWN_KEYS_MAX: Final = 100_000


def signer_unless(digest32: bytes, sig: bytes, address: bytes) -> bytes | None:
    """None when the canonical r||s||v `sig` of `digest32` recovers to `address`; else the
    address it recovers to, or NO_KEY when it recovers to no key.

    The verification hot path: the private FFI serializes into a per-thread buffer and the
    known-keys memo skips the keccak for a viewer seen before.
    """
    try:
        public = PublicKey.from_signature_and_message(
            sig[:64] + _RECID[sig[64]], digest32, hasher=None
        )
    except ValueError:  # r is no x-coordinate of the curve: no key signed this
        return NO_KEY
    known = _known_keys.get(address)
    if known is not None and _lib.secp256k1_ec_pubkey_cmp(_CTX, public.public_key, known) == 0:
        return None  # the very key that hashed to this address before
    out, outlen = _scratch.bufs
    _lib.secp256k1_ec_pubkey_serialize(_CTX, out, outlen, public.public_key, _EC_UNCOMPRESSED)
    signer = _keccak256(_ffi.buffer(out, 65)[1:])[12:]
    if signer != address:
        return signer
    if len(_known_keys) >= _KNOWN_KEYS_MAX:
        _known_keys.clear()  # crude but bounded; a miss only costs one keccak
    _known_keys[address] = public.public_key  # the cdata stays alive with the dict entry
    return None

"""NodeRegistration EIP-712 digest equals eth-account's typed-data hash; verification rules."""

from __future__ import annotations

from dataclasses import replace

import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data

from settlement.domain.receipts import Domain, address_of, keccak
from settlement.domain.registration import (
    NodeRegistrationRequest,
    parse_request,
    registration_digest,
    sign_registration,
    to_wire,
    verify_request,
)
from settlement.errors import InvalidRegistration

DOMAIN = Domain.from_hex(31337, "0x5fbdb2315678afecb367f032d93f642f64180aa3")
KEY = keccak(b"node operator")
NODE = address_of(KEY)


def typed(request: NodeRegistrationRequest) -> dict:
    return {
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"},
                {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"},
                {"name": "verifyingContract", "type": "address"},
            ],
            "NodeRegistration": [
                {"name": "node", "type": "address"},
                {"name": "label", "type": "string"},
                {"name": "issuedAt", "type": "uint64"},
            ],
        },
        "primaryType": "NodeRegistration",
        "domain": {
            "name": "W2E Settlement",
            "version": "1",
            "chainId": DOMAIN.chain_id,
            "verifyingContract": "0x" + DOMAIN.verifying_contract.hex(),
        },
        "message": {
            "node": "0x" + request.node.hex(),
            "label": request.label,
            "issuedAt": request.issued_at,
        },
    }


def test_digest_and_signature_match_eth_account():
    request = NodeRegistrationRequest(NODE, "edge-eu-1 ✓", 1_767_225_600)
    signable = encode_typed_data(full_message=typed(request))
    wallet = Account.sign_message(signable, KEY)
    ours = sign_registration(request, DOMAIN, KEY)
    assert registration_digest(request, DOMAIN) == bytes(wallet.message_hash)
    assert ours.signature == bytes(wallet.signature)
    verify_request(ours, DOMAIN, request.issued_at, clock_skew=0, max_age=60)
    assert parse_request(to_wire(ours)) == ours


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"label": ""}, "label"),
        ({"label": "x" * 65}, "label"),
        ({"issuedAt": -1}, "uint64"),
        ({"node": "0x12"}, "node"),
        ({"extra": 1}, "exactly the fields"),
    ],
)
def test_parse_refuses_bad_requests(change, message):
    wire = to_wire(sign_registration(NodeRegistrationRequest(NODE, "a", 5), DOMAIN, KEY))
    wire.update(change)
    with pytest.raises(InvalidRegistration, match=message):
        parse_request(wire)


def test_verify_refuses_future_high_s_and_other_domains():
    signed = sign_registration(NodeRegistrationRequest(NODE, "a", 1000), DOMAIN, KEY)
    with pytest.raises(InvalidRegistration, match="future"):
        verify_request(signed, DOMAIN, 800, clock_skew=100, max_age=60)
    n = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
    s = int.from_bytes(signed.signature[32:64], "big")
    high = signed.signature[:32] + (n - s).to_bytes(32, "big") + bytes([55 - signed.signature[64]])

    with pytest.raises(InvalidRegistration, match="canonical"):
        verify_request(replace(signed, signature=high), DOMAIN, 1000, clock_skew=0, max_age=60)
    other = Domain.from_hex(1, "0x" + "22" * 20)
    # Signed under DOMAIN, checked under another: the message names the domain expected.
    with pytest.raises(InvalidRegistration) as refused:
        verify_request(signed, other, 1000, clock_skew=0, max_age=60)
    message = str(refused.value)
    assert f"is not the node 0x{signed.node.hex()}'s under this service's domain" in message
    assert f"(chainId 1, distributor 0x{'22' * 20})" in message
    assert "check both the signing key" in message and "the domain" in message

"""The fast path against eth-account, the reference implementation of EIP-712 and recovery.

A digest differing by one bit pays the wrong people, so every random receipt here is
hashed both ways; every canonical signature is recovered both ways.
"""

from __future__ import annotations

import dataclasses
import random

import orjson
from eth_account import Account
from eth_account.messages import _hash_eip191_message, encode_typed_data
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from settlement.domain.ingest import RegistrySnapshot, registry_gate
from settlement.domain.receipts import (
    SECP256K1_HALF_N,
    SECP256K1_N,
    UINT32_MAX,
    UINT64_MAX,
    DeliveryReceipt,
    Domain,
    Params,
    ViewReceipt,
    address_of,
    digest,
    recover_signer,
    sign,
    verify,
)
from settlement.domain.wire import dumps_wire, parse_wire, to_wire, typed_data, verify_wire
from settlement.parallel import verify_batch


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


# --- verdicts: the fast paths against a reference written from PROTOCOL section 3 ---------

VERDICT_DOMAIN = Domain(31337, bytes.fromhex("5fbdb2315678afecb367f032d93f642f64180aa3"))
VERDICT_PARAMS = Params.defaults()
VERDICT_NOW = VERDICT_PARAMS.genesis + 30 * 86_400
VIEWER_KEY = (0xA11CE).to_bytes(32, "big")
STRANGER_KEY = (0xB0B).to_bytes(32, "big")
VIEWER = address_of(VIEWER_KEY)
KNOWN_NODE, IDLE_NODE, UNKNOWN_NODE = (bytes([i]) * 20 for i in (1, 2, 3))
CONTENT, OWN_CONTENT, UNKNOWN_CONTENT = (bytes([i]) * 32 for i in (4, 5, 6))


def reference_reason(receipt, now: int, params: Params, registry: dict | None) -> str | None:
    """PROTOCOL 3 rows 2-7 as the page words them, in its order; uint64 values are Python
    ints, so nothing wraps; the signer comes from eth-account."""
    sig = receipt.signature
    r, s, v = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:64], "big"), sig[64]
    if v not in (27, 28) or not 1 <= r < SECP256K1_N or not 1 <= s <= SECP256K1_N // 2:
        return "NON_CANONICAL_SIGNATURE"
    issued, started = receipt.issued_at, receipt.started_at
    if issued > now + params.clock_skew:
        return "ISSUED_IN_FUTURE"
    if (
        issued < now - params.max_age
        or issued < params.genesis
        or (started <= issued and issued - started > params.max_session_age)
    ):
        return "TOO_OLD"
    if started > issued:
        return "IMPLAUSIBLE"
    elapsed = issued - started + params.segment_seconds
    node = getattr(receipt, "node", None)
    if node is not None:
        served, segments = receipt.bytes_served, receipt.segments_served
        if (
            8 * served > params.max_bitrate * elapsed
            or params.segment_seconds * segments > elapsed + params.max_lead_seconds
            or served < params.min_segment_bytes * segments
        ):
            return "IMPLAUSIBLE"
    elif receipt.watch_seconds > elapsed:
        return "IMPLAUSIBLE"
    if registry is not None:
        if node is not None and not registry["nodes"].get(node, False):
            return "UNKNOWN_NODE"
        if receipt.content_id not in registry["content"]:
            return "UNKNOWN_CONTENT"
        if registry["allowlist"] and receipt.viewer not in registry["viewers"]:
            return "UNKNOWN_VIEWER"
    creator = registry["content"].get(receipt.content_id) if registry else None
    if node == receipt.viewer or creator == receipt.viewer:
        return "SELF_DEALING"
    message = encode_typed_data(full_message=typed_data(receipt, VERDICT_DOMAIN))
    try:
        signer = Account.recover_message(message, signature=sig)
    except Exception:  # eth-keys' BadSignature family: r is no curve point
        return "SIGNER_MISMATCH"
    return None if signer.lower() == "0x" + receipt.viewer.hex() else "SIGNER_MISMATCH"


def _near(*points: int) -> st.SearchStrategy[int]:
    """Integers at and around the given bounds (one either side), clipped to uint64."""
    return st.sampled_from(
        sorted({min(max(p + d, 0), UINT64_MAX) for p in points for d in (-1, 0, 1)})
    )


def _mostly(draw, usual: st.SearchStrategy[int], *others: st.SearchStrategy[int]) -> int:
    # `usual` 7 times in 10, else one of the others: enough receipts reach the late rows.
    pick = draw(st.integers(0, 9))
    return draw(usual if pick < 7 or not others else others[pick % len(others)])


@st.composite
def judged_receipts(draw):
    p, now = VERDICT_PARAMS, VERDICT_NOW
    seg, lead = p.segment_seconds, p.max_lead_seconds
    issued = _mostly(
        draw,
        st.integers(now - 3600, now),
        _near(now + p.clock_skew, now - p.max_age, p.genesis),
        uint64,
    )
    started = _mostly(
        draw,
        st.integers(0, 3600).map(lambda age: max(issued - age, 0)),
        _near(issued - p.max_session_age, issued, issued + p.max_session_age),
        uint64,
    )
    elapsed = issued - started + seg
    segments = _mostly(
        draw,
        st.integers(0, 64),
        _near(max(elapsed + lead, 0) // seg, 0, UINT32_MAX - 1),
        uint32,
    )
    segments = min(segments, UINT32_MAX)  # the lead bound of a long-ago start is no uint32
    served = _mostly(
        draw,
        st.integers(p.min_segment_bytes * segments, p.min_segment_bytes * segments + (1 << 22)),
        _near(p.min_segment_bytes * segments, max(p.max_bitrate * elapsed, 0) // 8),
        uint64,
    )
    served = min(served, UINT64_MAX)
    session = draw(bytes32)
    node = draw(st.sampled_from([KNOWN_NODE, KNOWN_NODE, IDLE_NODE, UNKNOWN_NODE, VIEWER]))
    content = draw(st.sampled_from([CONTENT, CONTENT, OWN_CONTENT, UNKNOWN_CONTENT]))
    if draw(st.booleans()):
        receipt = DeliveryReceipt(session, VIEWER, node, content, started, served, segments, issued)
    else:
        watch = _mostly(
            draw, st.integers(0, max(min(elapsed, UINT32_MAX), 0)), _near(elapsed), uint32
        )
        receipt = ViewReceipt(session, VIEWER, content, started, min(watch, UINT32_MAX), issued)
    key = draw(st.sampled_from([VIEWER_KEY] * 4 + [STRANGER_KEY]))
    sig = sign(receipt, VERDICT_DOMAIN, key).signature
    tweak = draw(st.sampled_from(["none"] * 8 + ["high_s", "v"]))
    if tweak == "high_s":
        s = SECP256K1_N - int.from_bytes(sig[32:64], "big")
        sig = sig[:32] + s.to_bytes(32, "big") + bytes((55 - sig[64],))
    elif tweak == "v":
        sig = sig[:64] + bytes((sig[64] - 27,))
    return dataclasses.replace(receipt, signature=sig)


@st.composite
def registries(draw):
    if draw(st.integers(0, 3)) == 0:
        return None
    return {
        "nodes": {KNOWN_NODE: True, IDLE_NODE: False},
        "content": {CONTENT: address_of(STRANGER_KEY), OWN_CONTENT: VIEWER},
        "allowlist": draw(st.booleans()),
        "viewers": frozenset(draw(st.sampled_from([(), (VIEWER,)]))),
    }


def _gate_of(registry: dict | None):
    if registry is None:
        return None
    snapshot = RegistrySnapshot(
        1,
        {a: ("n", active) for a, active in registry["nodes"].items()},
        registry["content"],
        registry["viewers"],
    )
    return registry_gate(snapshot, registry["allowlist"])


@settings(max_examples=1_500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(receipts=st.lists(judged_receipts(), min_size=1, max_size=4), registry=registries())
def test_verdicts_match_the_protocol_reference(receipts, registry):
    gate = _gate_of(registry)
    p, now = VERDICT_PARAMS, VERDICT_NOW
    for receipt in receipts:
        want = reference_reason(receipt, now, p, registry)
        fast = verify(receipt, VERDICT_DOMAIN, p, now, gate)
        wire = verify_wire(dumps_wire(receipt), VERDICT_DOMAIN, p, now, gate)
        assert fast == wire
        assert (None if fast.accepted else fast.reason.value) == want, (receipt, fast)
    if gate is None:  # the batch path (process pool or inline) gives the same, in order
        batch = verify_batch(receipts, VERDICT_DOMAIN, p, now, workers=1)
        assert batch == [verify(r, VERDICT_DOMAIN, p, now) for r in receipts]


def test_the_reference_sees_every_verdict():
    # The strategies reach every reason the reference can give, so the comparison above
    # is not won by a strategy that never gets there.
    seen: set[str | None] = set()

    @settings(max_examples=1_500, deadline=None, database=None)
    @given(receipt=judged_receipts(), registry=registries())
    def collect(receipt, registry):
        seen.add(reference_reason(receipt, VERDICT_NOW, VERDICT_PARAMS, registry))

    collect()
    assert seen >= {
        None,
        "NON_CANONICAL_SIGNATURE",
        "ISSUED_IN_FUTURE",
        "TOO_OLD",
        "IMPLAUSIBLE",
        "UNKNOWN_NODE",
        "UNKNOWN_CONTENT",
        "UNKNOWN_VIEWER",
        "SELF_DEALING",
        "SIGNER_MISMATCH",
    }

"""Wire parsing, verdict order and batches of settlement.domain.receipts."""

from __future__ import annotations

import dataclasses
import json

import orjson
import pytest

from settlement import parallel as P
from settlement.config import Settings
from settlement.domain import receipts as R
from settlement.domain import secp
from settlement.domain.receipts import (
    ACCEPTED,
    SECP256K1_N,
    DeliveryReceipt,
    Domain,
    MalformedReceipt,
    Params,
    Reason,
    Rejected,
    ViewReceipt,
    address_of,
    digest,
    sign,
    verify,
)
from settlement.domain.wire import dumps_wire, parse_wire, to_wire, verify_wire
from settlement.errors import InputError, SettlementError
from settlement.parallel import verify_batch, verify_wire_batch

KEY = bytes.fromhex("4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318")
OTHER_KEY = (7).to_bytes(32, "big")
VIEWER = address_of(KEY)
NODE = bytes.fromhex("11" * 20)
DOMAIN = Domain(31337, bytes.fromhex("5fbdb2315678afecb367f032d93f642f64180aa3"))
PARAMS = Params.defaults()
NOW = 1_767_230_000


def delivery(key: bytes = KEY, **changes) -> DeliveryReceipt:
    base = DeliveryReceipt(
        session_id=bytes.fromhex("ab" * 32),
        viewer=VIEWER,
        node=NODE,
        content_id=bytes.fromhex("cd" * 32),
        started_at=NOW - 100,
        bytes_served=1_048_576,
        segments_served=4,
        issued_at=NOW - 10,
    )
    return sign(dataclasses.replace(base, **changes), DOMAIN, key)


def view(**changes) -> ViewReceipt:
    base = ViewReceipt(
        session_id=bytes.fromhex("ab" * 32),
        viewer=VIEWER,
        content_id=bytes.fromhex("cd" * 32),
        started_at=NOW - 100,
        watch_seconds=16,
        issued_at=NOW - 10,
    )
    return sign(dataclasses.replace(base, **changes), DOMAIN, KEY)


def wire_text(receipt, **overrides) -> str:
    obj = to_wire(receipt)
    obj.update(overrides)
    return json.dumps(obj)


def malformed(obj) -> MalformedReceipt:
    with pytest.raises(MalformedReceipt) as caught:
        parse_wire(obj)
    return caught.value


# --- parameters --------------------------------------------------------------------


def test_params_from_settings_use_protocol_names():
    settings = Settings(clock_skew=5, max_age=6, max_session_age=7, segment_seconds=2)
    params = Params.from_settings(settings)
    assert (params.clock_skew, params.max_age, params.max_session_age) == (5, 6, 7)
    assert params.segment_seconds == 2
    assert params.genesis == settings.genesis
    assert params.max_bitrate == settings.max_bitrate


def test_params_defaults_are_the_settings_declared_defaults():
    # The domain holds PROTOCOL's defaults itself (it must not import the config module).
    assert Params.defaults() == Params.from_settings(Settings.model_construct())


def test_domain_separator_is_computed_once_and_validated():
    assert len(DOMAIN.separator) == 32
    assert Domain.from_hex(31337, "0x5FbDB2315678afecb367f032d93F642f64180aa3") == DOMAIN
    with pytest.raises(InputError, match="distributor"):
        Domain.from_hex(1, "0x1234")
    with pytest.raises(InputError):
        Domain(-1, bytes(20))


def test_malformed_is_an_input_error_in_the_one_tree():
    error = MalformedReceipt("viewer", "missing")
    assert isinstance(error, InputError) and isinstance(error, SettlementError)
    assert (error.field, error.message, str(error)) == ("viewer", "missing", "viewer: missing")


# --- wire round trip ---------------------------------------------------------------


@pytest.mark.parametrize("receipt", [delivery(), view()], ids=["delivery", "view"])
def test_wire_round_trip_in_every_input_form(receipt):
    obj = to_wire(receipt)
    assert obj["kind"] == receipt.kind
    assert obj["sessionId"] == "0x" + "ab" * 32 and obj["startedAt"] == NOW - 100
    line = dumps_wire(receipt)
    for form in (obj, line, line.decode(), bytearray(line), json.dumps(obj, indent=2)):
        assert parse_wire(form) == receipt


def test_integers_may_be_strings_and_hex_any_case():
    text = wire_text(delivery(), bytesServed="1048576", startedAt=str(NOW - 100))
    text = text.replace("0x" + "ab" * 32, "0x" + "aB" * 32)
    assert parse_wire(text) == delivery()


def test_extreme_values_round_trip():
    r = dataclasses.replace(
        delivery(), started_at=0, bytes_served=2**64 - 1, segments_served=2**32 - 1, issued_at=0
    )
    assert parse_wire(dumps_wire(r)) == r
    assert parse_wire(wire_text(r, bytesServed=str(2**64 - 1))) == r


# --- MALFORMED messages ------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "field", "words"),
    [
        ({"bytesServed": 1.5}, "bytesServed", "float 1.5"),
        ({"bytesServed": True}, "bytesServed", "boolean true"),
        ({"bytesServed": None}, "bytesServed", "null"),
        ({"bytesServed": -1}, "bytesServed", "without sign"),
        ({"bytesServed": 2**64}, "bytesServed", "out of range for uint64"),
        ({"segmentsServed": 2**32}, "segmentsServed", "out of range for uint32"),
        ({"segmentsServed": "4294967296"}, "segmentsServed", "out of range for uint32"),
        ({"bytesServed": "01"}, "bytesServed", "^(0|[1-9][0-9]*)$"),
        ({"bytesServed": "+1"}, "bytesServed", "^(0|[1-9][0-9]*)$"),
        ({"bytesServed": " 1"}, "bytesServed", "^(0|[1-9][0-9]*)$"),
        ({"bytesServed": "\uff11"}, "bytesServed", "^(0|[1-9][0-9]*)$"),  # a fullwidth digit
        ({"bytesServed": [1]}, "bytesServed", "array"),
        ({"viewer": "0x1234"}, "viewer", "wrong length"),
        ({"viewer": "0X" + "11" * 20}, "viewer", "must start with 0x"),
        ({"viewer": "11" * 21}, "viewer", "must start with 0x"),
        ({"viewer": "0x" + "g1" * 20}, "viewer", "hex digits"),
        ({"viewer": "0x" + "11 " * 13 + "1"}, "viewer", "hex digits"),
        ({"viewer": 5}, "viewer", "hex string"),
        ({"signature": "0x" + "00" * 64}, "signature", "wrong length"),
        ({"kind": "View"}, "kind", 'must be "delivery" or "view"'),
        ({"kind": 1}, "kind", 'must be "delivery" or "view"'),
        ({"extra": 1}, "extra", "unknown field"),
        ({"watchSeconds": 1}, "watchSeconds", "unknown field"),
    ],
)
def test_malformed_names_field_and_fault(override, field, words):
    error = malformed(wire_text(delivery(), **override))
    assert error.field == field
    assert words in error.message


@pytest.mark.parametrize(
    ("token", "words"),
    [
        ("1e3", "exponent"),
        ("1E3", "exponent"),
        ("1.0", "float 1.0"),
        ("-0", "without sign"),
        ("-5", "without sign"),
        ("NaN", "NaN"),
        ("Infinity", "Infinity"),
        ("123456789012345678901234567890123456789012345", "out of range"),
    ],
)
def test_number_tokens_are_judged_as_written(token, words):
    text = wire_text(delivery(), bytesServed=0).replace(
        '"bytesServed": 0', f'"bytesServed": {token}'
    )
    error = malformed(text)
    assert error.field == "bytesServed"
    assert words in error.message


def test_missing_unknown_and_repeated_fields():
    obj = to_wire(delivery())
    del obj["node"]
    assert (malformed(obj).field, malformed(obj).message) == ("node", "missing")
    del obj["kind"]
    assert (malformed(obj).field, malformed(obj).message) == ("kind", "missing")
    # A repeated key is only visible in the text: both the fast and the strict path see it.
    text = dumps_wire(delivery()).decode()
    repeated = text.replace('"node":', '"node":"0x' + "22" * 20 + '","node":')
    assert (malformed(repeated).field, malformed(repeated).message) == ("node", "repeated field")
    escaped = text.replace('"node":', '"no\\u0064e":"0x' + "22" * 20 + '","node":')
    assert (malformed(escaped).field, malformed(escaped).message) == ("node", "repeated field")


def test_not_an_object_or_not_json():
    assert malformed("[]").field == "(receipt)"
    assert malformed("42").field == "(receipt)"
    assert malformed(b'{"kind": ').field == "(json)"
    assert malformed(b"\xff\xfe").field == "(json)"
    assert malformed("\ud800").field == "(json)"
    assert malformed(3.5).field == "(receipt)"


def test_colons_inside_values_do_not_hide_or_fake_a_repeat():
    obj = to_wire(delivery())
    obj["node"] = "a:b"
    assert malformed(json.dumps(obj)).message.startswith("must start with 0x")


# --- verdicts in PROTOCOL order ----------------------------------------------------


def test_valid_receipts_are_accepted():
    assert verify(delivery(), DOMAIN, PARAMS, NOW) is ACCEPTED
    assert verify(view(), DOMAIN, PARAMS, NOW) is ACCEPTED
    assert verify_wire(dumps_wire(delivery()), DOMAIN, PARAMS, NOW).accepted


def reason(receipt, now=NOW, params=PARAMS, domain=DOMAIN) -> Reason | None:
    verdict = verify(receipt, domain, params, now)
    return None if verdict.accepted else verdict.reason


def with_sig(receipt, r: int | None = None, s: int | None = None, v: int | None = None):
    sig = receipt.signature
    r = int.from_bytes(sig[:32], "big") if r is None else r
    s = int.from_bytes(sig[32:64], "big") if s is None else s
    v = sig[64] if v is None else v
    return dataclasses.replace(
        receipt, signature=r.to_bytes(32, "big") + s.to_bytes(32, "big") + bytes((v,))
    )


def test_hand_built_garbage_is_malformed_not_an_exception():
    good = delivery()
    for bad in (
        dataclasses.replace(good, viewer=b"short"),
        dataclasses.replace(good, viewer="0x" + "11" * 20),
        dataclasses.replace(good, started_at=-1),
        dataclasses.replace(good, segments_served=2**32),
        dataclasses.replace(good, bytes_served=1.0),
        dataclasses.replace(good, signature=b""),
        "not a receipt",
        None,
    ):
        verdict = verify(bad, DOMAIN, PARAMS, NOW)
        assert verdict == Rejected(Reason.MALFORMED, verdict.detail)
        assert verdict.detail


def test_non_canonical_signatures():
    good = delivery()
    s = int.from_bytes(good.signature[32:64], "big")
    flipped = 55 - good.signature[64]
    assert reason(with_sig(good, s=SECP256K1_N - s, v=flipped)) is Reason.NON_CANONICAL_SIGNATURE
    assert reason(with_sig(good, v=good.signature[64] - 27)) is Reason.NON_CANONICAL_SIGNATURE
    assert reason(with_sig(good, v=29)) is Reason.NON_CANONICAL_SIGNATURE
    assert reason(with_sig(good, r=0)) is Reason.NON_CANONICAL_SIGNATURE
    assert reason(with_sig(good, r=SECP256K1_N)) is Reason.NON_CANONICAL_SIGNATURE
    assert reason(with_sig(good, s=0)) is Reason.NON_CANONICAL_SIGNATURE
    assert reason(with_sig(good, s=R.SECP256K1_HALF_N + 1)) is Reason.NON_CANONICAL_SIGNATURE
    # At the boundary s == n/2 is canonical: it goes on to recovery (and mismatches).
    assert reason(with_sig(good, s=R.SECP256K1_HALF_N)) is Reason.SIGNER_MISMATCH


def test_time_window_boundaries():
    skew, max_age = PARAMS.clock_skew, PARAMS.max_age
    assert reason(delivery(issued_at=NOW + skew)) is None
    assert reason(delivery(issued_at=NOW + skew + 1)) is Reason.ISSUED_IN_FUTURE
    later = PARAMS.genesis + 2 * max_age  # so that now - max_age is after genesis
    old = later - max_age
    assert reason(delivery(issued_at=old, started_at=old - 10), now=later) is None
    assert reason(delivery(issued_at=old - 1, started_at=old - 10), now=later) is Reason.TOO_OLD
    early = PARAMS.genesis - 1
    assert reason(delivery(issued_at=early, started_at=early - 10), now=early) is Reason.TOO_OLD
    long = PARAMS.max_session_age
    zero = {"bytes_served": 0, "segments_served": 0}
    assert reason(delivery(started_at=NOW - 10 - long, **zero)) is None
    assert reason(delivery(started_at=NOW - 11 - long, **zero)) is Reason.TOO_OLD


def test_implausible_boundaries():
    assert reason(delivery(started_at=NOW - 9)) is Reason.IMPLAUSIBLE  # after issuedAt
    elapsed = 90 + PARAMS.segment_seconds
    at_limit = PARAMS.max_bitrate * elapsed // 8
    assert reason(delivery(bytes_served=at_limit)) is None
    assert reason(delivery(bytes_served=at_limit + 1)) is Reason.IMPLAUSIBLE
    assert reason(view(watch_seconds=elapsed)) is None
    assert reason(view(watch_seconds=elapsed + 1)) is Reason.IMPLAUSIBLE


def test_self_dealing_and_signer_mismatch():
    assert reason(delivery(node=VIEWER)) is Reason.SELF_DEALING
    assert reason(delivery(), domain=Domain(1, DOMAIN.verifying_contract)) is Reason.SIGNER_MISMATCH
    assert reason(delivery(), domain=Domain(31337, bytes(20))) is Reason.SIGNER_MISMATCH
    # tampered after signing, still plausible (1 byte more): only the signature tells
    assert reason(dataclasses.replace(delivery(), bytes_served=1_048_577)) is Reason.SIGNER_MISMATCH
    assert reason(delivery(key=OTHER_KEY)) is Reason.SIGNER_MISMATCH
    # r with no curve point: recovery fails, which is a mismatch too.
    no_point = with_sig(delivery(), r=5)
    assert R.recover_signer(no_point, DOMAIN) is None
    assert reason(no_point) is Reason.SIGNER_MISMATCH


def test_order_first_failing_check_wins():
    # Future, implausible, self-dealing and badly signed at once: the time check is first.
    bad = dataclasses.replace(
        delivery(issued_at=NOW + 10_000, node=VIEWER, bytes_served=2**60), bytes_served=2**61
    )
    assert reason(bad) is Reason.ISSUED_IN_FUTURE
    assert reason(with_sig(bad, v=0)) is Reason.NON_CANONICAL_SIGNATURE
    assert reason(dataclasses.replace(bad, issued_at=NOW)) is Reason.IMPLAUSIBLE


def judged(receipt, now=NOW, params=PARAMS) -> tuple[Reason | None, str]:
    """Reason and detail of verify(), checked to agree with verify_wire() on its wire text."""
    verdict = verify(receipt, DOMAIN, params, now)
    assert verify_wire(dumps_wire(receipt), DOMAIN, params, now) == verdict
    return (None, "") if verdict.accepted else (verdict.reason, verdict.detail)


def test_segments_against_elapsed_time_plus_the_lead():
    # elapsed = 90 + segment_seconds; segments may cover elapsed + max_lead_seconds.
    seg, lead = PARAMS.segment_seconds, PARAMS.max_lead_seconds
    room = 90 + seg + lead
    most = room // seg
    plenty = PARAMS.min_segment_bytes * (most + 1)
    assert judged(delivery(segments_served=most, bytes_served=plenty)) == (None, "")
    got, detail = judged(delivery(segments_served=most + 1, bytes_served=plenty))
    assert got is Reason.IMPLAUSIBLE
    assert detail == (
        f"segment_seconds * segmentsServed = {seg * (most + 1)} > "
        f"elapsed {90 + seg} s + max_lead_seconds {lead}"
    )
    # exactly at the bound: elapsed + lead a multiple of segment_seconds
    exact = dataclasses.replace(PARAMS, max_lead_seconds=lead + (-room) % seg)
    at = (90 + seg + exact.max_lead_seconds) // seg
    assert seg * at == 90 + seg + exact.max_lead_seconds
    assert judged(delivery(segments_served=at, bytes_served=plenty), params=exact)[0] is None
    assert judged(delivery(segments_served=at + 1, bytes_served=plenty), params=exact)[0] is (
        Reason.IMPLAUSIBLE
    )
    # the attack of PROTOCOL 8: every segment a uint32 holds, no bytes, to lift the watch clip
    got, detail = judged(delivery(segments_served=2**32 - 1, bytes_served=0))
    assert got is Reason.IMPLAUSIBLE and detail.startswith("segment_seconds * segmentsServed")
    # no lead at all: a player may not run ahead of elapsed time
    none = dataclasses.replace(PARAMS, max_lead_seconds=0)
    assert judged(delivery(segments_served=(90 + seg) // seg), params=none)[0] is None
    assert judged(delivery(segments_served=(90 + seg) // seg + 1), params=none)[0] is (
        Reason.IMPLAUSIBLE
    )


def test_bytes_per_segment_at_least_min_segment_bytes():
    least = PARAMS.min_segment_bytes
    assert judged(delivery(segments_served=4, bytes_served=4 * least)) == (None, "")
    got, detail = judged(delivery(segments_served=4, bytes_served=4 * least - 1))
    assert got is Reason.IMPLAUSIBLE
    assert detail == (f"bytesServed {4 * least - 1} < min_segment_bytes {least} * segmentsServed 4")
    assert judged(delivery(segments_served=0, bytes_served=0)) == (None, "")
    assert judged(delivery(segments_served=1, bytes_served=0))[0] is Reason.IMPLAUSIBLE
    # a view receipt has no segments: the delivery checks leave it alone
    assert judged(view(watch_seconds=16)) == (None, "")


def test_implausible_checks_in_protocol_order():
    # Over the bitrate, beyond the lead and under min bytes per segment cannot all hold at
    # once (more bytes than the bitrate allows is never too few): pin each adjacent pair.
    elapsed = 90 + PARAMS.segment_seconds
    over = PARAMS.max_bitrate * elapsed // 8 + 1
    got, detail = judged(delivery(bytes_served=over, segments_served=2**32 - 1))
    assert got is Reason.IMPLAUSIBLE and detail.startswith("8 * bytesServed"), detail
    got, detail = judged(delivery(bytes_served=1, segments_served=2**32 - 1))
    assert got is Reason.IMPLAUSIBLE and detail.startswith("segment_seconds * segmentsServed")
    got, detail = judged(delivery(started_at=NOW - 9, segments_served=2**32 - 1, bytes_served=0))
    assert got is Reason.IMPLAUSIBLE and detail.startswith("startedAt"), detail


def test_time_window_order_future_then_too_old_and_its_three_checks():
    skew, max_age, session = PARAMS.clock_skew, PARAMS.max_age, PARAMS.max_session_age
    # in the future and a session longer than max_session_age: ISSUED_IN_FUTURE first
    future = NOW + skew + 1
    got, detail = judged(delivery(issued_at=future, started_at=future - session - 1))
    assert got is Reason.ISSUED_IN_FUTURE, detail
    # before now - max_age, before genesis and too long a session: max_age first
    later = PARAMS.genesis + 2 * max_age
    issued = PARAMS.genesis - 1
    all_three = {"issued_at": issued, "started_at": issued - session - 1}
    got, detail = judged(delivery(**all_three), now=later)
    assert (got, detail) == (Reason.TOO_OLD, f"issuedAt {issued} < now {later} - max_age")
    # before genesis and too long a session (inside max_age): genesis first
    got, detail = judged(delivery(**all_three), now=issued)
    assert (got, detail) == (Reason.TOO_OLD, f"issuedAt {issued} < genesis {PARAMS.genesis}")
    # the session check alone
    got, detail = judged(delivery(started_at=NOW - 11 - session, bytes_served=0, segments_served=0))
    assert (got, detail) == (
        Reason.TOO_OLD,
        f"issuedAt - startedAt = {session + 1} > max_session_age {session}",
    )
    # TOO_OLD before IMPLAUSIBLE
    old = {"issued_at": later - max_age - 1, "started_at": later - max_age - 60}
    assert judged(delivery(**old, segments_served=2**32 - 1), now=later)[0] is Reason.TOO_OLD
    # The session check needs startedAt <= issuedAt: a start after issue is IMPLAUSIBLE even
    # when the difference, computed in wrapping uint64 arithmetic, exceeds max_session_age.
    for started in (NOW - 10 + session + 1, 2**64 - 1):
        got, detail = judged(delivery(started_at=started))
        assert (got, detail) == (Reason.IMPLAUSIBLE, f"startedAt {started} > issuedAt {NOW - 10}")


def test_new_receipt_parameters_are_settings_validated_and_published(monkeypatch):
    from settlement.config import load_settings
    from settlement.errors import ConfigError
    from settlement.services.close import published_parameters

    monkeypatch.setenv("W2E_MAX_LEAD_SECONDS", "12")
    monkeypatch.setenv("W2E_MIN_SEGMENT_BYTES", "1000")
    settings = load_settings()
    params = Params.from_settings(settings)
    assert (params.max_lead_seconds, params.min_segment_bytes) == (12, 1000)
    published = published_parameters(settings)
    assert (published["maxLeadSeconds"], published["minSegmentBytes"]) == (12, 1000)
    defaults = Params.defaults()
    assert (defaults.max_lead_seconds, defaults.min_segment_bytes) == (30, 8192)
    for name, value in [
        ("W2E_MAX_LEAD_SECONDS", "-1"),
        ("W2E_MIN_SEGMENT_BYTES", "-1"),
        ("W2E_MIN_SEGMENT_BYTES", "1.5"),
        ("W2E_MAX_LEAD_SECONDS", str(2**64)),
    ]:
        monkeypatch.setenv(name, value)
        with pytest.raises(ConfigError, match=name):  # the variable, named
            load_settings()
        monkeypatch.delenv(name)


def test_gate_runs_after_the_cheap_checks_and_before_self_dealing_and_the_signature():
    calls: list[tuple] = []

    def gate(viewer, node, content_id):
        calls.append((viewer, node, content_id))
        return R.Rejected(Reason.UNKNOWN_NODE, "not registered")

    # A node that is also the viewer and a forged signature: the gate (check 5) wins.
    forged = delivery(key=OTHER_KEY, node=VIEWER)
    assert verify(forged, DOMAIN, PARAMS, NOW, gate).reason is Reason.UNKNOWN_NODE
    assert calls == [(VIEWER, VIEWER, forged.content_id)]
    wire_forged = verify_wire(to_wire(forged), DOMAIN, PARAMS, NOW, gate)
    assert wire_forged.reason is Reason.UNKNOWN_NODE
    assert calls[-1] == (VIEWER, VIEWER, forged.content_id)
    # A view receipt reaches the gate with no node.
    assert verify(view(), DOMAIN, PARAMS, NOW, gate).reason is Reason.UNKNOWN_NODE
    assert calls[-1] == (VIEWER, None, view().content_id)
    # Checks 1-4 come first: the gate is not even called.
    calls.clear()
    assert verify(delivery(issued_at=NOW + 10_000), DOMAIN, PARAMS, NOW, gate).reason is (
        Reason.ISSUED_IN_FUTURE
    )
    assert calls == []
    # A gate that lets it pass leaves the later checks in place.
    assert verify(forged, DOMAIN, PARAMS, NOW, lambda *_: None).reason is Reason.SELF_DEALING
    assert verify(delivery(), DOMAIN, PARAMS, NOW, lambda *_: None).accepted


def test_digest_ignores_signature_and_rejects_bad_fields():
    r = delivery()
    assert digest(r, DOMAIN) == digest(dataclasses.replace(r, signature=b""), DOMAIN)
    with pytest.raises(MalformedReceipt, match="viewer"):
        digest(dataclasses.replace(r, viewer=b"x"), DOMAIN)


# --- batches ------------------------------------------------------------------------


def _mixed_batch(n: int) -> list:
    kinds = [
        delivery(),
        view(),
        delivery(node=VIEWER),
        delivery(issued_at=NOW + 1000),
        with_sig(delivery(), v=0),
        dataclasses.replace(delivery(), bytes_served=1_048_577),
    ]
    return [kinds[i % len(kinds)] for i in range(n)]


def test_batch_inline_and_pool_agree_in_input_order():
    receipts = _mixed_batch(600)
    expected = [verify(r, DOMAIN, PARAMS, NOW) for r in receipts]
    assert verify_batch(receipts, DOMAIN, PARAMS, NOW, workers=1) == expected
    assert verify_batch(receipts, DOMAIN, PARAMS, NOW, workers=2, inline_below=0) == expected
    pool = P._pool
    assert pool is not None
    lines = [dumps_wire(r) for r in receipts] + [b'{"kind": "view"}', b"nope"]
    wire_expected = [verify_wire(x, DOMAIN, PARAMS, NOW) for x in lines]
    assert wire_expected[-1].reason is Reason.MALFORMED
    assert verify_wire_batch(lines, DOMAIN, PARAMS, NOW, workers=2, inline_below=0) == wire_expected
    assert P._pool is pool  # started once, reused
    P.shutdown_pool()
    assert P._pool is None


def test_small_batches_run_inline_without_a_pool():
    P.shutdown_pool()
    verdicts = verify_batch(_mixed_batch(12), DOMAIN, PARAMS, NOW)
    assert [v.accepted for v in verdicts[:2]] == [True, True]
    assert [v.reason for v in verdicts[2:6]] == [
        Reason.SELF_DEALING,
        Reason.ISSUED_IN_FUTURE,
        Reason.NON_CANONICAL_SIGNATURE,
        Reason.SIGNER_MISMATCH,
    ]
    assert P._pool is None


def test_wire_fast_path_is_only_taken_when_safe():
    line = dumps_wire(delivery())
    assert orjson.loads(line)["node"] == "0x" + NODE.hex()
    assert parse_wire(line) == delivery()


def test_known_key_memo_never_changes_a_verdict(monkeypatch):
    secp._known_keys.clear()
    assert verify(delivery(), DOMAIN, PARAMS, NOW) is ACCEPTED
    assert VIEWER in secp._known_keys  # learnt from a verified recovery
    # Same viewer, another key's signature: the memo misses and the full check rejects.
    assert reason(delivery(key=OTHER_KEY)) is Reason.SIGNER_MISMATCH
    assert verify(view(), DOMAIN, PARAMS, NOW) is ACCEPTED
    # A full memo is emptied, not grown.
    monkeypatch.setattr(secp, "_KNOWN_KEYS_MAX", 1)
    secp._known_keys[b"\x01" * 20] = secp._known_keys.pop(VIEWER)
    assert verify(delivery(), DOMAIN, PARAMS, NOW) is ACCEPTED
    assert list(secp._known_keys) == [VIEWER]


def test_int_fields_follow_struct_rules_everywhere():
    # A bool is an int to struct.pack: digest and verify agree on it, and on bytearray.
    r = delivery()
    as_bool = dataclasses.replace(r, segments_served=True)
    assert digest(as_bool, DOMAIN) == digest(dataclasses.replace(r, segments_served=1), DOMAIN)
    assert reason(as_bool) is Reason.SIGNER_MISMATCH
    as_bytearray = dataclasses.replace(r, node=bytearray(r.node))
    assert reason(as_bytearray) is Reason.MALFORMED
    with pytest.raises(MalformedReceipt, match="node"):
        digest(as_bytearray, DOMAIN)

"""parse_batch, the body of POST /v1/receipts: one item per receipt, whatever its numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from settlement.api.wire import parse_batch
from settlement.domain.receipts import Domain, Params
from settlement.domain.wire import verify_wire
from settlement.errors import InputError, PayloadTooLarge

VECTORS = json.loads(
    (Path(__file__).resolve().parents[1] / "vectors" / "receipts.json").read_text()
)
GOOD = json.dumps(VECTORS["cases"][0]["wire"], separators=(",", ":"))
NUMBER = '"bytesServed":1048576'
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


def batch(*items: str) -> bytes:
    return ('{"receipts":[' + ",".join(items) + "]}").encode()


def judged(body: bytes, max_batch: int = 100) -> list[tuple[str | None, str]]:
    out = []
    for item in parse_batch(body, max_batch):
        v = verify_wire(item, DOMAIN, PARAMS, VECTORS["now"])
        out.append((None, "") if v.accepted else (v.reason.value, v.detail))
    return out


@pytest.mark.parametrize(
    ("token", "detail"),
    [
        ("1e400", "bytesServed: must be an integer without exponent, got 1e400"),
        ("-1e400", "bytesServed: must be an unsigned integer without sign, got -1e400"),
        ("1.5e999", "bytesServed: must be an integer without exponent, got 1.5e999"),
        (
            "9" * 400,
            "bytesServed: out of range for uint64 (max 18446744073709551615), "
            "got 99999999999999999999... (400 characters)",
        ),
        (
            "9" * 25,
            f"bytesServed: out of range for uint64 (max 18446744073709551615), got {'9' * 25}",
        ),
    ],
)
def test_a_number_no_parser_type_holds_is_malformed_in_its_item_only(token, detail):
    assert NUMBER in GOOD
    bad = GOOD.replace(NUMBER, f'"bytesServed":{token}')
    assert judged(batch(GOOD, bad, GOOD)) == [(None, ""), ("MALFORMED", detail), (None, "")]


def test_huge_numbers_anywhere_in_an_item_or_as_an_item():
    session = json.loads(GOOD)["sessionId"]
    in_hex_field = GOOD.replace(f'"{session}"', "1e400")
    got = judged(batch("1e400", in_hex_field, "9" * 400, GOOD))
    assert [r for r, _ in got] == ["MALFORMED", "MALFORMED", "MALFORMED", None]
    assert got[0][1] == "(receipt): must be a JSON object, got the number 1e400"
    assert got[1][1].startswith("sessionId: must be a hex string")
    assert got[2][1].endswith("(400 characters)")


def test_still_not_json_is_refused_whole():
    for body in [
        batch(GOOD, "1e400")[:-1],  # cut short
        batch("NaN"),  # Python reads it, JSON has no NaN
        batch("1e400", "Infinity"),
        batch("1e400") + b"x",
    ]:
        with pytest.raises(InputError):
            parse_batch(body, 100)


def test_the_batch_limit_holds_on_the_strict_path_too():
    with pytest.raises(PayloadTooLarge, match="limit is 2"):
        parse_batch(batch("1e400", GOOD, GOOD), 2)
    assert len(parse_batch(batch("1e400", GOOD), 2)) == 2


def test_hex_prefix_lowercase_x_only_digits_any_case():
    wire = json.loads(GOOD)
    for name in ("sessionId", "viewer", "node", "contentId", "signature"):
        upper_x = json.dumps({**wire, name: "0X" + wire[name][2:]})
        upper_digits = json.dumps({**wire, name: "0x" + wire[name][2:].upper()})
        got = judged(batch(upper_x, upper_digits))
        assert got[0] == (
            "MALFORMED",
            f'{name}: must start with 0x (lowercase x), got "0X{wire[name][2:4]}"...',
        )
        assert got[1] == (None, "")

"""The receipt wire format (PROTOCOL section 2): receipts out as wire objects and EIP-712
typed data; JSON in, strictly, as receipts or MALFORMED verdicts naming the first fault.
"""

from __future__ import annotations

import json
from binascii import unhexlify as _unhexlify
from collections.abc import Mapping
from typing import Any, Final

import orjson

from settlement.domain.receipts import (
    _DELIVERY_KEYS,
    _DELIVERY_SPEC,
    _DELIVERY_STRUCT,
    _VIEW_KEYS,
    _VIEW_SPEC,
    _VIEW_STRUCT,
    DELIVERY_TYPEHASH,
    DOMAIN_NAME,
    DOMAIN_VERSION,
    KIND_DELIVERY,
    KIND_VIEW,
    UINT32_MAX,
    UINT64_MAX,
    VIEW_TYPEHASH,
    DeliveryReceipt,
    Domain,
    Gate,
    Params,
    Reason,
    Receipt,
    Rejected,
    Verdict,
    ViewReceipt,
    judge_values,
)
from settlement.errors import InputError, MalformedReceipt

__all__ = [
    "dumps_wire",
    "parse_wire",
    "to_wire",
    "typed_data",
    "verify_wire",
    "wire_items_from_array",
]


# --- out: wire objects and EIP-712 typed data ------------------------------------------


def to_wire(receipt: Receipt) -> dict[str, Any]:
    """PROTOCOL wire object: "kind", camelCase fields, lowercase 0x hex, ints as JSON numbers."""
    spec = _DELIVERY_SPEC if type(receipt) is DeliveryReceipt else _VIEW_SPEC
    out: dict[str, Any] = {"kind": receipt.kind}
    for wire_name, attr, kind, _ in spec:
        value = getattr(receipt, attr)
        out[wire_name] = "0x" + value.hex() if kind == "hex" else value
    return out


def dumps_wire(receipt: Receipt) -> bytes:
    """One receipt as compact JSON bytes (one NDJSON line without the newline)."""
    return orjson.dumps(to_wire(receipt))


_EIP712_TYPES: Final = {
    "EIP712Domain": [
        {"name": "name", "type": "string"},
        {"name": "version", "type": "string"},
        {"name": "chainId", "type": "uint256"},
        {"name": "verifyingContract", "type": "address"},
    ],
    "DeliveryReceipt": [
        {"name": "sessionId", "type": "bytes32"},
        {"name": "viewer", "type": "address"},
        {"name": "node", "type": "address"},
        {"name": "contentId", "type": "bytes32"},
        {"name": "startedAt", "type": "uint64"},
        {"name": "bytesServed", "type": "uint64"},
        {"name": "segmentsServed", "type": "uint32"},
        {"name": "issuedAt", "type": "uint64"},
    ],
    "ViewReceipt": [
        {"name": "sessionId", "type": "bytes32"},
        {"name": "viewer", "type": "address"},
        {"name": "contentId", "type": "bytes32"},
        {"name": "startedAt", "type": "uint64"},
        {"name": "watchSeconds", "type": "uint32"},
        {"name": "issuedAt", "type": "uint64"},
    ],
}


def typed_data(receipt: Receipt, domain: Domain) -> dict[str, Any]:
    """The receipt as standard EIP-712 typed data (eth_signTypedData_v4, eth-account's full_message).

    Wallet-based players sign this; tests hash it with eth-account to check `digest`.
    """
    primary = "DeliveryReceipt" if type(receipt) is DeliveryReceipt else "ViewReceipt"
    message = to_wire(receipt)
    del message["kind"], message["signature"]
    return {
        "types": {"EIP712Domain": _EIP712_TYPES["EIP712Domain"], primary: _EIP712_TYPES[primary]},
        "primaryType": primary,
        "domain": {
            "name": DOMAIN_NAME,
            "version": DOMAIN_VERSION,
            "chainId": domain.chain_id,
            "verifyingContract": "0x" + domain.verifying_contract.hex(),
        },
        "message": message,
    }


# --- in: strict parsing ---------------------------------------------------------------


class _BadNumber:
    """A JSON number token the protocol forbids (sign, fraction, exponent, NaN), kept verbatim."""

    __slots__ = ("token",)

    def __init__(self, token: str) -> None:
        self.token = token


class _Pairs(list[tuple[str, Any]]):
    """A JSON object as its key/value pairs in order, so repeated keys stay visible."""

    __slots__ = ()


def _parse_int_token(token: str) -> int | _BadNumber:
    # json hands us the token: "-0" must stay a sign error, huge tokens must not cost time.
    if token[0] == "-" or len(token) > 40:
        return _BadNumber(token)
    return int(token)


def _strict_loads(raw: bytes) -> Any:
    try:
        return json.loads(
            raw,
            object_pairs_hook=_Pairs,
            parse_int=_parse_int_token,
            parse_float=_BadNumber,
            parse_constant=_BadNumber,
        )
    except (ValueError, RecursionError) as error:  # JSONDecodeError and UnicodeDecodeError
        raise MalformedReceipt("(json)", f"not valid JSON: {error}") from None


def parse_wire(obj: Any) -> Receipt:
    """A receipt from its wire object (a dict, or the JSON bytes/str of one object).

    Raises MalformedReceipt(field, message) naming the first fault in field order. For a
    dict, repeated keys are already lost; pass the JSON text to have them detected.
    """
    values = _wire_values(obj)
    receipt: Receipt = values[0](*values[1:])
    return receipt


def _wire_values(obj: Any) -> tuple[Any, ...]:
    """(receipt class, field values in order) of a wire object; parse_wire without the object.

    The verifier takes the values as they are: building the frozen dataclass would cost
    as much as all the field checks together.
    """
    if type(obj) is bytes:
        raw = obj
    elif isinstance(obj, str):
        try:
            raw = obj.encode()
        except UnicodeEncodeError:
            raise MalformedReceipt("(json)", "text is not valid Unicode") from None
    elif isinstance(obj, bytes | bytearray | memoryview):
        raw = bytes(obj)
    elif type(obj) is _Pairs:  # an object of a JSON array read by wire_items_from_array
        return _values_from_pairs(obj)
    elif type(obj) is _NotAnObject:
        raise MalformedReceipt("(receipt)", f"must be a JSON object, got {_type_name(obj.value)}")
    elif isinstance(obj, Mapping):
        return _values_from_mapping(obj)
    else:
        raise MalformedReceipt("(receipt)", f"must be a JSON object, got {type(obj).__name__}")
    # Fast path: orjson, when the raw text proves nothing was lost. orjson keeps the last
    # of repeated keys and reads "-0" as 0. Every key token is followed by its own colon,
    # so colons >= key tokens >= distinct keys, and equality means no key came twice
    # (without backslashes no escape can hide a colon). Without "-" no number had a sign.
    if b"\\" not in raw and b"-" not in raw:
        try:
            d = orjson.loads(raw)
        except orjson.JSONDecodeError:
            d = None
        if type(d) is dict and raw.count(b":") == len(d):
            try:
                return _values_from_mapping(d)
            except MalformedReceipt:
                pass  # the strict path below names the fault with the exact token
    pairs = _strict_loads(raw)
    if type(pairs) is not _Pairs:
        raise MalformedReceipt("(receipt)", f"must be a JSON object, got {_type_name(pairs)}")
    return _values_from_pairs(pairs)


def _values_from_pairs(pairs: _Pairs) -> tuple[Any, ...]:
    d: dict[str, Any] = {}
    for key, value in pairs:
        if key in d:
            raise MalformedReceipt(key, "repeated field")
        d[key] = value
    return _values_from_mapping(d)


class _NotAnObject:
    """An item of a JSON array of receipts that is no object (kept to be judged MALFORMED)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


def wire_items_from_array(raw: bytes | str, *, constants: bool = True) -> list[Any]:
    """The items of a JSON array of wire receipts, for verify_wire and verify_wire_batch.

    Each item keeps what the text said (repeated keys, number tokens of any size), so a
    bad item gets its own MALFORMED verdict. Raises InputError when the text is no JSON
    array: then no item can be told from the next; with `constants=False` also when it
    holds NaN or Infinity, which Python reads but JSON does not have.
    """
    try:
        value = json.loads(
            raw,
            object_pairs_hook=_Pairs,
            parse_int=_parse_int_token,
            parse_float=_BadNumber,
            parse_constant=_BadNumber if constants else _no_constant,
        )
    except (ValueError, RecursionError) as error:
        raise InputError(f"not a valid JSON array of receipts: {error}") from None
    if type(value) is not list:
        raise InputError(f"expected a JSON array of receipts, got {_type_name(value)}")
    return [item if type(item) is _Pairs else _NotAnObject(item) for item in value]


def _no_constant(token: str) -> Any:
    raise ValueError(f"{token} is not JSON")


def _values_from_mapping(d: Mapping[str, Any]) -> tuple[Any, ...]:
    kind = d.get("kind")
    if kind == KIND_DELIVERY:
        keys = _DELIVERY_KEYS
    elif kind == KIND_VIEW:
        keys = _VIEW_KEYS
    elif "kind" not in d:
        raise MalformedReceipt("kind", "missing")
    else:
        raise MalformedReceipt("kind", f'must be "delivery" or "view", got {_show(kind)}')
    if len(d) != len(keys) or not keys.issuperset(d):
        unknown = sorted(str(k) for k in d if k not in keys)
        if unknown:
            raise MalformedReceipt(unknown[0], "unknown field")
        spec = _DELIVERY_SPEC if kind == KIND_DELIVERY else _VIEW_SPEC
        missing = next(s[0] for s in spec if s[0] not in d)
        raise MalformedReceipt(missing, "missing")
    if kind == KIND_DELIVERY:
        return (
            DeliveryReceipt,
            _hex(d["sessionId"], 32, "sessionId"),
            _hex(d["viewer"], 20, "viewer"),
            _hex(d["node"], 20, "node"),
            _hex(d["contentId"], 32, "contentId"),
            _uint(d["startedAt"], UINT64_MAX, "startedAt"),
            _uint(d["bytesServed"], UINT64_MAX, "bytesServed"),
            _uint(d["segmentsServed"], UINT32_MAX, "segmentsServed"),
            _uint(d["issuedAt"], UINT64_MAX, "issuedAt"),
            _hex(d["signature"], 65, "signature"),
        )
    return (
        ViewReceipt,
        _hex(d["sessionId"], 32, "sessionId"),
        _hex(d["viewer"], 20, "viewer"),
        _hex(d["contentId"], 32, "contentId"),
        _uint(d["startedAt"], UINT64_MAX, "startedAt"),
        _uint(d["watchSeconds"], UINT32_MAX, "watchSeconds"),
        _uint(d["issuedAt"], UINT64_MAX, "issuedAt"),
        _hex(d["signature"], 65, "signature"),
    )


def _hex(value: Any, size: int, name: str) -> bytes:
    if type(value) is str and len(value) == 2 + 2 * size and value[:2] == "0x":
        try:
            return _unhexlify(value[2:])  # strict, unlike bytes.fromhex: no whitespace
        except ValueError:  # binascii.Error, and non-ASCII text
            pass
    raise MalformedReceipt(name, _hex_problem(value, size))


def _hex_problem(value: Any, size: int) -> str:
    want = f"0x + {2 * size} hex digits ({size} bytes)"
    if type(value) is not str:
        return f"must be a hex string ({want}), got {_type_name(value)}"
    if value[:2] != "0x":
        return f"must start with 0x (lowercase x), got {_show(value[:4])}..."
    if len(value) != 2 + 2 * size:
        return f"wrong length: want {want}, got {len(value) - 2} digits"
    return f"must contain only hex digits 0-9a-fA-F: {_show(value)}"


def _uint(value: Any, maximum: int, name: str) -> int:
    t = type(value)
    if t is int:
        if 0 <= value <= maximum:
            return value  # type: ignore[no-any-return]  # `t is int` narrows nothing for mypy
    elif (
        t is str
        and value.isascii()
        and value.isdigit()
        and (value[0] != "0" or len(value) == 1)
        and len(value) <= 20
    ):
        number = int(value)
        if number <= maximum:
            return number
    raise MalformedReceipt(name, _uint_problem(value, maximum))


def _uint_problem(value: Any, maximum: int) -> str:
    bits = 32 if maximum == UINT32_MAX else 64
    if type(value) is _BadNumber:
        token, shown = value.token, _short_token(value.token)
        if token[0] == "-":
            return f"must be an unsigned integer without sign, got {shown}"
        if token.isdigit():
            return f"out of range for uint{bits} (max {maximum}), got {shown}"
        if any(c in token for c in "eE"):
            return f"must be an integer without exponent, got {shown}"
        if "." in token:
            return f"must be an integer, got the float {shown}"
        return f"must be an integer, got {shown}"
    if type(value) is int:
        if value < 0:
            return f"must be an unsigned integer without sign, got {value}"
        return f"out of range for uint{bits} (max {maximum}), got {value}"
    if type(value) is str:
        if value.isascii() and value.isdigit() and (value[0] != "0" or len(value) == 1):
            return f"out of range for uint{bits} (max {maximum}), got {_show(value)}"
        return f"integer strings must match ^(0|[1-9][0-9]*)$, got {_show(value)}"
    if type(value) is float:
        return f"must be an integer, got the float {value!r}"
    return f"must be an integer, got {_type_name(value)}"


def _short_token(token: str) -> str:
    # A 400-digit token is named by its head and length, not echoed whole.
    return token if len(token) <= 40 else f"{token[:20]}... ({len(token)} characters)"


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if type(value) is bool:
        return f"the boolean {'true' if value else 'false'}"
    if type(value) is _BadNumber:
        return f"the number {_short_token(value.token)}"
    if type(value) in (int, float):
        return f"the number {value!r}"
    if isinstance(value, list | tuple):
        return "an object" if type(value) is _Pairs else "an array"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, str):
        return "a string"
    return type(value).__name__


def _show(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, str) else _type_name(value)
    return text if len(text) <= 80 else text[:77] + "..."


def verify_wire(
    obj: Any, domain: Domain, params: Params, now: int, gate: Gate | None = None
) -> Verdict:
    """parse_wire then verify; a parse failure is a MALFORMED verdict, not an exception."""
    try:
        v = _wire_values(obj)
    except MalformedReceipt as error:
        return Rejected(Reason.MALFORMED, str(error))
    # The values passed every field check: encode them without building a receipt object.
    if v[0] is DeliveryReceipt:
        _, session_id, viewer, node, content_id, started, amount, segments, issued, sig = v
        encoded = _DELIVERY_STRUCT.pack(
            DELIVERY_TYPEHASH,
            session_id,
            viewer,
            node,
            content_id,
            started,
            amount,
            segments,
            issued,
        )
    else:
        _, session_id, viewer, content_id, started, amount, issued, sig = v
        node = None
        segments = 0
        encoded = _VIEW_STRUCT.pack(
            VIEW_TYPEHASH, session_id, viewer, content_id, started, amount, issued
        )
    return judge_values(
        encoded,
        viewer,
        node,
        started,
        amount,
        segments,
        issued,
        sig,
        domain,
        params,
        now,
        gate,
        content_id,
    )

"""The body of POST /v1/receipts as wire items, parsed once, without a model per receipt.

A batch must say exactly what PROTOCOL section 2 allows, so repeated keys and number
tokens such as `-0` or `1e5` must stay visible to the receipt parser. orjson (fast)
loses both; the strict parser keeps both but costs as much as a quarter of a signature
recovery per receipt. So orjson parses the body once, and each item whose compact
re-encoding equals its bytes in the body is proven exact and goes on as a dict; any
other item (spaces, escapes, repeated keys, odd numbers, not an object) goes on as its
own raw bytes, which the receipt parser reads strictly.

orjson refuses a whole body over one number no double or int64 holds (`1e400`, a
400-digit integer); such a body is still valid JSON, so the strict parser reads it and
only that item is MALFORMED (PROTOCOL 2).
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

from settlement.domain.wire import wire_items_from_array
from settlement.errors import InputError, PayloadTooLarge

SHAPE = 'a JSON object {"receipts": [receipt, ...]}'
_PREFIX = b'{"receipts":['
_HEAD = re.compile(r'\s*\{\s*"receipts"\s*:\s*')
_TAIL = re.compile(r"\s*\}\s*")
_WS = b" \t\r\n"
_COMMA, _CLOSE = ord(","), ord("]")


def parse_batch(body: bytes, max_batch: int) -> list[Any]:
    """The wire items of a batch body, for Ingestor.ingest; raises InputError or PayloadTooLarge.

    Items are dicts (proven exact) or raw bytes of one JSON value; an item that is no
    receipt stays in place for the ingest to give it a MALFORMED verdict.
    """
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        if "number" not in str(error):
            raise InputError(f"the body is not valid JSON ({error}); send {SHAPE}") from None
        # Out of orjson's number range, or no JSON at all: the strict parser tells which.
        items = _strict_items(body)
        if len(items) > max_batch:
            raise _too_large(len(items), max_batch) from None
        return items
    if type(doc) is not dict or list(doc) != ["receipts"]:
        got = f"an object with keys {sorted(doc)[:5]}" if type(doc) is dict else type(doc).__name__
        raise InputError(f"the body must be {SHAPE}, got {got}")
    items = doc["receipts"]
    if type(items) is not list:
        raise InputError(f'"receipts" must be a JSON array of receipts, got {type(items).__name__}')
    if len(items) > max_batch:
        raise _too_large(len(items), max_batch)
    if body.startswith(_PREFIX) and body.isascii():
        exact = _walk(body, items)
        if exact is not None:
            return exact
    return _strict_items(body)


def _too_large(count: int, max_batch: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"{count} receipts in one batch; the limit is {max_batch}: split the batch"
    )


def _walk(body: bytes, items: list[Any]) -> list[Any] | None:
    """Items in place, each a proven-exact dict or its raw bytes; None if the walk loses its way."""
    dumps = orjson.dumps
    off = len(_PREFIX)
    last = len(items) - 1
    text: str | None = None
    decoder = json.JSONDecoder()
    for i, item in enumerate(items):
        if type(item) is dict:
            encoded = dumps(item)
            if body.startswith(encoded, off):
                off += len(encoded)
            else:
                item = None
        else:
            item = None
        if item is None:  # find the item's end in the text; hand its raw bytes on
            if text is None:
                text = body.decode("ascii")
            off = _skip(body, off)
            try:
                _, end = decoder.raw_decode(text, off)
            except ValueError:
                return None
            items[i] = body[off:end]
            off = end
        off = _skip(body, off)
        if off >= len(body) or body[off] != (_COMMA if i < last else _CLOSE):
            return None
        off += 1
    if not items:
        off = _skip(body, off)
        if body[off : off + 1] != b"]":
            return None
        off += 1
    return items if body[off:].strip(_WS) == b"}" else None


def _skip(body: bytes, off: int) -> int:
    while off < len(body) and body[off] in _WS:
        off += 1
    return off


def _strict_items(body: bytes) -> list[Any]:
    try:
        text = body.decode()
    except UnicodeDecodeError as error:
        raise InputError(f"the body is not UTF-8 ({error}); send {SHAPE}") from None
    head = _HEAD.match(text)
    if head is None:
        raise InputError(f'the body must be {SHAPE} with the key "receipts" written plainly')
    try:
        _, end = json.JSONDecoder().raw_decode(text, head.end())
    except ValueError as error:
        raise InputError(f"the body is not valid JSON ({error}); send {SHAPE}") from None
    if _TAIL.fullmatch(text, end) is None:
        raise InputError(f'the body must be {SHAPE} with no key but "receipts" (once)')
    # NaN and Infinity are no JSON: the body is refused, as orjson refuses it.
    return wire_items_from_array(text[head.end() : end], constants=False)

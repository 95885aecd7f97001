"""Garbage receipt batches: every item MALFORMED under PROTOCOL section 2's wire rules
(wrong types, missing or unknown fields, wrong hex, numbers out of range or no parser type
can hold, items that are not objects). Shared by the hostile-input tests."""

from __future__ import annotations

import random
from typing import Any

import orjson

NODE = "0x" + "ab" * 20
CONTENT = "0x" + "cd" * 32


def _receipt() -> dict[str, Any]:
    return {
        "kind": "delivery",
        "sessionId": "0x" + "11" * 32,
        "viewer": "0x" + "22" * 20,
        "node": NODE,
        "contentId": CONTENT,
        "startedAt": 1767225500,
        "bytesServed": 1048576,
        "segmentsServed": 4,
        "issuedAt": 1767225600,
        "signature": "0x" + "33" * 65,
    }


def _garbage(rng: random.Random) -> bytes:
    r = _receipt()
    field = rng.choice(sorted(r))
    choice = rng.randrange(12)
    if choice == 0:
        return rng.choice([b"null", b"1", b'"x"', b"[]", b"true", b"{}", b"[[[[1]]]]"])
    if choice == 1:
        del r[field]
    elif choice == 2:
        r["extra"] = 1
    elif choice == 3:
        r[field] = rng.choice([True, None, [], {}, 1.5, -1])
    elif choice == 4:
        r[field] = "0x" + "ab" * rng.randrange(0, 40) + "a"  # odd or wrong length hex
    elif choice == 5:
        above = str(2**64).encode()  # one above uint64
        return orjson.dumps(r).replace(b'"bytesServed":1048576', b'"bytesServed":' + above)
    elif choice == 6:
        r["segmentsServed"] = "007"  # leading zeros
    elif choice == 7:
        r["kind"] = "deliveryy"
    elif choice == 8:
        text = orjson.dumps(r).replace(b'"startedAt":1767225500', b'"startedAt":1e400')
        return text
    elif choice == 9:
        text = orjson.dumps(r).replace(b'"issuedAt":1767225600', b'"issuedAt":' + b"9" * 400)
        return text
    elif choice == 10:
        r["viewer"] = "0X" + "22" * 20  # capital X
    else:
        r["bytesServed"] = "1e3"
    return orjson.dumps(r)


def garbage_batch(n: int, seed: int) -> bytes:
    rng = random.Random(seed)
    return b'{"receipts":[' + b",".join(_garbage(rng) for _ in range(n)) + b"]}"

"""Request bodies read whole, under a size limit and a deadline, and checked for JSON nesting
and element count, before any route, authentication or JSON parser sees them.

A slow or huge body then costs a connection and at most its limit in memory, never an
in-flight slot, an admin-token check or a parse: 408 when it is too slow, 413 when too
large, 422 when too deep or too many elements.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import anyio

from settlement.api import metrics
from settlement.api.responses import error_response
from settlement.config import Settings
from settlement.errors import JsonTooComplex, PayloadTooLarge, RequestTimeout, SettlementError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

RECEIPTS_PATH = "/v1/receipts"
ADMIN_PREFIX = "/v1/admin"
# Above this a body's JSON check runs in a worker thread: ~6 ms for 10,000 receipts, but a
# 16 MiB body with escapes takes the regular-expression path (~0.2 s), too long for the loop.
_THREAD_SCAN_BYTES = 1024 * 1024

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_ALL = bytes(range(256))
_NOT_STRUCTURE = _ALL.translate(None, b"[]{},")
_NOT_STRUCTURE_OR_QUOTE = _ALL.translate(None, b'[]{},"')
_ONE_KIND = bytes.maketrans(b"{}", b"[]")


def structure(body: bytes) -> bytes:
    """The bytes `[ ] { } ,` of `body` outside JSON strings, in order.

    Fast path (no backslash, hence no escaped quote): keep the structure and the quotes, then
    drop each `""` pair; if no quote is left, every string held none of `[]{},`, and what is
    left is exactly the structure (a pair of adjacent quotes that were not one string's
    would leave a quote behind). Else strings are cut out by a regular expression.
    """
    if b"\\" not in body:
        kept = body.translate(None, _NOT_STRUCTURE_OR_QUOTE).replace(b'""', b"")
        if b'"' not in kept:
            return kept
    return _STRING.sub(b"", body).translate(None, _NOT_STRUCTURE)


def json_problem(body: bytes, max_depth: int, max_elements: int) -> str | None:
    """Why `body` is refused before it is parsed (too many elements, too deep), or None.

    Elements are the `{`, `[` and `,` outside strings: about one per value. Malformed JSON
    that passes is left for the parser to refuse.
    """
    shape = structure(body)
    opens = shape.count(b"[") + shape.count(b"{")
    elements = opens + shape.count(b",")
    if elements > max_elements:
        return (
            f"the JSON body has {elements} elements ({{ [ and , outside strings); the limit is "
            f"{max_elements}: send smaller batches"
        )
    if opens <= max_depth:
        return None
    if shape.count(b"[") != shape.count(b"]") or shape.count(b"{") != shape.count(b"}"):
        return None  # brackets do not balance: not JSON, the parser says so
    # One kind of bracket (depth does not care which), then each pass of replace() removes
    # exactly the innermost pairs, one level: a body nested at most max_depth deep is empty
    # after max_depth passes, a deeper one is not. C-speed passes over at most
    # 2 * max_elements bytes.
    shape = shape.translate(_ONE_KIND, b",")
    for _ in range(max_depth):
        shape = shape.replace(b"[]", b"")
        if not shape:
            return None
    return (
        f"the JSON body nests deeper than {max_depth} levels (or its brackets do not match); "
        "a receipts batch needs 3"
    )


class BodyLimits:
    """ASGI middleware: reads an HTTP request's body whole and checks it, then hands the app a
    `receive` that replays it. Limits by route: POST /v1/receipts W2E_MAX_BODY_BYTES,
    /v1/admin/* W2E_MAX_ADMIN_BODY_BYTES, every other route W2E_MAX_PUBLIC_BODY_BYTES."""

    def __init__(self, app: App, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    def limit(self, path: str) -> tuple[int, str]:
        """The body limit of `path` and the setting that sets it."""
        s = self.settings
        if path == RECEIPTS_PATH:
            return s.max_body_bytes, "W2E_MAX_BODY_BYTES"
        if path == ADMIN_PREFIX or path.startswith(ADMIN_PREFIX + "/"):
            return s.max_admin_body_bytes, "W2E_MAX_ADMIN_BODY_BYTES"
        return s.max_public_body_bytes, "W2E_MAX_PUBLIC_BODY_BYTES"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            body = await self._read(scope, receive)
            if body is None:
                return  # the client left: nobody to answer
            if body:
                await self._check(body)
        except _Refused as refused:
            if scope["path"] == RECEIPTS_PATH:
                metrics.BATCHES.labels(str(refused.error.http_status)).inc()
            await error_response(refused.error, close=refused.close)(scope, receive, send)
            return
        await self.app(scope, _replay(body, receive), send)

    async def _read(self, scope: Scope, receive: Receive) -> bytes | None:
        limit, setting = self.limit(scope["path"])
        what = (
            "send smaller batches"
            if setting == "W2E_MAX_BODY_BYTES"
            else f"split it, or raise the server's {setting}"
        )
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            # Nothing read yet: the server drains the rest (discarding it) after the answer,
            # so a client that sends its whole body before reading still gets the 413.
            raise _Refused(
                PayloadTooLarge(
                    f"body of {declared} bytes is above this route's limit of {limit} bytes: "
                    + what
                )
            )
        chunks: list[bytes] = []
        size = 0
        timeout = self.settings.body_timeout
        with anyio.move_on_after(timeout) as deadline:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return None
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    # A body larger than it said, or chunked: stop reading and hang up.
                    raise _Refused(
                        PayloadTooLarge(f"body above this route's limit of {limit} bytes: " + what),
                        close=True,
                    )
                if chunk:
                    chunks.append(chunk)
                if not message.get("more_body", False):
                    break
        if deadline.cancelled_caught:
            raise _Refused(
                RequestTimeout(
                    f"the request body did not arrive within {timeout:g} s "
                    f"({size} bytes received): send it again"
                ),
                close=True,
            )
        return b"".join(chunks)

    async def _check(self, body: bytes) -> None:
        s = self.settings
        if len(body) > _THREAD_SCAN_BYTES:
            problem = await anyio.to_thread.run_sync(
                json_problem, body, s.max_json_depth, s.max_json_elements
            )
        else:
            problem = json_problem(body, s.max_json_depth, s.max_json_elements)
        if problem is not None:
            raise _Refused(JsonTooComplex(problem))


class _Refused(Exception):
    def __init__(self, error: SettlementError, close: bool = False) -> None:
        self.error = error
        self.close = close


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            if not value.isdigit():
                return None  # the server's parser refuses it before we run
            return int(value) if len(value) <= 18 else 10**18  # no 4,300-digit int() here
    return None


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that gives the app the body already read, then waits on the real one
    (for the client's disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay

"""Submit receipts to a settlement service over HTTP: batching, retries, per-item verdicts.

Resubmission is safe by protocol (PROTOCOL section 3): a receipt already stored comes
back as `duplicate`, so any batch whose answer was lost is simply sent again.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from settlement.domain.receipts import DeliveryReceipt, ViewReceipt
from settlement.domain.wire import to_wire
from settlement.errors import SettlementError

RECEIPTS_PATH = "/v1/receipts"
STORED = frozenset({"accepted", "duplicate"})
_RETRY_STATUS = frozenset({429, 502, 503, 504})


class SubmitError(SettlementError):
    """The service refused a batch for a reason that retrying will not fix."""

    def __init__(self, message: str, *, status: int | None = None, body: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.body = body


class RetriesExhausted(SubmitError):
    """The service stayed unreachable or overloaded for every attempt; try again later."""


@dataclass(frozen=True, slots=True)
class ItemVerdict:
    """The service's answer for one receipt, at its position in the caller's input."""

    index: int
    verdict: str  # accepted | duplicate | stale | rejected
    reason: str | None = None  # reason code (PROTOCOL section 3) when rejected

    @property
    def stored(self) -> bool:
        """The service holds this receipt (now or from an earlier attempt)."""
        return self.verdict in STORED

    @property
    def label(self) -> str:
        """`accepted`, `duplicate`, `stale`, or the reason code of a rejection."""
        return self.reason if self.verdict == "rejected" and self.reason else self.verdict


@dataclass(frozen=True, slots=True)
class BatchResult:
    """One HTTP batch: where it starts in the input, its verdicts, and how many attempts it took."""

    offset: int
    verdicts: tuple[ItemVerdict, ...]
    attempts: int


@dataclass(frozen=True, slots=True)
class SubmitResult:
    """Every verdict of one `submit` call, in input order, with counts by label."""

    verdicts: tuple[ItemVerdict, ...]
    batches: int
    attempts: int

    @property
    def summary(self) -> dict[str, int]:
        return dict(Counter(v.label for v in self.verdicts))

    @property
    def stored(self) -> int:
        return sum(1 for v in self.verdicts if v.stored)

    @property
    def rejected(self) -> tuple[ItemVerdict, ...]:
        return tuple(v for v in self.verdicts if v.verdict == "rejected")

    def __len__(self) -> int:
        return len(self.verdicts)


def _parse_item(index: int, item: Any) -> ItemVerdict:
    if isinstance(item, str):
        verdict, reason = item, None
    elif isinstance(item, Mapping) and isinstance(item.get("verdict"), str):
        verdict, reason = item["verdict"], item.get("reason")
        if reason is not None and not isinstance(reason, str):
            raise SubmitError(f"item {index}: reason is not a string: {reason!r}")
    else:
        raise SubmitError(f"item {index}: expected an object with a verdict, got {item!r}")
    if verdict.isupper():
        # A bare reason code stands for a rejection with that reason.
        verdict, reason = "rejected", verdict
    return ItemVerdict(index, verdict, reason)


def parse_verdicts(body: bytes, offset: int, expected: int) -> tuple[ItemVerdict, ...]:
    """Read `{"results": [...], "summary": {...}}`; items in request order."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise SubmitError(f"the service answered 200 with a body that is not JSON: {exc}") from None
    items = None
    if isinstance(doc, Mapping):
        for key in ("results", "verdicts", "items"):
            if isinstance(doc.get(key), list):
                items = doc[key]
                break
    if items is None:
        raise SubmitError("the service answered 200 without a `results` list")
    if len(items) != expected:
        raise SubmitError(f"the service answered {len(items)} verdicts for {expected} receipts")
    return tuple(_parse_item(offset + i, item) for i, item in enumerate(items))


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Retry-After as seconds: delta-seconds or an HTTP date (RFC 9110 section 10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _wire(receipt: Any) -> Any:
    if isinstance(receipt, DeliveryReceipt | ViewReceipt):
        return to_wire(receipt)
    return receipt  # already a wire object (or deliberately not one: the service judges it)


class _Batching:
    """What both clients share: batch sizes, the retry policy, reading answers."""

    def __init__(
        self,
        *,
        max_batch: int,
        max_attempts: int,
        backoff_base: float,
        backoff_max: float,
        max_retry_after: float,
        rng: random.Random | None,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        self.max_batch = max_batch
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.max_retry_after = max_retry_after
        self._rng = rng or random.Random()

    def backoff(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number `attempt` (1-based)."""
        ceiling = min(self.backoff_max, self.backoff_base * 2 ** (attempt - 1))
        delay = self._rng.uniform(ceiling / 2, ceiling)  # jitter spreads retrying clients
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.max_retry_after))
        return float(delay)

    def _chunks(self, receipts: Iterable[Any]) -> Iterator[tuple[int, list[Any]]]:
        offset = 0
        chunk: list[Any] = []
        for receipt in receipts:
            chunk.append(_wire(receipt))
            if len(chunk) >= self.max_batch:
                yield offset, chunk
                offset += len(chunk)
                chunk = []
        if chunk:
            yield offset, chunk

    def _halve(self, start: int, part: list[Any]) -> list[tuple[int, list[Any]]]:
        # A 413 means the server's limit is below ours: halve and remember the new size.
        if len(part) == 1:
            raise SubmitError("the service refuses even a single receipt as too large (413)")
        half = len(part) // 2
        self.max_batch = max(1, min(self.max_batch, half))
        return [(start, part[:half]), (start + half, part[half:])]

    def _judge(
        self,
        outcome: httpx.Response | httpx.TransportError,
        size: int,
        offset: int,
        attempt: int,
        url: str,
    ) -> BatchResult | float | None:
        """A BatchResult, None for 413, or seconds to wait before the next attempt."""
        retry_after = None
        if isinstance(outcome, httpx.TransportError):  # connect, read, write, timeout, protocol
            problem = f"{type(outcome).__name__}: {outcome}"
        else:
            status = outcome.status_code
            if status == 200:
                return BatchResult(offset, parse_verdicts(outcome.content, offset, size), attempt)
            if status == 413:
                return None
            if status not in _RETRY_STATUS:
                raise SubmitError(
                    f"the service refused the batch with HTTP {status}: {outcome.text[:500]}",
                    status=status,
                    body=outcome.text,
                )
            retry_after = retry_after_seconds(outcome.headers.get("retry-after"))
            problem = f"HTTP {status}"
        if attempt >= self.max_attempts:
            raise RetriesExhausted(
                f"gave up after {self.max_attempts} attempts at {url}: {problem}; "
                "the batch is safe to resend later"
            )
        return self.backoff(attempt, retry_after)


class SettlementClient(_Batching):
    """Sync client of `POST /v1/receipts`.

    Splits input into batches of at most `max_batch`; retries a batch on connection
    errors, timeouts, 429, 502, 503 and 504 with exponential backoff and jitter, waiting
    at least the server's Retry-After; halves the batch on 413. Other answers raise
    SubmitError with the server's message.
    """

    def __init__(
        self,
        base_url: str,
        *,
        max_batch: int = 10_000,
        timeout: float = 30.0,
        max_attempts: int = 8,
        backoff_base: float = 0.25,
        backoff_max: float = 30.0,
        max_retry_after: float = 300.0,
        headers: Mapping[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(
            max_batch=max_batch,
            max_attempts=max_attempts,
            backoff_base=backoff_base,
            backoff_max=backoff_max,
            max_retry_after=max_retry_after,
            rng=rng,
        )
        self._sleep = sleep
        self._http = httpx.Client(
            base_url=base_url,
            timeout=timeout,
            headers={"content-type": "application/json", **(headers or {})},
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> SettlementClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def submit(self, receipts: Iterable[Any]) -> SubmitResult:
        """Submit receipts (Receipt objects or wire dicts); verdicts come back in input order."""
        return _collect(list(self.submit_iter(receipts)))

    def submit_iter(self, receipts: Iterable[Any]) -> Iterator[BatchResult]:
        """Stream: read `max_batch` receipts, post them, yield their verdicts, repeat."""
        for offset, chunk in self._chunks(receipts):
            pending = [(offset, chunk)]
            while pending:
                start, part = pending.pop(0)
                result = self._post(part, start)
                if result is None:
                    pending[:0] = self._halve(start, part)
                else:
                    yield result

    def _post(self, items: list[Any], offset: int) -> BatchResult | None:
        body = orjson.dumps({"receipts": items})
        url = f"{self._http.base_url}{RECEIPTS_PATH}"
        for attempt in range(1, self.max_attempts + 1):
            try:
                outcome: httpx.Response | httpx.TransportError = self._http.post(
                    RECEIPTS_PATH, content=body
                )
            except httpx.TransportError as exc:
                outcome = exc
            judged = self._judge(outcome, len(items), offset, attempt, url)
            if not isinstance(judged, float):
                return judged
            self._sleep(judged)
        raise AssertionError("unreachable: _judge raises on the last attempt")


class AsyncSettlementClient(_Batching):
    """The same client for asyncio players and nodes (same options, same results)."""

    def __init__(
        self,
        base_url: str,
        *,
        max_batch: int = 10_000,
        timeout: float = 30.0,
        max_attempts: int = 8,
        backoff_base: float = 0.25,
        backoff_max: float = 30.0,
        max_retry_after: float = 300.0,
        headers: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(
            max_batch=max_batch,
            max_attempts=max_attempts,
            backoff_base=backoff_base,
            backoff_max=backoff_max,
            max_retry_after=max_retry_after,
            rng=rng,
        )
        self._sleep = sleep
        self._http = httpx.AsyncClient(
            base_url=base_url,
            timeout=timeout,
            headers={"content-type": "application/json", **(headers or {})},
            transport=transport,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncSettlementClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def submit(self, receipts: Iterable[Any]) -> SubmitResult:
        return _collect([batch async for batch in self.submit_iter(receipts)])

    async def submit_iter(self, receipts: Iterable[Any]) -> AsyncIterator[BatchResult]:
        for offset, chunk in self._chunks(receipts):
            pending = [(offset, chunk)]
            while pending:
                start, part = pending.pop(0)
                result = await self._post(part, start)
                if result is None:
                    pending[:0] = self._halve(start, part)
                else:
                    yield result

    async def _post(self, items: list[Any], offset: int) -> BatchResult | None:
        body = orjson.dumps({"receipts": items})
        url = f"{self._http.base_url}{RECEIPTS_PATH}"
        for attempt in range(1, self.max_attempts + 1):
            try:
                outcome: httpx.Response | httpx.TransportError = await self._http.post(
                    RECEIPTS_PATH, content=body
                )
            except httpx.TransportError as exc:
                outcome = exc
            judged = self._judge(outcome, len(items), offset, attempt, url)
            if not isinstance(judged, float):
                return judged
            await self._sleep(judged)
        raise AssertionError("unreachable: _judge raises on the last attempt")


def _collect(batches: list[BatchResult]) -> SubmitResult:
    verdicts = tuple(v for batch in batches for v in batch.verdicts)
    return SubmitResult(verdicts, len(batches), sum(b.attempts for b in batches))

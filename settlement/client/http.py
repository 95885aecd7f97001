"""Submit receipts to a settlement service over HTTP: batching, retries, per-item verdicts.

Resubmission is safe by protocol (PROTOCOL section 3): a receipt already stored comes
back as `duplicate`, so any batch whose answer was lost is simply sent again.

Every retry is logged (logger `settlement.client`, WARNING) with its cause and delay. A
service that cannot be connected to at all is given up on after `unreachable_timeout`
seconds (5 by default) with ServiceUnreachable; one that answers 429/502/503/504 or drops
answers is retried up to `max_attempts` times (RetriesExhausted).
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from settlement.client.info import INFO_PATH, ServiceInfo, ServiceInfoError
from settlement.domain.receipts import DeliveryReceipt, ViewReceipt
from settlement.domain.wire import to_wire
from settlement.errors import SettlementError

log = logging.getLogger("settlement.client")

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


class ServiceUnreachable(RetriesExhausted):
    """No connection to the service could be made within `unreachable_timeout` seconds:
    wrong URL, or the service is down. Nothing was sent; the receipts are safe to send later."""


# No TCP connection at all: the service is down or the URL is wrong (not a slow service).
_UNREACHABLE = (httpx.ConnectError, httpx.ConnectTimeout)


@dataclass(frozen=True, slots=True)
class ItemVerdict:
    """The service's answer for one receipt, at its position in the caller's input."""

    index: int
    verdict: str  # accepted | duplicate | stale | rejected
    reason: str | None = None  # reason code (PROTOCOL section 3) when rejected
    detail: str | None = None  # the service's explanation, for humans (not stable)

    @property
    def stored(self) -> bool:
        """The service holds this receipt (now or from an earlier attempt)."""
        return self.verdict in STORED

    @property
    def label(self) -> str:
        """`accepted`, `duplicate`, `stale`, or the reason code of a rejection."""
        return self.reason if self.verdict == "rejected" and self.reason else self.verdict

    def __str__(self) -> str:
        text = f"#{self.index} {self.verdict}"
        if self.reason:
            text += f" {self.reason}"
        if self.detail:
            text += f": {self.detail}"
        return text


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

    @property
    def by_reason(self) -> dict[str, list[ItemVerdict]]:
        """The rejections grouped by reason code, each with its `detail`."""
        groups: dict[str, list[ItemVerdict]] = {}
        for v in self.rejected:
            groups.setdefault(v.reason or "UNKNOWN", []).append(v)
        return groups

    def report(self, examples: int = 3) -> str:
        """Counts by label, then up to `examples` rejections of each reason with their detail."""
        lines = [", ".join(f"{label}: {n}" for label, n in sorted(self.summary.items()))]
        for reason, items in sorted(self.by_reason.items()):
            lines += [f"  {v}" for v in items[:examples]]
            if len(items) > examples:
                lines.append(f"  ... and {len(items) - examples} more {reason}")
        return "\n".join(lines)

    def __len__(self) -> int:
        return len(self.verdicts)


def _parse_item(index: int, item: Any) -> ItemVerdict:
    detail = None
    if isinstance(item, str):
        verdict, reason = item, None
    elif isinstance(item, Mapping) and isinstance(item.get("verdict"), str):
        verdict, reason, detail = item["verdict"], item.get("reason"), item.get("detail")
        if reason is not None and not isinstance(reason, str):
            raise SubmitError(f"item {index}: reason is not a string: {reason!r}")
        if detail is not None and not isinstance(detail, str):
            raise SubmitError(f"item {index}: detail is not a string: {detail!r}")
    else:
        raise SubmitError(f"item {index}: expected an object with a verdict, got {item!r}")
    if verdict.isupper():
        # A bare reason code stands for a rejection with that reason.
        verdict, reason = "rejected", verdict
    return ItemVerdict(index, verdict, reason, detail or None)


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
        unreachable_timeout: float,
        rng: random.Random | None,
        monotonic: Callable[[], float],
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if unreachable_timeout <= 0:
            raise ValueError("unreachable_timeout must be > 0")
        self.max_batch = max_batch
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.max_retry_after = max_retry_after
        self.unreachable_timeout = unreachable_timeout
        self._rng = rng or random.Random()
        self._monotonic = monotonic

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
        attempt: int,
        url: str,
        unreachable_since: float | None,
    ) -> httpx.Response | float:
        """The answer to act on (any status but a retryable one), or seconds to wait before
        the next attempt; raises when retrying is over."""
        retry_after = None
        if isinstance(outcome, httpx.TransportError):  # connect, read, write, timeout, protocol
            problem = f"{type(outcome).__name__}: {outcome}"
        else:
            status = outcome.status_code
            if status not in _RETRY_STATUS:
                return outcome
            retry_after = retry_after_seconds(outcome.headers.get("retry-after"))
            problem = f"HTTP {status}"
        delay = self.backoff(attempt, retry_after)
        if unreachable_since is not None:
            spent = self._monotonic() - unreachable_since
            if attempt >= self.max_attempts or spent + delay > self.unreachable_timeout:
                raise ServiceUnreachable(
                    f"service unreachable at {url} after {attempt} "
                    f"{'try' if attempt == 1 else 'tries'} in {spent:.1f} s: {problem}; "
                    "check the URL and that the service is running (nothing was sent: "
                    "the receipts are safe to send later)"
                )
        elif attempt >= self.max_attempts:
            raise RetriesExhausted(
                f"gave up after {self.max_attempts} attempts at {url}: {problem}; "
                "the batch is safe to resend later"
            )
        log.warning(
            "%s: %s; retry %d of at most %d in %.2f s",
            url,
            problem,
            attempt,
            self.max_attempts - 1,
            delay,
        )
        return delay

    def _batch(
        self, response: httpx.Response, size: int, offset: int, attempt: int
    ) -> BatchResult | None:
        """The verdicts of a batch's final answer; None for 413 (halve it)."""
        status = response.status_code
        if status == 200:
            return BatchResult(offset, parse_verdicts(response.content, offset, size), attempt)
        if status == 413:
            return None
        raise SubmitError(
            f"the service refused the batch with HTTP {status}: {response.text[:500]}",
            status=status,
            body=response.text,
        )


def _info(response: httpx.Response, url: str) -> ServiceInfo:
    if response.status_code != 200:
        raise ServiceInfoError(
            f"GET {url} answered HTTP {response.status_code}: {response.text[:300]} "
            "(a service older than /v1/info, or not a W2E settlement service)"
        )
    try:
        doc = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        raise ServiceInfoError(f"GET {url} answered a body that is not JSON") from None
    return ServiceInfo.from_json(doc)


def _connect_timeout(timeout: float, unreachable_timeout: float) -> httpx.Timeout:
    # A host that drops SYNs must not hold one attempt beyond the unreachable budget.
    return httpx.Timeout(timeout, connect=min(timeout, unreachable_timeout))


class SettlementClient(_Batching):
    """Sync client of `POST /v1/receipts` and `GET /v1/info`.

    Splits input into batches of at most `max_batch`; retries a batch on connection
    errors, timeouts, 429, 502, 503 and 504 with exponential backoff and jitter, waiting
    at least the server's Retry-After, logging each retry (logger `settlement.client`);
    halves the batch on 413. Other answers raise SubmitError with the server's message.
    When no connection can be made at all, gives up after `unreachable_timeout` seconds
    with ServiceUnreachable; otherwise after `max_attempts` attempts (RetriesExhausted).
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
        unreachable_timeout: float = 5.0,
        headers: Mapping[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(
            max_batch=max_batch,
            max_attempts=max_attempts,
            backoff_base=backoff_base,
            backoff_max=backoff_max,
            max_retry_after=max_retry_after,
            unreachable_timeout=unreachable_timeout,
            rng=rng,
            monotonic=monotonic,
        )
        self._sleep = sleep
        self._http = httpx.Client(
            base_url=base_url,
            timeout=_connect_timeout(timeout, unreachable_timeout),
            headers={"content-type": "application/json", **(headers or {})},
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> SettlementClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def info(self) -> ServiceInfo:
        """`GET /v1/info`: the service's signing domain, receipt parameters and clock."""
        response, _ = self._request("GET", INFO_PATH)
        return _info(response, f"{self._http.base_url}{INFO_PATH}")

    def submit(self, receipts: Iterable[Any]) -> SubmitResult:
        """Submit receipts (Receipt objects or wire dicts); verdicts come back in input order."""
        return _collect(list(self.submit_iter(receipts)))

    def submit_iter(self, receipts: Iterable[Any]) -> Iterator[BatchResult]:
        """Stream: read `max_batch` receipts, post them, yield their verdicts, repeat."""
        for offset, chunk in self._chunks(receipts):
            pending = [(offset, chunk)]
            while pending:
                start, part = pending.pop(0)
                response, attempt = self._request(
                    "POST", RECEIPTS_PATH, orjson.dumps({"receipts": part})
                )
                result = self._batch(response, len(part), start, attempt)
                if result is None:
                    pending[:0] = self._halve(start, part)
                else:
                    yield result

    def _request(
        self, method: str, path: str, body: bytes | None = None
    ) -> tuple[httpx.Response, int]:
        url = f"{self._http.base_url}{path}"
        since: float | None = None
        for attempt in range(1, self.max_attempts + 1):
            began = self._monotonic()
            try:
                outcome: httpx.Response | httpx.TransportError = self._http.request(
                    method, path, content=body
                )
            except httpx.TransportError as exc:
                outcome = exc
            if not isinstance(outcome, _UNREACHABLE):
                since = None
            elif since is None:
                since = began
            judged = self._judge(outcome, attempt, url, since)
            if isinstance(judged, httpx.Response):
                return judged, attempt
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
        unreachable_timeout: float = 5.0,
        headers: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(
            max_batch=max_batch,
            max_attempts=max_attempts,
            backoff_base=backoff_base,
            backoff_max=backoff_max,
            max_retry_after=max_retry_after,
            unreachable_timeout=unreachable_timeout,
            rng=rng,
            monotonic=monotonic,
        )
        self._sleep = sleep
        self._http = httpx.AsyncClient(
            base_url=base_url,
            timeout=_connect_timeout(timeout, unreachable_timeout),
            headers={"content-type": "application/json", **(headers or {})},
            transport=transport,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncSettlementClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def info(self) -> ServiceInfo:
        response, _ = await self._request("GET", INFO_PATH)
        return _info(response, f"{self._http.base_url}{INFO_PATH}")

    async def submit(self, receipts: Iterable[Any]) -> SubmitResult:
        return _collect([batch async for batch in self.submit_iter(receipts)])

    async def submit_iter(self, receipts: Iterable[Any]) -> AsyncIterator[BatchResult]:
        for offset, chunk in self._chunks(receipts):
            pending = [(offset, chunk)]
            while pending:
                start, part = pending.pop(0)
                response, attempt = await self._request(
                    "POST", RECEIPTS_PATH, orjson.dumps({"receipts": part})
                )
                result = self._batch(response, len(part), start, attempt)
                if result is None:
                    pending[:0] = self._halve(start, part)
                else:
                    yield result

    async def _request(
        self, method: str, path: str, body: bytes | None = None
    ) -> tuple[httpx.Response, int]:
        url = f"{self._http.base_url}{path}"
        since: float | None = None
        for attempt in range(1, self.max_attempts + 1):
            began = self._monotonic()
            try:
                outcome: httpx.Response | httpx.TransportError = await self._http.request(
                    method, path, content=body
                )
            except httpx.TransportError as exc:
                outcome = exc
            if not isinstance(outcome, _UNREACHABLE):
                since = None
            elif since is None:
                since = began
            judged = self._judge(outcome, attempt, url, since)
            if isinstance(judged, httpx.Response):
                return judged, attempt
            await self._sleep(judged)
        raise AssertionError("unreachable: _judge raises on the last attempt")


def _collect(batches: list[BatchResult]) -> SubmitResult:
    verdicts = tuple(v for batch in batches for v in batch.verdicts)
    return SubmitResult(verdicts, len(batches), sum(b.attempts for b in batches))

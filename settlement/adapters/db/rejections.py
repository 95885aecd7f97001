"""The rejection log: counts per (reason, node, epoch) and a ring of raw samples per reason,
written in the ingest transaction; a part of every Store."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

import orjson

from settlement.adapters.db.tables import dec, enc


@dataclass(frozen=True, slots=True)
class LoggedRejection:
    """One item for the rejection log: counted always, its raw form sampled."""

    reason: str
    node: bytes
    epoch: int
    detail: str
    raw: Any  # the wire item as received; None for duplicate / stale (never sampled)


# The node of every counted rejection whose node is not registered: one row per reason and
# epoch, however many addresses an attacker makes up (one byte: never a node's address).
UNREGISTERED_NODE: Final = b"\x00"


class RejectionKey(NamedTuple):
    """What rejections are counted by: node b"" for view receipts and unparsable items,
    UNREGISTERED_NODE for nodes not in the registry; epoch 0 outside the time window."""

    reason: str
    node: bytes
    epoch: int


@dataclass(frozen=True, slots=True)
class SamplePolicy:
    cap: int  # slots per reason
    per_batch: int  # samples per reason per batch
    max_bytes: int  # raw text cut to this length


@dataclass(frozen=True, slots=True)
class Sample:
    reason: str
    slot: int
    stored_at: int
    node: bytes
    epoch: int
    detail: str
    raw: str


def _raw_default(value: Any) -> Any:
    token = getattr(value, "token", None)  # a number token the strict parser kept verbatim
    if token is not None:
        return token
    inner = getattr(value, "value", None)  # an array item that is no object
    if inner is not None:
        return inner
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "replace")
    return repr(value)


def raw_text(item: Any, max_bytes: int) -> str:
    """A rejected item as text for the sample log, at most `max_bytes` UTF-8 bytes."""
    if isinstance(item, str):
        text = item
    elif isinstance(item, bytes | bytearray | memoryview):
        text = bytes(item).decode("utf-8", "replace")
    else:
        try:
            text = orjson.dumps(item, default=_raw_default).decode()
        except TypeError:  # orjson.JSONEncodeError: ints above 64 bits, cycles, ...
            text = repr(item)
    data = text.encode("utf-8", "replace")
    if len(data) <= max_bytes:
        return text
    return data[:max_bytes].decode("utf-8", "ignore")


class RejectionLog:
    """Store methods over the rejection tables (SQL text through the Store's transactions)."""

    def _q(self, sql: str) -> str:
        raise NotImplementedError  # Store's

    def _run(self, fn: Callable[[Any], Any], write: bool = True) -> Any:
        raise NotImplementedError  # Store's

    def _log(
        self, cur: Any, logged: Sequence[LoggedRejection], now: int, sampling: SamplePolicy
    ) -> None:
        if not logged:
            return
        counts = Counter((x.reason, x.node, x.epoch) for x in logged)
        # Sorted: two workers bumping the same rows lock them in one order (no deadlock).
        self._add_counts(cur, [(*k, n) for k, n in sorted(counts.items())])
        if sampling.cap <= 0 or sampling.per_batch <= 0:
            return
        picked: dict[str, list[LoggedRejection]] = {}
        for x in logged:
            if x.raw is not None:
                part = picked.setdefault(x.reason, [])
                if len(part) < min(sampling.per_batch, sampling.cap):
                    part.append(x)
        if not picked:
            return
        reasons = sorted(picked)
        written = self._advance_cursors(cur, [(r, len(picked[r])) for r in reasons])
        rows = []
        stamp = enc(now)
        for reason in reasons:
            part = picked[reason]
            start = written[reason] - len(part)
            rows.extend(
                (
                    reason,
                    (start + j) % sampling.cap,
                    stamp,
                    x.node,
                    x.epoch,
                    x.detail,
                    raw_text(x.raw, sampling.max_bytes),
                )
                for j, x in enumerate(part)
            )
        self._put_samples(cur, rows)

    _COUNT_UPSERT = (
        " ON CONFLICT (reason, node, epoch) DO UPDATE SET "
        "count = rejection_count.count + excluded.count"
    )
    _CURSOR_UPSERT = (
        " ON CONFLICT (reason) DO UPDATE SET written = rejection_cursor.written + "
        "excluded.written RETURNING reason, written"
    )
    _SAMPLE_UPSERT = (
        " ON CONFLICT (reason, slot) DO UPDATE SET stored_at = excluded.stored_at, "
        "node = excluded.node, epoch = excluded.epoch, detail = excluded.detail, raw = excluded.raw"
    )

    def _add_counts(self, cur: Any, rows: list[tuple[str, bytes, int, int]]) -> None:
        cur.executemany(
            self._q(
                "INSERT INTO rejection_count (reason, node, epoch, count) VALUES (%s, %s, %s, %s)"
            )
            + self._COUNT_UPSERT,
            rows,
        )

    def _advance_cursors(self, cur: Any, rows: list[tuple[str, int]]) -> dict[str, int]:
        """Reserve ring slots: add each reason's sample count, return its new total."""
        out = {}
        for row in rows:
            cur.execute(
                self._q("INSERT INTO rejection_cursor (reason, written) VALUES (%s, %s)")
                + self._CURSOR_UPSERT,
                row,
            )
            reason, written = cur.fetchone()
            out[reason] = written
        return out

    def _put_samples(self, cur: Any, rows: list[tuple]) -> None:
        cur.executemany(
            self._q(
                "INSERT INTO rejection_sample (reason, slot, stored_at, node, epoch, detail, raw) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s)"
            )
            + self._SAMPLE_UPSERT,
            rows,
        )

    def rejection_counts(self) -> dict[RejectionKey, int]:
        """(reason, node, epoch) -> count."""

        def fn(cur: Any) -> dict[RejectionKey, int]:
            cur.execute("SELECT reason, node, epoch, count FROM rejection_count")
            return {RejectionKey(r, bytes(n), e): c for r, n, e, c in cur.fetchall()}

        return self._run(fn, write=False)

    def rejection_samples(self, reason: str | None = None) -> list[Sample]:
        def fn(cur: Any) -> list[Sample]:
            sql = "SELECT reason, slot, stored_at, node, epoch, detail, raw FROM rejection_sample"
            params: tuple = ()
            if reason is not None:
                sql += " WHERE reason = %s"
                params = (reason,)
            cur.execute(self._q(sql + " ORDER BY reason, slot"), params)
            return [
                Sample(r, slot, dec(at), bytes(n), e, d, raw)
                for r, slot, at, n, e, d, raw in cur.fetchall()
            ]

        return self._run(fn, write=False)

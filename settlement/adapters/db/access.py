"""API keys, the shared rate windows and the admin log: their queries, a part of every Store."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple


class ApiKeyRow(NamedTuple):
    id: int
    name: str
    period_us: int
    burst: int
    created_at: int
    revoked_at: int | None


class RateTaken(NamedTuple):
    """The bucket a request was counted in and its state after the request."""

    bucket: str
    tat: int
    allowed: bool
    period: int
    burst: int


class AdminEntry(NamedTuple):
    """One admin change, written in the change's own transaction."""

    who: str
    action: str
    detail: str
    at: int


class AdminLogEntry(NamedTuple):
    id: int
    at: int
    who: str
    action: str
    detail: str


# The whole admission decision in one statement, so that it is one round trip and atomic
# across workers and instances: pick the bucket (the key's when the hash names a live key,
# else the client address's), then GCRA on its row (domain/access.py `gcra` is the same
# formula; `now` is excluded.tat - excluded.period). A refused request leaves tat as it was.
_BASE = (
    "(CASE WHEN rate_window.tat > excluded.tat - excluded.period THEN rate_window.tat "
    "ELSE excluded.tat - excluded.period END)"
)
_COND = f"({_BASE} - excluded.tat + 2 * excluded.period <= excluded.burst * excluded.period)"
TAKE_RATE = (
    "WITH k AS (SELECT b, p, n FROM ("
    "SELECT 'key:' || CAST(id AS TEXT) AS b, period_us AS p, burst AS n, 0 AS o FROM api_key "
    "WHERE token_hash = %s AND revoked_at IS NULL "
    "UNION ALL SELECT %s, %s, %s, 1) AS c ORDER BY o LIMIT 1) "
    "INSERT INTO rate_window (bucket, tat, period, burst, allowed) "
    "SELECT b, %s + p, p, n, TRUE FROM k WHERE TRUE "
    f"ON CONFLICT (bucket) DO UPDATE SET tat = CASE WHEN {_COND} THEN {_BASE} + excluded.period "
    f"ELSE rate_window.tat END, allowed = {_COND}, period = excluded.period, "
    "burst = excluded.burst "
    "RETURNING bucket, tat, allowed, period, burst"
)


class AccessQueries:
    """Store methods over api_key, rate_window and admin_log (SQL text, Store transactions)."""

    def _q(self, sql: str) -> str:
        raise NotImplementedError  # Store's

    def _run(self, fn: Callable[[Any], Any], write: bool = True) -> Any:
        raise NotImplementedError  # Store's

    # -- rate windows --------------------------------------------------------------------

    def _one_statement(self, sql: str, params: tuple[Any, ...]) -> Any:
        """One write statement in a transaction of its own; its first row."""

        def fn(cur: Any) -> Any:
            cur.execute(self._q(sql), params)
            return cur.fetchone()

        return self._run(fn)

    def take_rate(
        self, key_hash: bytes | None, address: str, period: int, burst: int, now_us: int
    ) -> RateTaken:
        """Count one request in the bucket of the live key `key_hash`, else of `address`
        (at `period` microseconds a batch, `burst` at once). One statement."""
        b, tat, allowed, p, n = self._one_statement(
            TAKE_RATE, (key_hash, address, period, burst, now_us)
        )
        return RateTaken(b, tat, bool(allowed), p, n)

    def prune_rate_windows(self, before_us: int) -> int:
        """Delete buckets whose tat is before `before_us`: they are full, as no row is."""

        def fn(cur: Any) -> int:
            cur.execute(self._q("DELETE FROM rate_window WHERE tat < %s"), (before_us,))
            return int(cur.rowcount)

        return int(self._run(fn))

    def rate_windows(self) -> dict[str, int]:
        """bucket -> tat of every stored bucket (operators and tests)."""

        def fn(cur: Any) -> dict[str, int]:
            cur.execute("SELECT bucket, tat FROM rate_window")
            return {b: t for b, t in cur.fetchall()}

        return self._run(fn, write=False)

    # -- api keys ------------------------------------------------------------------------

    _KEY_COLS = "id, name, period_us, burst, created_at, revoked_at"

    def create_api_key(
        self, name: str, key_hash: bytes, period_us: int, burst: int, audit: AdminEntry
    ) -> ApiKeyRow | None:
        """None when the name is taken (by a live or a revoked key)."""

        def fn(cur: Any) -> ApiKeyRow | None:
            cur.execute(
                self._q(
                    "INSERT INTO api_key (name, token_hash, period_us, burst, created_at) "
                    "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (name) DO NOTHING "
                    f"RETURNING {self._KEY_COLS}"
                ),
                (name, key_hash, period_us, burst, audit.at),
            )
            row = cur.fetchone()
            if row is None:
                return None
            self._audit(cur, audit)
            return ApiKeyRow(*row)

        return self._run(fn)

    def revoke_api_key(self, name: str, audit: AdminEntry) -> bool:
        """False when no live key has that name."""

        def fn(cur: Any) -> bool:
            cur.execute(
                self._q(
                    "UPDATE api_key SET revoked_at = %s WHERE name = %s AND revoked_at IS NULL"
                ),
                (audit.at, name),
            )
            if cur.rowcount <= 0:
                return False
            self._audit(cur, audit)
            return True

        return bool(self._run(fn))

    def api_keys(self) -> list[ApiKeyRow]:
        def fn(cur: Any) -> list[ApiKeyRow]:
            cur.execute(f"SELECT {self._KEY_COLS} FROM api_key ORDER BY id")
            return [ApiKeyRow(*row) for row in cur.fetchall()]

        return self._run(fn, write=False)

    # -- admin log -----------------------------------------------------------------------

    def _audit(self, cur: Any, entry: AdminEntry | None) -> None:
        if entry is None:
            return
        cur.execute(
            self._q("INSERT INTO admin_log (at, who, action, detail) VALUES (%s, %s, %s, %s)"),
            (entry.at, entry.who, entry.action, entry.detail),
        )

    def admin_log(self, limit: int = 100) -> list[AdminLogEntry]:
        """The latest `limit` admin changes, oldest first."""

        def fn(cur: Any) -> list[AdminLogEntry]:
            cur.execute(
                self._q(
                    "SELECT id, at, who, action, detail FROM admin_log ORDER BY id DESC LIMIT %s"
                ),
                (limit,),
            )
            return [AdminLogEntry(*row) for row in reversed(cur.fetchall())]

        return self._run(fn, write=False)

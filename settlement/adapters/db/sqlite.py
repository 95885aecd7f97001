"""SqliteStore: the embedded store (WAL, one writer at a time)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from settlement.adapters.db.store import Store
from settlement.adapters.db.tables import dec, enc
from settlement.domain.ingest import BatchState, SessionKey, SessionState, Survivor

_SQLITE_CHUNK: Final = 400  # keys per IN (VALUES ...) list: far below SQLite's variable limit


class SqliteStore(Store):
    """Embedded store: one writer at a time (BEGIN IMMEDIATE), readers alongside (WAL)."""

    dialect = "sqlite"
    _P = "?"

    def _begin(self, cur: Any, write: bool) -> None:
        cur.execute("BEGIN IMMEDIATE" if write else "BEGIN")

    def _retryable(self, error: BaseException) -> bool:
        return False  # busy_timeout already waited; "database is locked" after it is an outage

    # NOT IN builds one temporary index of the touches; a correlated NOT EXISTS on the
    # unindexed table would scan it once per session.
    _UNTOUCHED = "(viewer, session_id) NOT IN (SELECT viewer, session_id FROM session_touch)"

    def _lock_victims(self, cur: Any, victims: str, params: tuple[Any, ...]) -> None:
        pass  # BEGIN IMMEDIATE holds the database's write lock: no batch is in flight

    def _select_keys(self, cur: Any, sql: str, skeys: list[SessionKey]) -> list[Any]:
        rows: list[Any] = []
        for i in range(0, len(skeys), _SQLITE_CHUNK):
            part = skeys[i : i + _SQLITE_CHUNK]
            values = ",".join(["(?,?)"] * len(part))
            cur.execute(sql.format(keys=values), [x for key in part for x in key])
            rows.extend(cur.fetchall())
        return rows

    def _lock_and_read(
        self, cur: Any, survivors: Sequence[Survivor], skeys: list[SessionKey]
    ) -> BatchState:
        # BEGIN IMMEDIATE already holds the database's write lock: the whole batch is serial.
        sessions: dict[SessionKey, SessionState] = {}
        for v, s, cid, st, last, q in self._select_keys(
            cur,
            "SELECT viewer, session_id, content_id, started_at, last_bucket, quarantined_at "
            "FROM receipt_session WHERE (viewer, session_id) IN (VALUES {keys})",
            skeys,
        ):
            sessions[(v, s)] = SessionState(
                cid, dec(st), last, None if q is None else dec(q), False
            )
        existing = [k for k in skeys if k in sessions]
        for skey, (cid, started, bucket) in self._first_of_sessions(survivors).items():
            if skey not in sessions:
                sessions[skey] = SessionState(cid, started, bucket, None, True)
        delivery = self._select_keys(
            cur,
            "SELECT viewer, session_id, node, bucket, bytes_served, segments_served, issued_at, "
            "signature FROM delivery_best WHERE (viewer, session_id) IN (VALUES {keys})",
            existing,
        )
        view = self._select_keys(
            cur,
            "SELECT viewer, session_id, bucket, watch_seconds, issued_at, signature "
            "FROM view_best WHERE (viewer, session_id) IN (VALUES {keys})",
            existing,
        )
        return self._rows_to_state(sessions, delivery, view)

    def _write_state(self, cur: Any, state: BatchState, upsert_sessions: bool = False) -> None:
        new, changed = [], []
        for (v, s), st in state.sessions.items():
            q = None if st.quarantined_at is None else enc(st.quarantined_at)
            if st.new:
                new.append((v, s, st.content_id, enc(st.started_at), st.last_bucket, q))
            elif st.dirty:
                changed.append((st.last_bucket, q, v, s))
        if new:
            cur.executemany(
                "INSERT INTO receipt_session (viewer, session_id, content_id, started_at, "
                "last_bucket, quarantined_at) VALUES (?, ?, ?, ?, ?, ?)"
                + (" ON CONFLICT (viewer, session_id) DO NOTHING" if upsert_sessions else ""),
                new,
            )
        if changed:
            cur.executemany(
                "UPDATE receipt_session SET last_bucket = ?, quarantined_at = ? "
                "WHERE viewer = ? AND session_id = ?",
                changed,
            )
        rows = self._delivery_rows(state)
        if rows:
            cur.executemany(
                "INSERT INTO delivery_best (viewer, session_id, node, bucket, bytes_served, "
                "segments_served, issued_at, signature) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (viewer, session_id, node, bucket) DO UPDATE SET "
                "bytes_served = excluded.bytes_served, segments_served = excluded.segments_served, "
                "issued_at = excluded.issued_at, signature = excluded.signature",
                rows,
            )
        rows = self._view_rows(state)
        if rows:
            cur.executemany(
                "INSERT INTO view_best (viewer, session_id, bucket, watch_seconds, issued_at, "
                "signature) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (viewer, session_id, bucket) DO UPDATE SET "
                "watch_seconds = excluded.watch_seconds, issued_at = excluded.issued_at, "
                "signature = excluded.signature",
                rows,
            )
        rows = self._touch_rows(state)
        if rows:
            cur.executemany(
                "INSERT INTO session_touch (viewer, session_id, bucket) VALUES (?, ?, ?)", rows
            )
        if state.quarantines:
            cur.executemany(
                "INSERT INTO quarantine (viewer, session_id, stored_at, detail, evidence_stored, "
                "evidence_received) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (viewer, session_id) DO NOTHING",
                [(v, s, enc(at), d, a, b) for v, s, at, d, a, b in state.quarantines],
            )

"""PostgresStore: the production store (row locks in key order, set-based SQL over arrays)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

from settlement.adapters.db.store import Store
from settlement.adapters.db.tables import dec, enc
from settlement.domain.ingest import BatchState, SessionKey, SessionState, Survivor
from settlement.errors import StoreError

_REGISTRATION_LOCK = 0x5732_5247  # first key of the node registration advisory locks


class PostgresStore(Store):
    """Production store: sessions locked row by row in key order, set-based SQL over arrays."""

    dialect = "postgresql"

    def _begin(self, cur: Any, write: bool) -> None:
        pass  # psycopg opens the transaction with the first statement

    def _retryable(self, error: BaseException) -> bool:
        return isinstance(
            error, psycopg.errors.DeadlockDetected | psycopg.errors.SerializationFailure
        )

    # An anti-join (NOT IN would fall back to a rescan per session once the touches outgrow
    # work_mem).
    _UNTOUCHED = (
        "NOT EXISTS (SELECT 1 FROM session_touch t WHERE t.viewer = receipt_session.viewer "
        "AND t.session_id = receipt_session.session_id)"
    )

    def _lock_victims(self, cur: Any, victims: str, params: tuple[Any, ...]) -> None:
        cur.execute(
            f"SELECT COUNT(*) FROM ({victims} ORDER BY viewer, session_id FOR UPDATE) AS v", params
        )

    def _pipeline(self, cur: Any) -> Any:
        # Statements run one after another on the server whether or not the client waits
        # in between: queue them and wait only where a result is needed (4 round trips
        # a batch instead of one per statement).
        return cur.connection.pipeline()

    def _commit_queued(self, cur: Any) -> None:
        cur.connection.commit()

    def _one_statement(self, sql: str, params: tuple[Any, ...]) -> Any:
        # Autocommit: the statement is its own transaction, one round trip (the admission
        # check of every request, the registry version of every batch). rate_window is
        # UNLOGGED, so its commit waits for no WAL.
        if self._closed:
            raise StoreError("the store is closed")
        conn = self.engine.raw_connection()
        try:
            pg = conn.driver_connection
            pg.autocommit = True
            try:
                row = pg.execute(sql, params).fetchone()
            finally:
                pg.autocommit = False
        except psycopg.OperationalError as error:
            raise StoreError(f"database error: {error}") from None
        finally:
            conn.close()
        return row

    def _lock_node(self, cur: Any, node: bytes) -> None:
        # Two copies of one signed request (or two requests of one node) sent at once would
        # both pass the "newer than the last" check under READ COMMITTED; one at a time.
        cur.execute(
            "SELECT pg_advisory_xact_lock(%s, %s)",
            (_REGISTRATION_LOCK, int.from_bytes(node[:4], "big", signed=True)),
        )

    def registry_version(self) -> int:
        # One statement, no transaction: the cheapest read there is, once per batch.
        row = self._one_statement("SELECT version FROM registry_state WHERE id = 1", ())
        return 0 if row is None else row[0]

    def _lock_and_read(
        self, cur: Any, survivors: Sequence[Survivor], skeys: list[SessionKey]
    ) -> BatchState:
        first = self._first_of_sessions(survivors)
        cols: tuple[list, ...] = ([], [], [], [], [])
        for skey in skeys:  # sorted: every worker takes the row locks in one order
            cid, started, bucket = first[skey]
            for col, x in zip(cols, (*skey, cid, enc(started), bucket), strict=True):
                col.append(x)
        keys = (cols[0], cols[1])
        conn = cur.connection
        # All four statements go out together and run in order. Inserting a new session
        # locks it until commit: a worker inserting the same key waits there, then finds
        # the row (the stored contentId and startedAt win). FOR UPDATE locks the existing
        # ones; the reads after it see whatever the previous lock holder committed.
        cur.execute(
            "INSERT INTO receipt_session (viewer, session_id, content_id, started_at, last_bucket) "
            "SELECT * FROM unnest(%b::bytea[], %b::bytea[], %b::bytea[], %b::int8[], %b::int8[]) "
            "ORDER BY 1, 2 ON CONFLICT (viewer, session_id) DO NOTHING",
            cols,
        )
        with conn.cursor() as locked, conn.cursor() as dcur, conn.cursor() as vcur:
            locked.execute(
                "SELECT s.viewer, s.session_id, s.content_id, s.started_at, s.last_bucket, "
                "s.quarantined_at FROM receipt_session s "
                "JOIN unnest(%b::bytea[], %b::bytea[]) AS k(viewer, session_id) "
                "ON s.viewer = k.viewer AND s.session_id = k.session_id "
                "ORDER BY s.viewer, s.session_id FOR UPDATE OF s",
                keys,
            )
            dcur.execute(
                "SELECT d.viewer, d.session_id, d.node, d.bucket, d.bytes_served, "
                "d.segments_served, d.issued_at, d.signature FROM delivery_best d "
                "JOIN unnest(%b::bytea[], %b::bytea[]) AS k(viewer, session_id) "
                "ON d.viewer = k.viewer AND d.session_id = k.session_id",
                keys,
            )
            vcur.execute(
                "SELECT w.viewer, w.session_id, w.bucket, w.watch_seconds, w.issued_at, "
                "w.signature FROM view_best w "
                "JOIN unnest(%b::bytea[], %b::bytea[]) AS k(viewer, session_id) "
                "ON w.viewer = k.viewer AND w.session_id = k.session_id",
                keys,
            )
            session_rows = locked.fetchall()
            delivery = dcur.fetchall()
            view = vcur.fetchall()
        sessions: dict[SessionKey, SessionState] = {}
        for v, s, cid, st, last, q in session_rows:
            skey = (bytes(v), bytes(s))
            # Rows this batch just inserted are new=False too: they exist, only changes
            # (bucket, quarantine) are written back.
            sessions[skey] = SessionState(
                bytes(cid), dec(st), last, None if q is None else dec(q), False
            )
        if len(sessions) != len(skeys):
            # Pruned between the insert and the lock: start over, the insert will create it.
            raise psycopg.errors.SerializationFailure("a batch session was pruned meanwhile")
        return self._rows_to_state(sessions, delivery, view)

    def _write_state(self, cur: Any, state: BatchState, upsert_sessions: bool = False) -> None:
        new, changed = [], []
        for (v, s), st in sorted(state.sessions.items()):
            q = None if st.quarantined_at is None else enc(st.quarantined_at)
            if st.new:
                new.append((v, s, st.content_id, enc(st.started_at), st.last_bucket, q))
            elif st.dirty:
                changed.append((v, s, st.last_bucket, q))
        if new:
            cur.execute(
                "INSERT INTO receipt_session (viewer, session_id, content_id, started_at, "
                "last_bucket, quarantined_at) SELECT * FROM unnest(%b::bytea[], %b::bytea[], "
                "%b::bytea[], %b::int8[], %b::int8[], %b::int8[]) "
                "ON CONFLICT (viewer, session_id) DO NOTHING",
                _columns(new, 6),
                binary=True,
            )
        if changed:
            cur.execute(
                "UPDATE receipt_session s SET last_bucket = u.last_bucket, "
                "quarantined_at = u.quarantined_at FROM unnest(%b::bytea[], %b::bytea[], "
                "%b::int8[], %b::int8[]) AS u(viewer, session_id, last_bucket, quarantined_at) "
                "WHERE s.viewer = u.viewer AND s.session_id = u.session_id",
                _columns(changed, 4),
                binary=True,
            )
        rows = self._delivery_rows(state)
        if rows:
            cur.execute(
                "INSERT INTO delivery_best (viewer, session_id, node, bucket, bytes_served, "
                "segments_served, issued_at, signature) SELECT * FROM unnest(%b::bytea[], "
                "%b::bytea[], %b::bytea[], %b::int8[], %b::int8[], %b::int8[], %b::int8[], "
                "%b::bytea[]) ON CONFLICT (viewer, session_id, node, bucket) DO UPDATE SET "
                "bytes_served = excluded.bytes_served, segments_served = excluded.segments_served, "
                "issued_at = excluded.issued_at, signature = excluded.signature",
                _columns(rows, 8),
                binary=True,
            )
        rows = self._view_rows(state)
        if rows:
            cur.execute(
                "INSERT INTO view_best (viewer, session_id, bucket, watch_seconds, issued_at, "
                "signature) SELECT * FROM unnest(%b::bytea[], %b::bytea[], %b::int8[], "
                "%b::int8[], %b::int8[], %b::bytea[]) "
                "ON CONFLICT (viewer, session_id, bucket) DO UPDATE SET "
                "watch_seconds = excluded.watch_seconds, issued_at = excluded.issued_at, "
                "signature = excluded.signature",
                _columns(rows, 6),
                binary=True,
            )
        rows = self._touch_rows(state)
        if rows:
            cur.execute(
                "INSERT INTO session_touch (viewer, session_id, bucket) SELECT * FROM "
                "unnest(%b::bytea[], %b::bytea[], %b::int8[])",
                _columns(rows, 3),
                binary=True,
            )
        if state.quarantines:
            cur.executemany(
                "INSERT INTO quarantine (viewer, session_id, stored_at, detail, evidence_stored, "
                "evidence_received) VALUES (%s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (viewer, session_id) DO NOTHING",
                [(v, s, enc(at), d, a, b) for v, s, at, d, a, b in state.quarantines],
            )

    # The rejection log as one statement per table (executemany would cost a round trip a row).

    def _add_counts(self, cur: Any, rows: list[tuple[str, bytes, int, int]]) -> None:
        cur.execute(
            "INSERT INTO rejection_count (reason, node, epoch, count) SELECT * FROM "
            "unnest(%b::text[], %b::bytea[], %b::int8[], %b::int8[])" + self._COUNT_UPSERT,
            _columns(rows, 4),
        )

    def _advance_cursors(self, cur: Any, rows: list[tuple[str, int]]) -> dict[str, int]:
        with cur.connection.cursor() as returning:  # its own cursor: queued results stay apart
            returning.execute(
                "INSERT INTO rejection_cursor (reason, written) SELECT * FROM "
                "unnest(%b::text[], %b::int8[])" + self._CURSOR_UPSERT,
                _columns(rows, 2),
            )
            return dict(returning.fetchall())

    def _put_samples(self, cur: Any, rows: list[tuple]) -> None:
        cur.execute(
            "INSERT INTO rejection_sample (reason, slot, stored_at, node, epoch, detail, raw) "
            "SELECT * FROM unnest(%b::text[], %b::int4[], %b::int8[], %b::bytea[], %b::int8[], "
            "%b::text[], %b::text[])" + self._SAMPLE_UPSERT,
            _columns(rows, 7),
        )


def _columns(rows: list[tuple], width: int) -> list[list]:
    """Row tuples -> one list per column (the arrays that unnest() takes back apart)."""
    if not rows:
        return [[] for _ in range(width)]
    return [list(col) for col in zip(*rows, strict=True)]

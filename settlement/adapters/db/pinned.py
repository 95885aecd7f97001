"""Values a store fixes once and keeps (table `pinned_value`): the first writer wins, every
later reader (other workers, instances, restarts) gets the same value."""

from __future__ import annotations

import time
from typing import Any

from settlement.adapters.db.store import Store


def pin_value(store: Store, name: str, value: int) -> tuple[int, bool]:
    """The value pinned under `name`, pinning `value` first when there is none.

    Returns (the pinned value, whether this call pinned it). Concurrent callers agree: the
    insert does nothing when another committed first, and the read sees the winner's row.
    """

    def fn(cur: Any) -> tuple[int, bool]:
        cur.execute(
            store._q(
                "INSERT INTO pinned_value (name, value, pinned_at) VALUES (%s, %s, %s) "
                "ON CONFLICT (name) DO NOTHING"
            ),
            (name, value, int(time.time())),
        )
        inserted = cur.rowcount == 1
        cur.execute(store._q("SELECT value FROM pinned_value WHERE name = %s"), (name,))
        return int(cur.fetchone()[0]), inserted

    result: tuple[int, bool] = store._run(fn)
    return result


def pinned(store: Store, name: str) -> int | None:
    """The value pinned under `name`, if any."""

    def fn(cur: Any) -> int | None:
        cur.execute(store._q("SELECT value FROM pinned_value WHERE name = %s"), (name,))
        row = cur.fetchone()
        return None if row is None else int(row[0])

    result: int | None = store._run(fn, write=False)
    return result

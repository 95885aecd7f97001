"""The watchtower's verdicts (table `audit_verdict`): one row per (epoch, kind, root) it
audited in full, pass or fail, upserted when it audits the same root again. The explorer
shows an epoch's verdict only when the row's root is the epoch's root."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from settlement.adapters.db.store import Store
from settlement.errors import InputError, redact

KINDS: Final = ("epoch", "correction")
FIRST_MISMATCH_MAX: Final = 500  # characters of the first mismatch kept (a line, not a report)


@dataclass(frozen=True, slots=True)
class StoredVerdict:
    epoch: int
    kind: str  # "epoch" | "correction"
    root: str  # 0x-prefixed lowercase hex
    ok: bool
    mismatches: int
    first_mismatch: str
    audited_at: int  # unix seconds
    source: str

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "mismatches": self.mismatches,
            "first_mismatch": self.first_mismatch or None,
            "audited_at": self.audited_at,
            "source": self.source,
            "root": self.root,
            "kind": self.kind,
        }


_COLUMNS: Final = "epoch, kind, root, ok, mismatches, first_mismatch, audited_at, source"


def record_verdict(store: Store, v: StoredVerdict) -> None:
    """Keep `v`, replacing an earlier verdict on the same (epoch, kind, root). The first
    mismatch is cut to FIRST_MISMATCH_MAX characters, its URLs to scheme://host:port (the
    explorer shows it to anyone)."""
    if v.kind not in KINDS:
        raise InputError(f"kind must be one of {', '.join(KINDS)}, got {v.kind!r}")
    if v.mismatches < 0 or (v.ok and v.mismatches):
        raise InputError(f"a verdict with ok={v.ok} cannot have {v.mismatches} mismatches")
    row = (
        v.epoch,
        v.kind,
        v.root.lower(),
        v.ok,
        v.mismatches,
        redact(v.first_mismatch)[:FIRST_MISMATCH_MAX],  # public: no URL's key or password
        v.audited_at,
        v.source,
    )

    def fn(cur: Any) -> None:
        cur.execute(
            store._q(
                f"INSERT INTO audit_verdict ({_COLUMNS}) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (epoch, kind, root) DO UPDATE SET ok = excluded.ok, "
                "mismatches = excluded.mismatches, first_mismatch = excluded.first_mismatch, "
                "audited_at = excluded.audited_at, source = excluded.source"
            ),
            row,
        )

    store._run(fn)


def verdicts_for(store: Store, epochs: Iterable[int]) -> dict[int, list[StoredVerdict]]:
    """Every verdict kept on each of `epochs`, newest audit first (epochs without one are
    left out)."""
    wanted = sorted(set(epochs))
    if not wanted:
        return {}

    def fn(cur: Any) -> dict[int, list[StoredVerdict]]:
        out: dict[int, list[StoredVerdict]] = {}
        for i in range(0, len(wanted), 500):
            chunk = wanted[i : i + 500]
            cur.execute(
                store._q(
                    f"SELECT {_COLUMNS} FROM audit_verdict "
                    f"WHERE epoch IN ({', '.join(['%s'] * len(chunk))}) "
                    "ORDER BY epoch, audited_at DESC, kind, root"
                ),
                tuple(chunk),
            )
            for r in cur.fetchall():
                v = StoredVerdict(
                    int(r[0]), str(r[1]), str(r[2]), bool(r[3]), int(r[4]), str(r[5]),
                    int(r[6]), str(r[7]),
                )  # fmt: skip
                out.setdefault(v.epoch, []).append(v)
        return out

    result: dict[int, list[StoredVerdict]] = store._run(fn, write=False)
    return result


def verdict_of_root(store: Store, epoch: int, root: str) -> StoredVerdict | None:
    """The latest verdict on `root` as epoch `epoch`'s root (of a proposal or a correction),
    None when the watchtower kept none on that root."""
    return matching(verdicts_for(store, [epoch]).get(epoch, []), root)


def matching(verdicts: list[StoredVerdict], root: str) -> StoredVerdict | None:
    """The newest of `verdicts` (newest first) on `root`; never one on another root."""
    found = [v for v in verdicts if v.root == root.lower()]
    return found[0] if found else None

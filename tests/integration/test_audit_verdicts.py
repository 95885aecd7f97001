"""The watchtower's verdicts kept in the store (table audit_verdict), on SQLite and
PostgreSQL: recorded, read back per epoch, replaced on a re-audit of the same root, and
never matched to another root."""

from __future__ import annotations

from typing import Any

import pytest

from settlement.adapters.db.store import Store
from settlement.adapters.db.verdicts import (
    FIRST_MISMATCH_MAX,
    StoredVerdict,
    matching,
    record_verdict,
    verdict_of_root,
    verdicts_for,
)
from settlement.errors import InputError

ROOT_A = "0x" + "ab" * 32
ROOT_B = "0x" + "cd" * 32


@pytest.fixture
def vstore(store: Store) -> Store:
    def fn(cur: Any) -> None:
        cur.execute("DELETE FROM audit_verdict")

    store._run(fn)
    return store


def _v(epoch: int, root: str, ok: bool = True, **kw: Any) -> StoredVerdict:
    fields: dict[str, Any] = {
        "kind": "epoch",
        "mismatches": 0 if ok else 3,
        "first_mismatch": "" if ok else "epoch 1: root differs",
        "audited_at": 1_700_000_000,
        "source": "watchtower",
    }
    fields.update(kw)
    return StoredVerdict(epoch=epoch, root=root, ok=ok, **fields)


def test_record_and_read_back(vstore: Store) -> None:
    record_verdict(vstore, _v(1, ROOT_A))
    record_verdict(vstore, _v(2, ROOT_B, ok=False))
    got = verdicts_for(vstore, [1, 2, 3])
    assert set(got) == {1, 2}
    assert got[1] == [_v(1, ROOT_A)]
    (failed,) = got[2]
    assert not failed.ok and failed.mismatches == 3
    assert failed.first_mismatch == "epoch 1: root differs"
    assert verdicts_for(vstore, []) == {}
    assert verdict_of_root(vstore, 1, ROOT_A) == _v(1, ROOT_A)
    assert verdict_of_root(vstore, 1, ROOT_B) is None  # another root: no verdict
    assert verdict_of_root(vstore, 3, ROOT_A) is None


def test_a_reaudit_of_the_same_root_replaces_the_verdict(vstore: Store) -> None:
    record_verdict(vstore, _v(1, ROOT_A, ok=False, audited_at=100))
    record_verdict(vstore, _v(1, ROOT_A, ok=True, audited_at=200))
    (only,) = verdicts_for(vstore, [1])[1]
    assert only.ok and only.mismatches == 0 and only.audited_at == 200
    # A correction of the same epoch is another row, and the newest audit comes first.
    record_verdict(vstore, _v(1, ROOT_B, kind="correction", audited_at=300))
    kept = verdicts_for(vstore, [1])[1]
    assert [(v.kind, v.root) for v in kept] == [("correction", ROOT_B), ("epoch", ROOT_A)]
    assert matching(kept, ROOT_A) == only
    assert matching(kept, ROOT_B.upper().replace("0X", "0x")) == kept[0]


def test_first_mismatch_is_bounded_and_bad_rows_refused(vstore: Store) -> None:
    record_verdict(vstore, _v(4, ROOT_A, ok=False, first_mismatch="x" * 10_000))
    (v,) = verdicts_for(vstore, [4])[4]
    assert v.first_mismatch == "x" * FIRST_MISMATCH_MAX
    secret = "dataset unavailable: https://user:pw@data.example:8443/k3y/epoch-1/a.ndjson: 503"
    record_verdict(vstore, _v(6, ROOT_A, ok=False, first_mismatch=secret))
    (shown,) = verdicts_for(vstore, [6])[6]
    assert "pw" not in shown.first_mismatch and "k3y" not in shown.first_mismatch
    assert "data.example:8443" in shown.first_mismatch
    with pytest.raises(InputError, match="kind"):
        record_verdict(vstore, _v(5, ROOT_A, kind="other"))
    with pytest.raises(InputError, match="mismatches"):
        record_verdict(vstore, _v(5, ROOT_A, ok=True, mismatches=2))
    assert 5 not in verdicts_for(vstore, [5])


def test_many_epochs_in_one_read(vstore: Store) -> None:
    for e in range(1, 1201):
        record_verdict(vstore, _v(e, ROOT_A, audited_at=e))
    got = verdicts_for(vstore, range(1, 1301))
    assert sorted(got) == list(range(1, 1201))
    assert all(vs[0].audited_at == e for e, vs in got.items())

"""`scripts/bench settle --epochs N` runs end to end at a tiny size: N hourly closes with
retention pruning, each close's time and floor, and last/first in its JSON line; and the
one-epoch run's line carries its floor (issue 13, item 7)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_settle_over_epochs_prints_each_close_and_its_floor():
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "benches" / "settle.py"),
         "--store", "sqlite", "--sessions", "300", "--epochs", "4"],
        capture_output=True, text=True, env=dict(os.environ), cwd=ROOT, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["epochs"] == 4 and result["sessions"] == 300
    for field in ("close_s_by_epoch", "floor_s_by_epoch", "live_sessions_by_epoch"):
        assert len(result[field]) == 4, field
    assert all(s > 0 for s in result["close_s_by_epoch"] + result["floor_s_by_epoch"])
    assert result["first_close_s"] == result["close_s_by_epoch"][0] == result["close_s"]
    assert result["last_close_s"] == result["close_s_by_epoch"][-1]
    assert result["ratio_last_vs_first"] > 0 and result["ratio_vs_floor"] > 0
    # Retention on (sessions go 3 h after they start): epoch 4's close runs over fewer live
    # sessions than were ever started.
    assert result["live_sessions_by_epoch"][-1] < 4 * 300
    assert "pruned" in out.stderr
    # And the balance history is compacted after each close: one row per account paid so far.
    assert len(result["snapshot_s_by_epoch"]) == len(result["retention_s_by_epoch"]) == 4
    assert result["balance_rows_by_epoch"] == result["balance_accounts_by_epoch"]
    assert result["balance_rows_by_epoch"][-1] > result["balance_rows_by_epoch"][0] > 0

"""Every benchmark runs end to end at a tiny size and ends with its JSON line, field names as
their issues give them: a bench that nothing runs rots (the ingest bench once imported a
function that had been removed), and its numbers are only quoted from full runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # every bench end to end, each in its own process

ROOT = Path(__file__).resolve().parents[2]

BENCHES = {
    "verify": (
        ["--quick", "--receipts", "500", "--rounds", "1"],
        {"bench", "reference_per_s", "project_per_s", "project_wire_per_s", "limit_per_s",
         "ratio_vs_limit", "wire_ratio_vs_limit", "ratio_vs_reference"},
    ),
    "ingest": (
        ["--store", "sqlite", "--receipts", "2000"],
        {"bench", "store", "rate_limit", "receipts_per_s", "p50_ms", "p99_ms",
         "store_ceiling_per_s", "verify_ceiling_per_s", "ratio_vs_verify_ceiling",
         "peak_rss_mb"},
    ),
    "merkle": (
        ["--quick", "--rounds", "1", "--oz-rounds", "1"],
        {"bench", "project_s_100k", "oz_js_s_100k", "speedup_vs_oz", "project_s_1m",
         "roots_equal"},
    ),
    "settle": (
        ["--store", "sqlite", "--sessions", "2000"],
        {"bench", "store", "sessions", "close_s", "stage_s", "peak_rss_mb", "next_close_s",
         "floor_s", "ratio_vs_floor"},
    ),
    "audit": (
        ["--quick", "--store", "sqlite"],
        {"bench", "sessions", "receipts", "audit_s", "close_s", "verify_s", "ratio_vs_floor",
         "peak_rss_mb"},
    ),
    "chain": (
        ["--quick", "--accounts", "120", "--singles", "5"],
        {"bench", "claims_per_s", "gas_per_claim", "gas_per_claim_in_batch"},
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(BENCHES))
def test_bench_runs_and_prints_its_json_line(name):
    args, fields = BENCHES[name]
    env = dict(os.environ)
    tools = [ROOT / ".tools" / "bin", ROOT / "node_modules" / ".bin"]
    env["PATH"] = os.pathsep.join([*map(str, tools), env.get("PATH", "")])
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "benches" / f"{name}.py"), *args],
        capture_output=True, text=True, env=env, cwd=ROOT,
        timeout=1200 if name == "audit" else 600,  # audit: signs 240,000 receipts on a cold cache
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert fields <= result.keys(), f"missing {fields - result.keys()}"
    if "roots_equal" in result:
        assert result["roots_equal"] is True
    if name == "audit":  # the audit of an honest epoch passed, every signature checked
        assert result["sessions"] == 100_000 and result["receipts"] > result["sessions"]
    if name == "settle":
        assert result["sessions"] == 2000 and result["close_s"] > 0


def test_table_mode_runs_the_benches_and_prints_one_table_then_their_json_lines():
    """`scripts/bench` with no name, reduced to the cheapest bench: its run, its row in the
    table, and the combined JSON line holding the bench's own line unchanged."""
    env = dict(os.environ)
    tools = [ROOT / ".tools" / "bin", ROOT / "node_modules" / ".bin"]
    env["PATH"] = os.pathsep.join([*map(str, tools), env.get("PATH", "")])
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "benches" / "_table.py"), "--only", "chain"],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.strip().splitlines()
    combined = json.loads(lines[-1])
    assert combined["bench"] == "all" and list(combined["results"]) == ["chain"]
    chain = combined["results"]["chain"]
    assert BENCHES["chain"][1] <= chain.keys()
    # The bench's own JSON line went to stderr as it printed it, and is the same object.
    own = [json.loads(x) for x in out.stderr.splitlines() if x.startswith('{"bench": "chain"')]
    assert own == [chain]
    header, rule, row = lines[:3]
    assert header.split(" | ")[0].strip() == "bench" and set(rule) <= {"-", "+"}
    assert row.startswith("chain ") and "claims/s" in row
    assert f"gas {chain['gas_per_claim']:,} single" in row


def test_table_mode_refuses_an_unknown_bench():
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "benches" / "_table.py"), "--only", "nosuch"],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )  # fmt: skip
    assert out.returncode == 2 and "no such bench nosuch" in out.stderr

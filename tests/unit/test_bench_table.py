"""`scripts/bench` with no bench name: the table built from each bench's last JSON line
(scripts/benches/_table.py), on canned lines in the shape each bench prints."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def _table_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_table", ROOT / "scripts/benches/_table.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


T = _table_module()

CANNED = {
    "verify": {"bench": "verify", "reference_per_s": 1050, "project_per_s": 38211,
               "project_wire_per_s": 30110, "limit_per_s": 40950, "ratio_vs_limit": 0.933,
               "wire_ratio_vs_limit": 0.735, "ratio_vs_reference": 36.4},
    "ingest": {"bench": "ingest", "store": "postgres", "rate_limit": True,
               "receipts_per_s": 6120, "p50_ms": 301.5, "p99_ms": 988.0,
               "store_ceiling_per_s": 51000, "verify_ceiling_per_s": 52000,
               "ratio_vs_verify_ceiling": 0.118, "peak_rss_mb": 612.3},
    "merkle": {"bench": "merkle", "project_s_100k": 0.412, "oz_js_s_100k": 7.9,
               "speedup_vs_oz": 19.2, "project_s_1m": 4.6, "roots_equal": True},
    "chain": {"bench": "chain", "claims_per_s": 143.2, "gas_per_claim": 61234,
              "gas_per_claim_in_batch": 38811},
}  # fmt: skip


def test_each_bench_is_one_row_with_its_headline_and_ratio() -> None:
    out = T.table(CANNED, {"verify": 12.4, "ingest": 80.0, "merkle": 30.2, "chain": 41.0})
    lines = out.splitlines()
    assert lines[0].split(" | ")[0].strip() == "bench"
    rows = {line.split(" | ")[0].strip(): line for line in lines[2:]}
    assert list(rows) == ["verify", "ingest", "merkle", "chain"]  # the bench order, not the dict's
    assert "38,211/s" in rows["verify"] and "0.933 of raw recovery" in rows["verify"]
    assert "36.4x eth-account" in rows["verify"]
    assert "6,120 receipts/s" in rows["ingest"] and "0.118 of the verify ceiling" in rows["ingest"]
    assert "(postgres)" in rows["ingest"] and "p99 988 ms" in rows["ingest"]
    assert "19.2x OpenZeppelin JS" in rows["merkle"] and "roots equal yes" in rows["merkle"]
    assert "0.412 s at 100k leaves, 4.6 s at 1M" in rows["merkle"]
    assert "gas 61,234 single, 38,811 in claimMany" in rows["chain"]
    assert rows["ingest"].rstrip().endswith("80 s")
    # One table: every row has the header's columns, aligned.
    assert len({len(line) for line in lines[:2]}) == 1
    assert all(line.count(" | ") == 4 for line in [lines[0], *lines[2:]])


def test_a_failed_bench_is_a_row_saying_so_and_unequal_roots_show() -> None:
    merkle = {**CANNED["merkle"], "roots_equal": False, "quick": True}
    out = T.table({"settle": None, "merkle": merkle}, {"settle": 3.0})
    rows = {line.split(" | ")[0].strip(): line for line in out.splitlines()[2:]}
    assert "FAILED" in rows["settle"] and "roots equal NO" in rows["merkle"]
    assert "0.412 s at 10k leaves, 4.6 s at 100k" in rows["merkle"]  # --quick: a tenth


def test_an_unknown_bench_lists_its_figures_and_a_missing_figure_is_a_dash() -> None:
    out = T.table(
        {"newbench": {"bench": "newbench", "ops_per_s": 1234}, "chain": {"bench": "chain"}}, {}
    )
    rows = {line.split(" | ")[0].strip(): line for line in out.splitlines()[2:]}
    assert "ops_per_s 1,234" in rows["newbench"]
    assert "- claims/s" in rows["chain"]


def test_the_result_is_the_last_stdout_line_when_it_is_a_json_object() -> None:
    line = json.dumps(CANNED["chain"])
    assert T.last_json(f"log line\n{line}\n\n") == CANNED["chain"]
    assert T.last_json(f"{line}\nnot json\n") is None
    assert T.last_json("[1, 2]\n") is None
    assert T.last_json("") is None

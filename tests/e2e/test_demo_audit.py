"""The README's third-party audit of the demo: `settlement demo --rpc` on anvil audits itself
over HTTP, then leaves its chain and datasets behind, and `settlement audit` with the chain's
URL and the distributor's address checks them (exit 0); one changed byte in a published file
makes it exit 1."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from support.anvil import Anvil, find_anvil

pytestmark = pytest.mark.slow  # the whole demo, then the audit, on anvil

ANVIL = find_anvil()  # scripts/setup installs it; without it this test fails, never skips


def settlement(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "settlement.cli.main", *args],
        capture_output=True, text=True, timeout=600, env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip


def test_a_third_party_audits_the_demos_chain_in_two_commands(tmp_path: Path) -> None:
    assert ANVIL is not None, "anvil not found: run scripts/setup"
    work = tmp_path / "demo"
    with Anvil(ANVIL) as node:
        small = ["--nodes", "12", "--viewers", "150", "--receipts", "2500", "--workers", "1"]
        demo = settlement("demo", "--rpc", node.url, "--dir", str(work), *small)
        assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
        deployment = json.loads((work / "deployment.json").read_text())
        command = (
            f"settlement audit --rpc {node.url} --distributor {deployment['distributor']} "
            f"--from-block {deployment['block']}"
        )
        assert command in demo.stdout
        # The demo's own auditor read this chain over RPC and the files over the demo
        # service's HTTP /v1/data, while it ran.
        assert "audit verdict: clean" in demo.stdout
        assert re.search(
            r"audited 4 epochs over HTTP from http://127\.0\.0\.1:\d+/v1/data: clean", demo.stderr
        )

        audit = settlement(*command.split()[1:], "--json")
        assert audit.returncode == 0, audit.stdout[-3000:] + audit.stderr[-3000:]
        report = json.loads(audit.stdout)
        assert report["ok"] is True and report["mismatches"] == []
        assert [e["epoch"] for e in report["epochs"]] == [1, 2, 3, 4]

        # One byte of one published receipt file changed: the same command now fails.
        manifest = json.loads((work / "epochs" / "epoch-00000001" / "manifest.json").read_text())
        entry = next(f for f in manifest["files"] if f["name"] == "delivery_receipts")
        data = work / "epochs" / "epoch-00000001" / f"{entry['sha256']}.ndjson"
        raw = bytearray(data.read_bytes())
        raw[len(raw) // 2] ^= 0x01
        data.write_bytes(bytes(raw))
        tampered = settlement(*command.split()[1:], "--json")
        assert tampered.returncode == 1, tampered.stdout[-3000:] + tampered.stderr[-3000:]
        assert json.loads(tampered.stdout)["ok"] is False

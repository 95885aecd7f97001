"""`settlement simulate --url` against a real server process (SQLite), with no --start: the
run times its receipts to the service's clock from GET /v1/info, so honest receipts are
accepted whatever the service's genesis, and a run whose verdicts differ from truth.json
exits 3 naming each difference (issue 16 item 1, simulator)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import orjson
from support.server import ServerProcess

TOKEN = "simulate-live-token-" + "t" * 16


def simulate(url: str, out: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable, "-m", "settlement.cli", "simulate",
            "--out", str(out),
            "--seed", "5",
            "--receipts", "1500",
            "--nodes", "8",
            "--viewers", "100",
            "--creators", "8",
            "--contents", "40",
            "--bad-fraction", "all=0.01",
            "--workers", "1",
            "--url", url,
            "--max-batch", "500",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )  # fmt: skip


def test_simulate_url_times_receipts_to_a_service_with_a_recent_genesis(tmp_path: Path) -> None:
    genesis = int(time.time()) - 900  # 15 minutes of history: shorter window and sessions
    env = {
        **os.environ,
        "W2E_DATABASE_URL": f"sqlite:///{tmp_path}/ingest.db",
        "W2E_ADMIN_TOKEN": TOKEN,
        "W2E_RATE_LIMIT": "0",
        "W2E_GENESIS": str(genesis),
        "W2E_EPOCH_SECONDS": "300",
    }
    with ServerProcess(env, workers=1, log=tmp_path / "server.log") as server:
        # The simulator's own environment has the default genesis: the service's wins.
        client_env = {k: v for k, v in env.items() if k != "W2E_GENESIS"}
        run = simulate(server.url, tmp_path / "sim", client_env)
    assert run.returncode == 0, run.stderr
    summary = orjson.loads(run.stdout.strip().splitlines()[-1])
    truth = orjson.loads((tmp_path / "sim" / "truth.json").read_bytes())
    assert summary["posted"] == truth["expected"]["ingest"]
    assert summary["mismatches"] == {}
    assert "ISSUED_IN_FUTURE" not in summary["posted"] and "TOO_OLD" not in summary["posted"]
    assert summary["posted"]["accepted"] == truth["honest"] >= 1300
    # every honest receipt between the service's genesis and its clock
    lines = (tmp_path / "sim" / "receipts.ndjson").read_bytes().splitlines()
    labels = (tmp_path / "sim" / "labels.txt").read_text().split()
    stamps = [
        orjson.loads(line)["issuedAt"]
        for line, label in zip(lines, labels, strict=True)
        if label == "honest"
    ]
    assert len(stamps) == truth["honest"]
    assert min(stamps) >= genesis
    assert max(stamps) <= summary["service_now"] + 120
    assert truth["params"]["genesis"] == genesis


def test_simulate_url_exits_3_and_names_what_differs(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "W2E_DATABASE_URL": f"sqlite:///{tmp_path}/ingest.db",
        "W2E_RATE_LIMIT": "0",
        # A genesis long past. Without one the store pins its own first start, rounded down
        # to an epoch: less than 120 s ago at some times of day, which simulate --url refuses.
        "W2E_GENESIS": str(int(time.time()) - 30 * 86400),
    }
    env.pop("W2E_ADMIN_TOKEN", None)  # registries not uploaded: nodes and content unknown
    with ServerProcess(env, workers=1, log=tmp_path / "server.log") as server:
        run = simulate(server.url, tmp_path / "sim", env)
    assert run.returncode == 3, run.stderr
    summary = orjson.loads(run.stdout.strip().splitlines()[-1])
    assert summary["mismatches"]["accepted"]["got"] < summary["mismatches"]["accepted"]["expected"]
    assert "UNKNOWN_NODE" in summary["mismatches"]
    assert "mismatch: UNKNOWN_NODE: expected" in run.stderr
    assert "W2E_ADMIN_TOKEN is unset" in run.stderr
    assert "Traceback" not in run.stderr
    # the default genesis is long past: the run is timed to max_age, nothing TOO_OLD
    assert "TOO_OLD" not in summary["posted"] and "ISSUED_IN_FUTURE" not in summary["posted"]

"""A simulated run through `settlement receipts verify`: every stateless bad actor is
rejected with its reason, every other receipt passes, and the counts equal truth.json."""

from __future__ import annotations

from collections import Counter

import orjson
from typer.testing import CliRunner

from settlement.cli.main import app
from settlement.sim.world import BAD_KINDS, HONEST

DISTRIBUTOR = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
CHAIN_ID = "31337"


def label_of(verdict: dict) -> str:
    if verdict["verdict"] == "accepted":
        return "accepted"
    return verdict.get("reason") or verdict["verdict"]


def test_simulated_receipts_get_the_stateless_verdicts_the_truth_file_promises(tmp_path):
    runner = CliRunner()
    simulated = runner.invoke(
        app,
        [
            "simulate",
            "--out", str(tmp_path),
            "--seed", "9",
            "--receipts", "2000",
            "--nodes", "20",
            "--viewers", "300",
            "--creators", "30",
            "--contents", "200",
            "--bad-fraction", "all=0.02",
            "--bad-fraction", "malformed=0.05",
            "--chain-id", CHAIN_ID,
            "--distributor", DISTRIBUTOR,
            "--workers", "1",
        ],
    )  # fmt: skip
    assert simulated.exit_code == 0, simulated.output
    truth = orjson.loads((tmp_path / "truth.json").read_bytes())
    labels = (tmp_path / "labels.txt").read_text().splitlines()
    assert truth["receipts"] == len(labels) == 2000
    stateless = {k for k, spec in BAD_KINDS.items() if spec.stateless}
    assert all(truth["kinds"][k]["count"] > 0 for k in stateless)

    verified = runner.invoke(
        app,
        [
            "receipts", "verify", str(tmp_path / "receipts.ndjson"),
            "--chain-id", CHAIN_ID,
            "--distributor", DISTRIBUTOR,
            "--now", str(truth["now"]),
        ],
    )  # fmt: skip
    assert verified.exit_code == 0, verified.output
    verdicts = []
    for line in verified.stdout.splitlines():
        try:
            doc = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue  # a human-readable summary line
        if isinstance(doc, dict) and "index" in doc:
            verdicts.append(doc)
    assert [v["index"] for v in verdicts] == list(range(2000))

    got = [label_of(v) for v in verdicts]
    want = [BAD_KINDS[label].reason if label in stateless else "accepted" for label in labels]
    wrong = [(i, labels[i], w, g) for i, (w, g) in enumerate(zip(want, got, strict=True)) if w != g]
    assert wrong == []  # in particular: every honest receipt is accepted
    assert dict(sorted(Counter(got).items())) == truth["expected"]["verify"]
    assert Counter(got)["accepted"] == labels.count(HONEST) + sum(
        truth["kinds"][k]["count"] for k in BAD_KINDS if k not in stateless
    )


def test_simulate_url_loads_registries_and_the_service_answers_the_truth(tmp_path):
    """`settlement simulate --url` against the real server process: the ingest verdicts,
    stateful ones included, add up to truth.json's `expected.ingest` exactly."""
    import os
    import subprocess
    import sys
    import time

    from support.server import ServerProcess

    env = {
        **os.environ,
        "W2E_DATABASE_URL": f"sqlite:///{tmp_path}/ingest.db",
        "W2E_ADMIN_TOKEN": "simulate-test-token-" + "t" * 16,  # >= 32 outside dev mode
        "W2E_RATE_LIMIT": "0",
        # The simulator's genesis (its default); unset, the service pins its first start.
        "W2E_GENESIS": "1767225600",
    }
    start = int(time.time()) - 2 * 86_400  # inside the server's max_age window
    with ServerProcess(env, workers=1, log=tmp_path / "server.log") as server:
        run = subprocess.run(
            [
                sys.executable, "-m", "settlement.cli", "simulate",
                "--out", str(tmp_path / "sim"),
                "--seed", "4",
                "--receipts", "1000",
                "--nodes", "8",
                "--viewers", "100",
                "--creators", "8",
                "--contents", "40",
                "--bad-fraction", "all=0.01",
                "--start", str(start),
                "--workers", "1",
                "--url", server.url,
                "--max-batch", "400",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "simulate-test-token" not in run.stdout + run.stderr
    summary = orjson.loads(run.stdout.strip().splitlines()[-1])
    truth = orjson.loads((tmp_path / "sim" / "truth.json").read_bytes())
    assert summary["registries"] == {"nodes": 8, "content": 40, "viewers": 116}
    assert summary["posted"] == truth["expected"]["ingest"]
    assert all(truth["kinds"][k]["count"] > 0 for k in BAD_KINDS)

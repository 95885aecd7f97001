"""`settlement demo` at a small size: the whole flow through the real HTTP API, claims by
nodes, viewers and creators (one relayed claimMany), the auditor checking every epoch over
the demo's own /v1/data, ending with every on-chain balance equal to its allocation and a
clean audit (exit 0); --serve keeps the service up until interrupted."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from settlement.adapters.chain.local import free_port
from settlement.adapters.db import submitter as sdb
from settlement.adapters.db.store import open_store
from settlement.sim.demo import CLASSES, EPOCHS, STEPS, DemoConfig, DemoResult, run_demo

pytestmark = pytest.mark.slow  # the whole flow, simulated traffic to the audit

SMALL = ["--nodes", "12", "--viewers", "150", "--receipts", "2500", "--workers", "1"]


def test_demo_serves_its_summary_then_stays_up_until_interrupted(tmp_path: Path) -> None:
    port = free_port()
    log = (tmp_path / "stderr.txt").open("w+")  # a file: a full pipe would block the demo
    process = subprocess.Popen(
        [sys.executable, "-m", "settlement.cli.main", "demo", *SMALL,
         "--dir", str(tmp_path / "demo"), "--serve", "--port", str(port)],
        stdout=subprocess.PIPE, stderr=log, text=True,
        # faulthandler: a SIGABRT below prints every thread's stack to the log
        env={**os.environ, "COLUMNS": "200", "PYTHONFAULTHANDLER": "1"},
    )  # fmt: skip
    hung = False
    try:
        assert process.stdout is not None
        lines: list[str] = []
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("serving:"):
                break
        out = "".join(lines)
        assert f"serving: explorer http://127.0.0.1:{port}/ " in out, out[-3000:]
        # Still up after the summary: the published files and the API answer.
        manifest = httpx.get(f"http://127.0.0.1:{port}/v1/data/epoch-00000004/manifest.json")
        assert manifest.status_code == 200
        assert orjson.loads(manifest.content)["epoch"] == "4"
        process.send_signal(signal.SIGINT)
        try:
            rest, _ = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            hung = True
            process.send_signal(signal.SIGABRT)
            process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
        log.seek(0)
        err = log.read()
        log.close()
    assert not hung, f"no exit within 60 s of SIGINT; its threads:\n{err[-6000:]}"
    assert process.returncode == 0, err[-3000:]
    out += rest
    for title in (
        "Rejections by reason",
        "Roots on chain",
        "Top earners by class",
        "Claims by class: on-chain balance against allocation",
        f"Audit over HTTP: http://127.0.0.1:{port}/v1/data",
    ):
        assert title in out
    assert "audit verdict: clean" in out
    assert "OK: every on-chain balance equals its allocation and the audit is clean" in out
    for reason in ("SIGNER_MISMATCH", "CONFLICT", "IMPLAUSIBLE", "UNKNOWN_NODE"):
        assert re.search(rf"│ {reason} +│ +\d+ │", out), reason
    # Claims by class: each class claimed with its own key and through the relayer, and every
    # balance equals its allocation (n/n).
    for cls in CLASSES:
        row = re.search(rf"│ {cls} +│ (\d+) +│ (\d+) +│ [\d.]+ +│ (\d+)/(\d+) +│", out)
        assert row is not None, cls
        own, relayed, equal, n = map(int, row.groups())
        assert own >= 1 and relayed >= 1 and equal == n == own + relayed
    # Four epochs audited, each ok.
    for epoch in range(1, EPOCHS + 1):
        assert re.search(rf"│ {epoch} +│ \d+ +│ \d+ +│ \d+ +│ [a-z ]+│ ok +│", out), epoch
    assert "relayed one claimMany for" in err
    for step in STEPS:
        assert step in err  # its progress bar

    # Three roots (epoch 1, epochs 2-3 folded, epoch 4), each accepted once, whose dataURIs
    # name the demo service's /v1/data.
    store = open_store(f"sqlite:///{tmp_path}/demo/demo.db")
    try:
        rows = sdb.SubmitterStore(store).all()
    finally:
        store.close()
    assert [(r.first_epoch, r.epoch, r.status) for r in rows] == [
        (1, 1, sdb.ACCEPTED),
        (2, 3, sdb.ACCEPTED),
        (4, 4, sdb.ACCEPTED),
    ]
    assert [r.data_uri for r in rows] == [
        f"http://127.0.0.1:{port}/v1/data/epoch-{e:08d}/manifest.json" for e in (1, 3, 4)
    ]


def test_run_demo_reports_every_step_claims_by_class_and_a_clean_http_audit() -> None:
    progress: dict[str, list[tuple[int, int]]] = {}
    held: list[tuple[int, dict[str, Any]]] = []

    def hold(result: DemoResult) -> None:  # the service is still up here
        response = httpx.get(f"{result.url}/v1/data/epoch-00000001/manifest.json")
        held.append((response.status_code, orjson.loads(response.content)))

    cfg = DemoConfig(nodes=12, viewers=150, creators=3, contents=30, receipts=2500, workers=1)
    result = run_demo(
        cfg,
        say=lambda m: None,
        progress=lambda step, done, total: progress.setdefault(step, []).append((done, total)),
        hold=hold,
    )
    assert result.ok, result.problems
    assert list(progress) == list(STEPS)
    for step, calls in progress.items():
        assert calls[-1][0] == calls[-1][1] > 0, step  # every bar reaches its end
    assert held and held[0][0] == 200 and held[0][1]["epoch"] == "1"
    # After the run nothing is served any more.
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{result.url}/v1/data/epoch-00000001/manifest.json", timeout=2)

    # The audit: every epoch, over HTTP, clean, signatures checked.
    report = result.audit
    assert report.ok and report.mismatches == [] and report.suppressed == 0
    assert [e.epoch for e in report.epochs] == list(range(1, EPOCHS + 1))
    assert all(e.signatures_checked > 0 for e in report.epochs)
    assert report.source.startswith(result.url + "/v1/data")

    # Claims by nodes, viewers and creators: own-key claims and the relayed claimMany.
    assert set(result.claims) == set(CLASSES)
    for cls, row in result.claims.items():
        assert row.own_key == cfg.own_claims and row.relayed >= 1, cls
        assert row.equal == row.own_key + row.relayed and row.paid > 0, cls
    assert result.totals["paid"] == sum(r.paid for r in result.claims.values())
    assert result.totals["allocated"] == result.totals["onchain_total"]

    # Rejections by reason: exactly what the simulator's bad actors were meant to get.
    assert result.rejections
    assert "accepted" not in result.rejections and "duplicate" not in result.rejections
    expected = {k: n for k, n in result.expected.items() if k not in ("accepted", "duplicate")}
    assert result.rejections == expected
    assert set(result.seconds) >= {"simulate", "ingest", "claims", "audit", "total"}

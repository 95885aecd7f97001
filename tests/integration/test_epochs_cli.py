"""`settlement epochs ...` and `settlement tree ...` through the real CLI entry point."""

from __future__ import annotations

import orjson
from storekit import EPOCH, GENESIS, GRACE, World, key, wire
from typer.testing import CliRunner

from settlement.adapters.db.store import open_store
from settlement.cli.main import app
from settlement.domain import merkle
from settlement.services import ingest as service

CUT1 = GENESIS + EPOCH + GRACE


def env(tmp_path) -> dict[str, str]:
    return {
        "W2E_DATABASE_URL": f"sqlite:///{tmp_path}/cli.db",
        "W2E_DATA_DIR": str(tmp_path / "epochs"),
        "W2E_GENESIS": str(GENESIS),
        "W2E_EPOCH_SECONDS": str(EPOCH),
        "W2E_GRACE_SECONDS": str(GRACE),
        "W2E_EMISSION": "1000",
        "W2E_DISTRIBUTOR": "0x5fbdb2315678afecb367f032d93f642f64180aa3",
    }


def test_epochs_close_and_show(tmp_path, monkeypatch):
    e = env(tmp_path)
    for k, v in e.items():
        monkeypatch.setenv(k, v)
    from settlement.config import load_settings

    s = load_settings()
    with open_store(e["W2E_DATABASE_URL"]) as store:
        w = World()
        w.register(store)
        sid = key("cli")
        service.Ingestor(store, s).ingest(
            wire(w.delivery(sid, 100_000, 1, GENESIS + 100), w.view(sid, 4, GENESIS + 100)),
            GENESIS + 101,
        )
    runner = CliRunner()
    early = runner.invoke(app, ["epochs", "close", "--epoch", "1", "--now", str(CUT1 - 1)])
    assert early.exit_code == 1 and "cutoff" in early.output
    r = runner.invoke(app, ["epochs", "close", "--now", str(GENESIS + 3 * EPOCH + GRACE)])
    assert r.exit_code == 0, r.output
    closed = [orjson.loads(line) for line in r.stdout.splitlines()]
    assert [c["epoch"] for c in closed] == [1, 2, 3]
    assert closed[0]["proposes"] and not closed[1]["proposes"]
    again = runner.invoke(app, ["epochs", "close", "--epoch", "1", "--now", str(CUT1)])
    assert orjson.loads(again.stdout)["alreadyClosed"] is True
    shown = runner.invoke(app, ["epochs", "show", "1"])
    assert shown.exit_code == 0
    manifest = orjson.loads(shown.stdout)
    assert manifest["root"] == closed[0]["root"] and manifest["epoch"] == "1"
    assert runner.invoke(app, ["epochs", "show", "9"]).exit_code == 2  # NotFound: input error


def test_tree_build_and_prove(tmp_path):
    accounts = [bytes([i]) * 20 for i in range(1, 6)]
    csv = tmp_path / "balances.csv"
    lines = ["address,amount"] + [f"0x{a.hex().upper()},{i * 1000}" for i, a in enumerate(accounts)]
    csv.write_text("\n".join(lines) + "\n")
    out = tmp_path / "dump.json"
    runner = CliRunner()
    r = runner.invoke(app, ["tree", "build", "--input", str(csv), "--out", str(out)])
    assert r.exit_code == 0, r.output
    expected = merkle.tree_for_balances({a: i * 1000 for i, a in enumerate(accounts)})
    assert r.stdout.strip() == expected.root
    assert out.read_bytes() == expected.dump_json()
    assert len(expected) == 4  # the zero balance gets no leaf
    p = runner.invoke(
        app, ["tree", "prove", "--dump", str(out), "--account", "0x" + accounts[2].hex()]
    )
    assert p.exit_code == 0, p.output
    got = orjson.loads(p.stdout)
    assert got["amount"] == "2000" and got["root"] == expected.root
    assert merkle.verify(got["root"], accounts[2], 2000, got["proof"])
    missing = runner.invoke(
        app, ["tree", "prove", "--dump", str(out), "--account", "0x" + "ee" * 20]
    )
    assert missing.exit_code == 2
    bad = tmp_path / "bad.csv"
    bad.write_text("address,amount\n0x" + "11" * 20 + ",1.5\n")
    r = runner.invoke(app, ["tree", "build", "--input", str(bad), "--out", str(out)])
    assert r.exit_code == 2 and "decimal" in r.output

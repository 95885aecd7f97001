"""The operator's frictions of issue 16 item 1, each as a test: the genesis a fresh store
pins, a PostgreSQL schema created on start, migrations that log one line instead of
Alembic's, a catch-up close that says so, a submitter that says each thing once, and
`deploy` on the embedded chain refused in one line."""

from __future__ import annotations

import io
import logging
import sys
import uuid
from pathlib import Path

import psycopg
import pytest
from storekit import BACKENDS, PG_URL, opened, require_pg, schema_url, settings
from typer.testing import CliRunner

from settlement.adapters.db.store import open_store
from settlement.cli.main import app
from settlement.config import Settings
from settlement.jobs import CATCH_UP_NOTICE, close_due
from settlement.services.genesis import first_genesis, pin_genesis
from settlement.services.submit import Submitter


def _unpinned(**overrides: object) -> Settings:
    s = settings(**overrides)
    s._genesis_from_store = True  # what load_settings sets without W2E_GENESIS or a record
    return s


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_fresh_store_pins_its_first_start_as_genesis(backend: str, tmp_path: Path) -> None:
    said: list[str] = []
    with opened(backend, tmp_path) as store:
        first = pin_genesis(_unpinned(epoch_seconds=600), store, now=1_800_000_123, say=said.append)
        assert first.genesis == first_genesis(1_800_000_123, 600) == 1_800_000_000
        assert len(said) == 1 and "1800000000" in said[0]
        # A restart (or another worker) a day later: the same genesis, nothing said.
        again = pin_genesis(_unpinned(epoch_seconds=600), store, now=1_800_086_400, say=said.append)
        assert again.genesis == first.genesis and len(said) == 1
        # A configured genesis is kept as it is.
        configured = settings(genesis=1_767_225_600)
        assert pin_genesis(configured, store, now=1_800_000_000).genesis == 1_767_225_600


def test_a_postgresql_schema_named_in_the_url_is_created_on_start() -> None:
    require_pg()
    name = f"w2e_ops_{uuid.uuid4().hex[:10]}"
    try:
        store = open_store(schema_url(name))
        try:
            with psycopg.connect(PG_URL) as conn:
                tables = conn.execute(
                    "SELECT count(*) FROM information_schema.tables WHERE table_schema = %s",
                    (name,),
                ).fetchone()
            assert tables is not None and tables[0] > 10
        finally:
            store.close()
        open_store(schema_url(name)).close()  # a second start finds it there
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


def test_migrating_logs_one_line_of_its_own_and_none_of_alembics(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    open_store(f"sqlite:///{tmp_path}/a.db").close()
    assert not [r for r in caplog.records if r.name.startswith("alembic")]
    migrated = [r.getMessage() for r in caplog.records if "database migrated" in r.getMessage()]
    assert len(migrated) == 1 and "from an empty schema to 0009" in migrated[0]
    caplog.clear()
    open_store(f"sqlite:///{tmp_path}/a.db").close()  # at head: nothing to say
    assert not [r for r in caplog.records if "migrated" in r.getMessage()]


def test_a_catch_up_close_says_so_and_sums_up(tmp_path: Path) -> None:
    behind = CATCH_UP_NOTICE + 3
    s = settings(
        genesis=1_800_000_000,
        epoch_seconds=60,
        grace_seconds=0,
        data_dir=str(tmp_path / "epochs"),
    )
    said: list[str] = []
    with opened("sqlite", tmp_path) as store:
        closed = close_due(store, s, 1_800_000_000 + 60 * behind + 1, say=said.append)
    assert [c.epoch for c in closed] == list(range(1, behind + 1))
    assert said[0].startswith(f"catching up {behind} due epochs (1-{behind};")
    assert said[-1].startswith(f"closed {behind} epochs (1-{behind}, {behind} of them without")


def test_a_short_close_stays_quiet(tmp_path: Path) -> None:
    s = settings(genesis=1_800_000_000, epoch_seconds=60, grace_seconds=0)
    s = s.model_copy(update={"data_dir": str(tmp_path / "epochs")})
    said: list[str] = []
    with opened("sqlite", tmp_path) as store:
        assert len(close_due(store, s, 1_800_000_000 + 121, say=said.append)) == 2
    assert said == []


def test_the_submitter_says_each_thing_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="settlement.services.submit")
    heard: list[str] = []
    quiet = Submitter.__new__(Submitter)
    quiet._say = heard.append
    quiet.say("proposal 1 sent")
    quiet.alert("the distributor cannot cover the root")
    assert heard == ["proposal 1 sent", "ALERT: the distributor cannot cover the root"]
    assert caplog.records == []  # not also in the log: a CLI would print it twice
    logged = Submitter.__new__(Submitter)
    logged._say = None
    logged.say("proposal 2 sent")
    logged.alert("paused")
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("INFO", "proposal 2 sent"),
        ("ERROR", "ALERT: paused"),
    ]


def test_deploy_outside_dev_on_the_embedded_chain_is_one_line_and_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("W2E_RPC_URL", raising=False)
    monkeypatch.delenv("W2E_DEV_MODE", raising=False)
    for role, byte in (("ADMIN", "11"), ("POSTER", "22"), ("GUARDIAN", "33")):
        monkeypatch.setenv(f"W2E_{role}_KEY", "0x" + byte * 32)
    result = CliRunner().invoke(app, ["deploy"])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: W2E_RPC_URL is unset")
    assert "11" * 32 not in result.output
    assert not (tmp_path / "data" / "deployment.json").exists()


def test_the_schedulers_drop_apschedulers_skipped_run_warning(tmp_path: Path) -> None:
    from settlement.jobs import CloseScheduler

    with opened("sqlite", tmp_path) as store:
        CloseScheduler(store, settings())
    logger = logging.getLogger("apscheduler.scheduler")
    skipped = logger.makeRecord(
        logger.name,
        logging.WARNING,
        __file__,
        1,
        'Execution of job "x" skipped: maximum number of running instances reached (1)',
        (),
        None,
    )
    other = logger.makeRecord(logger.name, logging.WARNING, __file__, 1, "job raised", (), None)
    assert not logger.filter(skipped) and logger.filter(other)


def test_a_store_that_closed_epochs_from_its_pinned_genesis_refuses_another(
    tmp_path: Path,
) -> None:
    from settlement.errors import ConfigError

    s = _unpinned(epoch_seconds=60, grace_seconds=0, data_dir=str(tmp_path / "epochs"))
    with opened("sqlite", tmp_path) as store:
        fresh = pin_genesis(s, store, now=1_800_000_030)
        assert fresh.genesis == 1_800_000_000
        pin_genesis(settings(genesis=1_900_000_000), store)  # nothing closed yet: allowed
        assert close_due(store, fresh, 1_800_000_000 + 61)
        with pytest.raises(ConfigError, match="W2E_GENESIS=1800000000"):
            pin_genesis(settings(genesis=1_900_000_000), store)
        assert pin_genesis(settings(genesis=1_800_000_000), store).genesis == 1_800_000_000


def test_epochs_close_on_the_command_line_says_it_catches_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    behind = CATCH_UP_NOTICE + 2
    monkeypatch.setenv("W2E_DATABASE_URL", f"sqlite:///{tmp_path}/cli.db")
    monkeypatch.setenv("W2E_EPOCH_SECONDS", "60")
    monkeypatch.setenv("W2E_GRACE_SECONDS", "0")
    monkeypatch.setenv("W2E_GENESIS", "1800000000")
    monkeypatch.setenv("W2E_DEPLOYMENT_FILE", str(tmp_path / "none.json"))
    now = 1_800_000_000 + 60 * behind + 30
    # As after an earlier command run in this process: its logging set up at INFO on its
    # stderr, a buffer closed since. This command starts from a fresh process's logging.
    from settlement.logs import setup_logging

    earlier, real = io.StringIO(), sys.stderr
    sys.stderr = earlier
    try:
        setup_logging("text", component="earlier", level=logging.INFO)
    finally:
        sys.stderr = real
    earlier.close()
    result = CliRunner().invoke(app, ["epochs", "close", "--now", str(now)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith(f"catching up {behind} due epochs (1-{behind};")
    assert any(line.startswith(f"closed {behind} epochs (1-{behind},") for line in lines)
    assert sum(1 for line in lines if line.startswith('{"epoch"')) == behind

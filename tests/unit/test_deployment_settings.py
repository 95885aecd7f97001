"""load_settings completes the environment with the deployment record (issue 16 item 1):
chain id, distributor, genesis and epoch length come from W2E_DEPLOYMENT_FILE unless set,
and a W2E_* value that differs from the record is refused with both named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from settlement.config import genesis_from_store, load_settings, with_genesis
from settlement.errors import ConfigError

DISTRIBUTOR = "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512"


@pytest.fixture
def record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("W2E_GENESIS", "W2E_EPOCH_SECONDS", "W2E_CHAIN_ID", "W2E_DISTRIBUTOR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no .env of the developer's
    path = tmp_path / "deployment.json"
    path.write_text(
        json.dumps(
            {
                "chainId": 8453,
                "block": 12,
                "token": "0x5FbDB2315678afecb367f032d93F642f64180aa3",
                "distributor": DISTRIBUTOR,
                "challengePeriod": 60,
                "roles": {"admin": "0x1", "poster": "0x2", "guardian": "0x3", "minters": []},
                "dev": False,
                "genesis": 1_796_414_400,
                "epochSeconds": 600,
            }
        )
    )
    monkeypatch.setenv("W2E_DEPLOYMENT_FILE", str(path))
    return path


def test_every_command_reads_the_record(record: Path) -> None:
    s = load_settings()
    assert (s.chain_id, s.distributor, s.genesis, s.epoch_seconds) == (
        8453,
        DISTRIBUTOR,
        1_796_414_400,
        600,
    )
    assert not genesis_from_store(s)


def test_a_variable_equal_to_the_record_is_fine(record: Path, monkeypatch) -> None:
    monkeypatch.setenv("W2E_DISTRIBUTOR", DISTRIBUTOR.lower())  # case does not matter
    monkeypatch.setenv("W2E_GENESIS", "1796414400")
    assert load_settings().genesis == 1_796_414_400


@pytest.mark.parametrize(
    ("variable", "value", "recorded"),
    [
        ("W2E_GENESIS", "1767225600", "1796414400"),
        ("W2E_CHAIN_ID", "31337", "8453"),
        ("W2E_EPOCH_SECONDS", "3600", "600"),
        ("W2E_DISTRIBUTOR", "0x" + "11" * 20, DISTRIBUTOR),
    ],
)
def test_a_variable_that_differs_from_the_record_is_refused_naming_both(
    record: Path, monkeypatch, variable: str, value: str, recorded: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert f"{variable}={value}" in message and recorded in message and str(record) in message


def test_deploy_reads_the_environment_alone(record: Path, monkeypatch) -> None:
    monkeypatch.setenv("W2E_CHAIN_ID", "31337")  # a new chain: the old record must not refuse
    s = load_settings(deployment=False)
    assert s.chain_id == 31337 and s.epoch_seconds == 3600


def test_an_older_record_without_the_clock_gives_chain_id_and_distributor(
    record: Path,
) -> None:
    doc = json.loads(record.read_text())
    del doc["genesis"], doc["epochSeconds"]
    record.write_text(json.dumps(doc))
    s = load_settings()
    assert s.chain_id == 8453 and s.epoch_seconds == 3600
    assert genesis_from_store(s)  # nothing gave a genesis: the store pins one


def test_without_record_or_variable_the_store_pins_the_genesis(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("W2E_GENESIS", raising=False)
    monkeypatch.setenv("W2E_DEPLOYMENT_FILE", str(tmp_path / "none.json"))
    s = load_settings()
    assert genesis_from_store(s)
    pinned = with_genesis(s, 1_800_000_000)
    assert pinned.genesis == 1_800_000_000 and not genesis_from_store(pinned)
    monkeypatch.setenv("W2E_GENESIS", "1767225600")
    assert not genesis_from_store(load_settings())


def test_a_damaged_record_is_a_config_error(record: Path) -> None:
    record.write_text("{not json")
    with pytest.raises(ConfigError, match="cannot read the deployment record"):
        load_settings()

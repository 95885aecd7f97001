"""Which components `settlement serve` runs: by default those whose chain and keys are
configured (each one skipped with one log line), asked for by flag or refused with exit 2."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from settlement.cli.serve import choose, why_not
from settlement.config import Settings
from settlement.errors import ConfigError

NONE = {"api": None, "scheduler": None, "submitter": None, "watchtower": None}


def _settings(tmp_path: Path, **kw: object) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        poster_key_env="TEST_SERVE_NO_SUCH_POSTER",
        guardian_key_env="TEST_SERVE_NO_SUCH_GUARDIAN",
        deployment_file=str(tmp_path / "deployment.json"),
        **kw,
    )


def test_without_a_chain_the_chain_components_are_skipped_once_each(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="settlement.serve"):
        assert choose(_settings(tmp_path), NONE) == ["api", "scheduler"]
    skipped = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(skipped) == 2
    assert skipped[0].startswith("submitter skipped: W2E_RPC_URL is unset")
    assert skipped[1].startswith("watchtower skipped: W2E_RPC_URL is unset")


def test_asked_for_and_impossible_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--submitter: cannot run: W2E_RPC_URL is unset"):
        choose(_settings(tmp_path), {**NONE, "submitter": True})


def test_keys_decide_with_a_chain_and_a_deployment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "deployment.json").write_text("{}")
    s = _settings(tmp_path, rpc_url="http://127.0.0.1:8545")
    assert why_not(s, "submitter") is not None and "no poster key" in str(why_not(s, "submitter"))
    assert "guardian" in str(why_not(s, "watchtower"))
    assert why_not(s, "watchtower", explicit=True) is None  # alert-only when asked for
    monkeypatch.setenv("TEST_SERVE_NO_SUCH_POSTER", "0x" + "11" * 32)
    assert why_not(s, "submitter") is None
    assert choose(s, {**NONE, "api": False}) == ["scheduler", "submitter"]
    k = _settings(tmp_path, rpc_url="http://127.0.0.1:8545", poster_keystore="poster.json")
    assert "W2E_POSTER_KEYSTORE_PASSWORD" in str(why_not(k, "submitter"))  # cannot prompt


def test_no_flags_off_means_nothing_runs(tmp_path: Path) -> None:
    off = dict.fromkeys(NONE, False)
    assert choose(_settings(tmp_path), off) == []

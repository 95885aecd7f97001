"""Production mode (issue 15 item 6): unsafe settings found, refused at start-up by serve,
submit and the scheduler, and listed by `settlement config check` without secrets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from settlement.adapters.keys import Key
from settlement.cli.main import app
from settlement.config import Settings
from settlement.errors import UnsafeSettings
from settlement.services.safety import findings, refuse_unsafe, refused

KEY_A = "0x" + "11" * 32
KEY_B = "0x" + "22" * 32
GOOD_TOKEN = "g" * 32
SHORT_TOKEN = "s" * 31
# Safe apart from what a test changes.
SAFE = {
    "challenge_period": 3600,
    "admin_token": GOOD_TOKEN,
    "max_bytes_per_viewer": 10**12,
    "max_watch_seconds_per_epoch": 3600,
    "registry_mode": "approval",
    "viewer_allowlist": True,
}


@pytest.fixture(autouse=True)
def _no_w2e_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The findings depend on every setting: none may come from the caller's environment."""
    for name in list(os.environ):
        if name.startswith("W2E_"):
            monkeypatch.delenv(name)


def _settings(**overrides: object) -> Settings:
    return Settings(_env_file=None, **{**SAFE, **overrides})  # type: ignore[arg-type]


def _no_keys(settings: Settings, role: str) -> str | None:
    return None


def _names(s: Settings) -> list[str]:
    return [f.settings for f in findings(s, _no_keys)]


def test_safe_settings_have_no_finding() -> None:
    assert findings(_settings(env="production"), _no_keys) == []


@pytest.mark.parametrize(
    ("overrides", "setting"),
    [
        ({"challenge_period": 0}, "W2E_CHALLENGE_PERIOD"),
        ({"admin_token": SHORT_TOKEN}, "W2E_ADMIN_TOKEN"),
        ({"max_bytes_per_viewer": 2**64 - 1}, "W2E_MAX_BYTES_PER_VIEWER"),
        ({"max_watch_seconds_per_epoch": 2**64 - 1}, "W2E_MAX_WATCH_SECONDS_PER_EPOCH"),
        (
            {"registry_mode": "open", "viewer_allowlist": False},
            "W2E_REGISTRY_MODE, W2E_VIEWER_ALLOWLIST",
        ),
        # Issue 17: Sybil viewers are unbounded without the allowlist, whatever the registry.
        ({"viewer_allowlist": False}, "W2E_VIEWER_ALLOWLIST"),
        ({"dev_mode": True}, "W2E_DEV_MODE, W2E_ENV"),
    ],
)
def test_each_unsafe_setting_is_refused_in_production(
    overrides: dict[str, object], setting: str
) -> None:
    s = _settings(env="production", **overrides)
    assert _names(s) == [setting]
    with pytest.raises(UnsafeSettings) as caught:
        refuse_unsafe(s, "settlement serve")
    assert setting in str(caught.value) and "production mode" in str(caught.value)


def test_open_mode_with_a_viewer_allowlist_is_safe() -> None:
    assert _names(_settings(env="production", registry_mode="open", viewer_allowlist=True)) == []


def test_the_default_settings_are_not_production_safe() -> None:
    # An unbounded byte cap and no admin token: production asks for a chosen cap.
    s = Settings(_env_file=None, env="production")
    assert _names(s) == ["W2E_MAX_BYTES_PER_VIEWER", "W2E_VIEWER_ALLOWLIST"]


def test_a_short_admin_token_is_refused_whenever_dev_mode_is_off() -> None:
    short = _settings(admin_token=SHORT_TOKEN, challenge_period=0)
    assert [f.settings for f in refused(short, findings(short, _no_keys))] == ["W2E_ADMIN_TOKEN"]
    dev = _settings(admin_token=SHORT_TOKEN, challenge_period=0, dev_mode=True)
    assert refused(dev, findings(dev, _no_keys)) == []
    assert refused(_settings(), findings(_settings(), _no_keys)) == []


def test_every_named_admin_token_is_held_to_the_minimum_length() -> None:
    s = _settings(admin_tokens={"ops": GOOD_TOKEN, "ci": SHORT_TOKEN})
    assert [f.settings for f in refused(s, findings(s, _no_keys))] == ["W2E_ADMIN_TOKENS['ci']"]
    assert all(SHORT_TOKEN not in f.why for f in findings(s, _no_keys))


def test_poster_and_guardian_are_compared_by_address(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("T_POSTER", KEY_A)
    monkeypatch.setenv("T_GUARDIAN", KEY_A)
    s = _settings(env="production", poster_key_env="T_POSTER", guardian_key_env="T_GUARDIAN")
    (found,) = findings(s)
    address = Key.from_hex(KEY_A).address.lower()
    assert address in found.why and KEY_A[2:] not in found.why
    monkeypatch.setenv("T_GUARDIAN", KEY_B)
    assert findings(s) == []


def test_a_keystore_is_compared_by_its_address_without_a_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from settlement.adapters.keys import save_keystore

    path = tmp_path / "guardian.json"
    save_keystore(Key.from_hex(KEY_A), path, "pw", iterations=2, kdf="pbkdf2")
    monkeypatch.setenv("T_POSTER", KEY_A)
    monkeypatch.delenv("W2E_GUARDIAN_KEYSTORE_PASSWORD", raising=False)
    s = _settings(poster_key_env="T_POSTER", guardian_keystore=str(path))
    assert [f.settings.split(",")[0] for f in findings(s)] == [
        "W2E_POSTER_KEY_ENV / W2E_POSTER_KEYSTORE"
    ]


def _env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, **values: str) -> None:
    monkeypatch.chdir(tmp_path)  # no .env file of the developer's
    monkeypatch.setenv("W2E_DATABASE_URL", f"sqlite:///{tmp_path}/s.db")
    for name, value in values.items():
        monkeypatch.setenv(name, value)


def test_config_check_lists_findings_without_secrets(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _env(
        monkeypatch,
        tmp_path,
        W2E_ADMIN_TOKEN=SHORT_TOKEN,
        W2E_CHALLENGE_PERIOD="0",
        W2E_REGISTRY_MODE="open",
        W2E_POSTER_KEY=KEY_A,
        W2E_GUARDIAN_KEY=KEY_A,
    )
    result = CliRunner().invoke(app, ["config", "check"])
    assert result.exit_code == 1, result.output
    for setting in (
        "W2E_CHALLENGE_PERIOD",
        "W2E_ADMIN_TOKEN",
        "W2E_MAX_BYTES_PER_VIEWER",
        "W2E_REGISTRY_MODE",
        "W2E_GUARDIAN_KEY_ENV",
    ):
        assert setting in result.output
    assert SHORT_TOKEN not in result.output and KEY_A[2:] not in result.output
    assert "11" * 8 not in result.output  # no run of the key's hex, even folded
    # dev env, dev mode off: only the short token stops a start-up now.
    assert result.output.count("refused") == 1


def test_config_check_exits_0_on_safe_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _env(
        monkeypatch,
        tmp_path,
        W2E_ENV="production",
        W2E_ADMIN_TOKEN=GOOD_TOKEN,
        W2E_MAX_BYTES_PER_VIEWER=str(10**12),
        W2E_VIEWER_ALLOWLIST="true",
    )
    result = CliRunner().invoke(app, ["config", "check"])
    assert result.exit_code == 0, result.output
    assert "safe for production" in result.output


@pytest.mark.parametrize("command", [["serve"], ["submit"], ["epochs", "schedule"]])
def test_commands_refuse_to_start_in_production_on_unsafe_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, command: list[str]
) -> None:
    _env(
        monkeypatch,
        tmp_path,
        W2E_ENV="production",
        W2E_ADMIN_TOKEN=GOOD_TOKEN,
        W2E_MAX_BYTES_PER_VIEWER=str(10**12),
        W2E_CHALLENGE_PERIOD="0",
    )
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 2, result.output
    assert "refuses to start production mode" in result.output
    assert "W2E_CHALLENGE_PERIOD" in result.output


def test_the_api_factory_refuses_too(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # uvicorn settlement.api.app:app_from_env --factory, without `settlement serve`.
    from settlement.api.app import app_from_env

    _env(monkeypatch, tmp_path, W2E_ADMIN_TOKEN=SHORT_TOKEN)
    with pytest.raises(UnsafeSettings, match="W2E_ADMIN_TOKEN"):
        app_from_env()

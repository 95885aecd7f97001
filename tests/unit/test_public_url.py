"""W2E_PUBLIC_URL: a deployment that says where it is reached publishes dataURIs there
(`BASE/v1/data/epoch-NNNNNNNN/manifest.json`, served by `settlement serve`), not a local
path (issue 16 item 1, auditor)."""

from __future__ import annotations

from pathlib import Path

import pytest

from settlement.config import Settings
from settlement.errors import ConfigError
from settlement.services.published import epoch_data_uri


def test_public_url_gives_the_data_base_uri(tmp_path: Path) -> None:
    s = Settings(public_url="https://w2e.example.org/", data_dir=str(tmp_path / "epochs"))
    assert s.data_base_uri == "https://w2e.example.org/v1/data"
    assert epoch_data_uri(s, 7) == "https://w2e.example.org/v1/data/epoch-00000007/manifest.json"


def test_an_explicit_data_base_uri_wins(tmp_path: Path) -> None:
    s = Settings(
        public_url="https://w2e.example.org",
        data_base_uri="https://cdn.example.org/epochs",
        data_dir=str(tmp_path),
    )
    assert epoch_data_uri(s, 1) == "https://cdn.example.org/epochs/epoch-00000001/manifest.json"


def test_without_either_the_data_uri_is_the_local_path(tmp_path: Path) -> None:
    s = Settings(data_dir=str(tmp_path))
    assert s.public_url is None and s.data_base_uri is None
    assert epoch_data_uri(s, 1) == str((tmp_path / "epoch-00000001" / "manifest.json").resolve())


def test_a_public_url_that_is_no_url_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from settlement.config import load_settings

    monkeypatch.setenv("W2E_PUBLIC_URL", "w2e.example.org")
    with pytest.raises(ConfigError, match="public_url"):
        load_settings()

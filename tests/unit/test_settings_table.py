"""The README's settings table is `settlement config settings --markdown`: every Settings
field, its variable, default and description. A setting added, renamed or re-described
without regenerating the table fails here."""

from __future__ import annotations

import re
from pathlib import Path

from settlement.config import Settings
from settlement.settings_table import env_name, settings_markdown

README = Path(__file__).resolve().parents[2] / "README.md"
TABLE = re.compile(r"<!-- settings table:[^\n]*-->\n(.*?)<!-- end of settings table -->", re.S)


def readme_table() -> str:
    match = TABLE.search(README.read_text())
    assert match is not None, "README.md has no settings table between its markers"
    return match.group(1)


def test_the_readme_table_is_the_generated_one() -> None:
    assert readme_table() == settings_markdown(), (
        "README.md's settings table differs from Settings: paste "
        "`settlement config settings --markdown` between its markers"
    )


def test_the_table_has_one_row_per_setting_with_a_description() -> None:
    rows = settings_markdown().splitlines()[2:]
    names = [row.split(" | ")[0].strip("| `") for row in rows]
    assert names == [env_name(f) for f in Settings.model_fields]
    assert "W2E_DATABASE_URL" in names and "CI" in names and "W2E_POSTER_KEYSTORE" in names
    for field, info in Settings.model_fields.items():
        assert info.description, f"{env_name(field)} has no description for the table"


def test_a_changed_default_shows_in_the_table() -> None:
    row = next(r for r in settings_markdown().splitlines() if r.startswith("| `W2E_MAX_BATCH`"))
    assert "| `10000` |" in row
    assert "| unset |" in next(
        r for r in settings_markdown().splitlines() if r.startswith("| `W2E_ADMIN_TOKEN`")
    )


def test_the_command_prints_the_table() -> None:
    from typer.testing import CliRunner

    from settlement.cli.main import app

    markdown = CliRunner().invoke(app, ["config", "settings", "--markdown"])
    assert markdown.exit_code == 0 and markdown.output == settings_markdown()
    shown = CliRunner().invoke(app, ["config", "settings"])
    assert shown.exit_code == 0
    assert "W2E_DEPLOYMENT_FILE" in shown.output and "W2E_DATA_BASE_URI" in shown.output

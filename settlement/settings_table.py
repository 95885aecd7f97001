"""The README's table of every setting, generated from `Settings` (`settlement config settings
--markdown`; tests/unit/test_settings_table.py fails when the README's copy differs)."""

from __future__ import annotations

from settlement.config import DEPLOYMENT_FIELDS, Settings


def env_name(field: str) -> str:
    """The environment variable of a Settings field (W2E_NAME, or its alias)."""
    alias = Settings.model_fields[field].validation_alias
    return alias if isinstance(alias, str) else f"W2E_{field.upper()}"


def _shown_default(field: str) -> str:
    if field == "genesis":  # the class default is never used by a command (load_settings)
        return "the deployment's epoch, else the store's first"
    info = Settings.model_fields[field]
    value = info.default_factory() if info.default_factory is not None else info.default  # type: ignore[call-arg]
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, float) and value.is_integer():
        return f"`{int(value)}`"
    if isinstance(value, dict | list):
        import json

        return f"`{json.dumps(value)}`"
    return f"`{value}`"


def settings_markdown() -> str:
    """Every setting as a Markdown table (variable, default, what it does): the README's
    table is this text (`settlement config settings --markdown`; a unit test compares)."""
    deployed = set(DEPLOYMENT_FIELDS.values())
    lines = ["| variable | default | what it does |", "|---|---|---|"]
    for field, info in Settings.model_fields.items():
        text = (info.description or "").replace("|", "\\|").replace("\n", " ")
        if field in deployed:
            text += " (the deployment record's when W2E_DEPLOYMENT_FILE exists)"
        lines.append(f"| `{env_name(field)}` | {_shown_default(field)} | {text} |")
    return "\n".join(lines) + "\n"

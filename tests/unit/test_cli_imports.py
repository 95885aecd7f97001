"""Startup of the `settlement` command (issue 16 item 1, "commands start in < 1 s"): guarded
by what it imports, not by timing. Importing the entry point loads no heavy library, and
neither does `settlement --help` nor any command's --help."""

from __future__ import annotations

import json
import subprocess
import sys

# Seconds of imports between them: the chain stack, the store, the server, numpy.
HEAVY = (
    "eth_tester",
    "eth",  # py-evm
    "web3",
    "eth_account",
    "sqlalchemy",
    "sqlmodel",
    "alembic",
    "psycopg",
    "uvicorn",
    "fastapi",
    "starlette",
    "numpy",
    "apscheduler",
    "pydantic_settings",  # settlement.config: the settings load inside the commands
)
# Light enough for --help, but not for the bare import of the entry point.
NOT_AT_IMPORT = (*HEAVY, "rich", "pydantic", "httpx", "requests", "prometheus_client", "coincurve")

_PROBE = """
import json, sys
heavy = {heavy!r}
def loaded():
    return sorted(m for m in heavy if m in sys.modules)
import settlement.cli.main as main
out = {{"import": sorted(m for m in {at_import!r} if m in sys.modules)}}
for argv in [["--help"], ["version"]] + [[name, "--help"] for name in main.COMMANDS]:
    try:
        main.run(argv)
    except SystemExit:
        pass
    out[" ".join(argv)] = loaded()  # cumulative: the first step that lists one is the culprit
print(json.dumps(out))
"""


def test_the_entry_point_and_every_help_load_no_heavy_module() -> None:
    code = _PROBE.format(heavy=HEAVY, at_import=NOT_AT_IMPORT)
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result.pop("import") == [], "importing settlement.cli.main loads heavy modules"
    from settlement.cli.main import COMMANDS

    assert len(result) == 2 + len(COMMANDS), result  # every help ran
    assert {argv: mods for argv, mods in result.items() if mods} == {}


def test_the_guard_sees_a_heavy_import() -> None:
    """The probe itself: a module imported on purpose is reported."""
    code = "import sys, sqlalchemy\nprint('sqlalchemy' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "True"


def test_every_registered_command_resolves() -> None:
    """Each "module:attribute" of the lazy table names a Typer app or a function."""
    import importlib

    import typer

    from settlement.cli.main import COMMANDS, HIDDEN

    for name, target in {**COMMANDS, **HIDDEN}.items():
        module, _, attribute = target.partition(":")
        obj = getattr(importlib.import_module(module), attribute)
        assert isinstance(obj, typer.Typer) or callable(obj), name

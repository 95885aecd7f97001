"""The base install (pyproject's `dependencies`) carries everything the SDK and the pure
core import, and nothing of the server: checked on the sources, so the fast loop catches
what tests/integration/test_sdk_install.py (slow, a fresh venv) would."""

from __future__ import annotations

import ast
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from test_architecture import ROOT, imports, module_name

PYPROJECT = ROOT.parent / "pyproject.toml"
SDK_ROOTS = ("settlement.client", "settlement.domain", "settlement.errors")
# Import name -> distribution, for the base dependencies whose names differ.
DISTRIBUTION = {
    "eth_account": "eth-account",
    "eth_utils": "eth-utils",
    "eth_hash": "eth-hash",
    "Crypto": "pycryptodome",
    "tiny_keccak": "tiny-keccak",
}
# What the SDK reaches only through a function an SDK user does not call (none today: the
# domain reads settings through a Protocol, not config.py).
LAZY: set[tuple[str, str]] = set()
SERVER_ONLY = {"fastapi", "uvicorn", "psycopg", "sqlmodel", "sqlalchemy", "alembic"}
SERVER_ONLY |= {"apscheduler", "web3", "eth_tester", "eth", "typer", "pydantic_settings"}


def _sources() -> dict[str, tuple[Path, bool]]:
    return {
        module_name(path, ROOT): (path, path.name == "__init__.py") for path in ROOT.rglob("*.py")
    }


def sdk_imports() -> tuple[set[str], set[str]]:
    """(the project modules the SDK loads, the third-party top-level names they import)."""
    sources = _sources()
    todo = [m for m in sources if any(m == r or m.startswith(r + ".") for r in SDK_ROOTS)]
    seen: set[str] = set()
    outside: set[str] = set()
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        path, is_package = sources[module]
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for _, targets in imports(tree, module, is_package):
            top = targets[0].split(".")[0]
            if top != "settlement":
                if top and top not in sys.stdlib_module_names and top != "__future__":
                    outside.add(top)
                continue
            for target in targets:
                if target in sources and (module, target) not in LAZY:
                    todo.append(target)
    return seen, outside


def base_distributions() -> set[str]:
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    return {Requirement(r).name.lower() for r in project["dependencies"]}


def test_every_sdk_import_is_a_base_dependency() -> None:
    _, outside = sdk_imports()
    base = base_distributions()
    missing = {m for m in outside if DISTRIBUTION.get(m, m).lower() not in base}
    assert not missing, f"the SDK imports {sorted(missing)}: add them to `dependencies`"


def test_the_sdk_loads_no_server_module() -> None:
    loaded, outside = sdk_imports()
    assert not outside & SERVER_ONLY
    server_rooms = ("api", "cli", "jobs", "services", "adapters", "config", "sim", "parallel")
    assert not {m for m in loaded if m.split(".")[1] in server_rooms}


def test_base_dependencies_hold_no_server_package() -> None:
    base = base_distributions()
    server = {"fastapi", "uvicorn", "psycopg", "sqlmodel", "alembic", "apscheduler", "web3"}
    assert not base & (server | {"py-evm", "eth-tester", "typer", "pydantic-settings"})

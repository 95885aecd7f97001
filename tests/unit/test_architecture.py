"""The import rules of shared/ARCHITECTURE.md, checked on every module's imports (those
inside functions too): arrows only point down the layout list."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "settlement"

# Layer (the first name under settlement.) -> the project modules it must not import.
# Domain is the other way round: it may import only these.
DOMAIN_MAY_IMPORT = ("settlement.errors", "settlement.domain")
FORBIDDEN = {
    "services": ("settlement.api", "settlement.cli", "settlement.jobs"),
    "adapters": ("settlement.services", "settlement.api", "settlement.cli", "settlement.jobs"),
    "client": ("settlement.services", "settlement.adapters", "settlement.api", "settlement.cli"),
}
# The edges' frameworks: only api/, cli/, jobs.py and sim/ may load them.
EDGE_FRAMEWORKS = ("typer", "click", "fastapi", "starlette", "uvicorn", "apscheduler")
CORE_LAYERS = ("domain", "services", "adapters", "client")
ENV_MODULE = "settlement.config"  # the one module that reads the environment
ENV_NAMES = {"environ", "getenv", "environb", "putenv", "unsetenv"}

# Violations on main when the redesign step started, as (module, what it reaches for).
# Other areas are removing them right now; the lead empties this list after the merge.
# Never add to it: fix the import (or move the code to the room it belongs in) instead.
KNOWN = {
    # The SDK's ReceiptSigner.from_env reads the variable its caller names: the SDK installs
    # without config.py's pydantic-settings, so it cannot go through Settings.
    ("settlement.client.signer", "os.environ"),
}


@dataclass(frozen=True, order=True)
class Violation:
    module: str
    line: int
    target: str  # the module imported, or os.environ
    rule: str

    def __str__(self) -> str:
        return f"{self.module}:{self.line} -> {self.target} ({self.rule})"


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(tree: ast.AST, module: str, is_package: bool) -> list[tuple[int, list[str]]]:
    """Each import statement in `tree` as (line, the absolute modules it may load).

    `from a import b` may load a and a.b (b can be a submodule): both are candidates, and a
    statement counts once, at its first forbidden candidate.
    """
    found: list[tuple[int, list[str]]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, [alias.name]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            found.append((node.lineno, [prefix] + [f"{prefix}.{a.name}" for a in node.names]))
    return found


def env_reads(tree: ast.AST) -> list[int]:
    """Lines that reach for the process environment through os."""
    lines = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and node.attr in ENV_NAMES
            and isinstance(node.value, ast.Name)
            and node.value.id == "os"
        ):
            lines.append(node.lineno)
        elif isinstance(node, ast.ImportFrom) and node.module == "os":
            lines += [node.lineno for alias in node.names if alias.name in ENV_NAMES]
    return lines


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def check(root: Path) -> list[Violation]:
    """Every import that points up the layout, and every environment read outside config."""
    out = []
    for path in sorted(root.rglob("*.py")):
        module = module_name(path, root)
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        layer = module.split(".")[1] if module.count(".") else ""
        for line, targets in imports(tree, module, path.name == "__init__.py"):
            for target in targets:
                if layer in CORE_LAYERS and _within(target, EDGE_FRAMEWORKS):
                    out.append(Violation(module, line, target, f"{layer} is no edge"))
                    break
                if not _within(target, ("settlement",)) or target == "settlement":
                    continue
                if layer == "domain" and not _within(target, DOMAIN_MAY_IMPORT):
                    out.append(Violation(module, line, target, "domain imports only errors"))
                    break
                if _within(target, FORBIDDEN.get(layer, ())):
                    out.append(Violation(module, line, target, f"{layer} must not import it"))
                    break
        if module != ENV_MODULE:
            out += [
                Violation(module, line, "os.environ", "environment only in config.py")
                for line in env_reads(tree)
            ]
    return sorted(set(out))


def test_no_arrow_points_up() -> None:
    found = check(ROOT)
    new = [v for v in found if (v.module, v.target) not in KNOWN]
    assert not new, "imports against ARCHITECTURE.md:\n" + "\n".join(map(str, new))
    # An exception that no longer occurs leaves the list, so it cannot hide a later one.
    assert {(v.module, v.target) for v in found} >= KNOWN


# --- the checker itself, on a synthetic tree -------------------------------------------------


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "settlement"
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        for parent in path.relative_to(root).parents:
            (root / parent / "__init__.py").touch()
        path.write_text(text)
    return root


CLEAN = {
    "errors.py": "",
    "config.py": "import os\nHOME = os.environ.get('HOME')\n",
    "domain/merkle.py": "from settlement.errors import InputError\nfrom . import receipts\n",
    "domain/receipts.py": "import numpy\nfrom settlement.domain import merkle\n",
    "services/close.py": "from settlement.adapters.db import store\nfrom settlement.domain import merkle\n",
    "adapters/db/store.py": "from settlement.domain.receipts import x\nfrom .. import files\n",
    "adapters/files.py": "import os\nos.fsync(1)\n",
    "client/http.py": "from settlement.domain.receipts import x\nfrom settlement.errors import E\n",
    "api/routes.py": "from settlement.services import close\nfrom settlement.adapters import files\n",
    "cli/main.py": "import typer\nfrom settlement.api import routes\nfrom settlement.jobs import x\n",
    "api/app.py": "from fastapi import FastAPI\nimport uvicorn\n",
}


def test_checker_passes_a_clean_tree(tmp_path: Path) -> None:
    assert check(_tree(tmp_path, CLEAN)) == []


@pytest.mark.parametrize(
    ("name", "text", "target"),
    [
        (
            "domain/merkle.py",
            "from settlement.adapters.db import store\n",
            "settlement.adapters.db",
        ),
        ("domain/merkle.py", "def f():\n    import settlement.config\n", "settlement.config"),
        ("domain/merkle.py", "from .. import parallel\n", "settlement.parallel"),
        ("domain/merkle.py", "from settlement import services\n", "settlement.services"),
        ("services/close.py", "def f():\n    from settlement.api import app\n", "settlement.api"),
        ("services/close.py", "from ..jobs import CloseScheduler\n", "settlement.jobs"),
        ("services/close.py", "import settlement.cli.main\n", "settlement.cli.main"),
        ("adapters/db/store.py", "from ...services import ingest\n", "settlement.services"),
        ("adapters/db/store.py", "from settlement.api.deps import x\n", "settlement.api.deps"),
        ("adapters/files.py", "from settlement import jobs\n", "settlement.jobs"),
        ("client/http.py", "from settlement.adapters.db import store\n", "settlement.adapters.db"),
        (
            "client/http.py",
            "class C:\n    def m(self):\n        import settlement.services\n",
            "settlement.services",
        ),
        ("cli/main.py", "import os\nx = os.environ['W2E']\n", "os.environ"),
        ("adapters/files.py", "from os import getenv\n", "os.environ"),
        ("domain/receipts.py", "import os\ndef f():\n    return os.getenv('X')\n", "os.environ"),
        ("services/close.py", "import typer\n", "typer"),
        ("adapters/files.py", "def f():\n    from fastapi import Depends\n", "fastapi"),
        (
            "client/http.py",
            "from apscheduler.schedulers import background\n",
            "apscheduler.schedulers",
        ),
    ],
)
def test_checker_finds_a_new_violation(tmp_path: Path, name: str, text: str, target: str) -> None:
    root = _tree(tmp_path, {**CLEAN, name: CLEAN.get(name, "") + text})
    found = check(root)
    assert found, f"{name}: {text!r} passed"
    assert {v.target for v in found} == {target}
    assert all(v.module == module_name(root / name, root) for v in found)


# --- the auditor reaches no store (issue 14) --------------------------------------------------

AUDITOR = ("settlement.services.audit", "settlement.cli.audit")
STORE = ("settlement.adapters.db",)


def reachable(root: Path, start: tuple[str, ...]) -> dict[str, str]:
    """Every project module `start` can load, directly or through others (imports inside
    functions too, and the packages a submodule import runs): module -> the one that
    imported it first."""
    paths = {module_name(p, root): p for p in root.rglob("*.py")}
    seen: dict[str, str] = {m: "" for m in start}
    todo = list(start)
    while todo:
        module = todo.pop()
        path = paths[module]
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for _, targets in imports(tree, module, path.name == "__init__.py"):
            for target in targets:
                parts = target.split(".")
                # a.b.c runs a, a.b and a.b.c
                for i in range(1, len(parts) + 1):
                    name = ".".join(parts[:i])
                    if name in paths and name not in seen:
                        seen[name] = module
                        todo.append(name)
    return seen


def store_paths(root: Path, start: tuple[str, ...]) -> list[str]:
    seen = reachable(root, start)
    out = []
    for module in sorted(seen):
        if _within(module, STORE):
            chain = [module]
            while seen[chain[-1]]:
                chain.append(seen[chain[-1]])
            out.append(" <- ".join(chain))
    return out


def test_the_auditor_reaches_no_store_adapter() -> None:
    seen = reachable(ROOT, AUDITOR)
    assert "settlement.domain.credit" in seen and "settlement.adapters.chain.events" in seen
    assert not store_paths(ROOT, AUDITOR), "\n".join(store_paths(ROOT, AUDITOR))


def test_store_check_finds_an_indirect_import(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "services/audit.py": "def f():\n    from settlement.services import helper\n",
            "services/helper.py": "from settlement.adapters.db.store import Store\n",
            "adapters/db/store.py": "",
            "cli/audit.py": "",
        },
    )
    assert (
        "settlement.adapters.db.store <- settlement.services.helper <- settlement.services.audit"
        in store_paths(root, AUDITOR)
    )

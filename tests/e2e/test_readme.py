"""The README's journeys run exactly as written.

A fenced block whose info string carries `journey=NAME` (```` ```sh journey=operator ````,
```` ```python journey=integrator ````) is part of journey NAME. All blocks of a journey run in
README order as one bash script under `set -euo pipefail`, in a fresh directory, with the
repository's tools first on PATH and `REPO` naming the repository; a python block runs as
`python - <<'EOF' ... EOF` inside that script. The journey's whole process group is killed at
the end, so a block may start `anvil ... &` or `settlement serve ... &`. Nothing is added
between the blocks: what the README says is what runs. Blocks without `journey=` are shown,
not run.
"""

from __future__ import annotations

import ast
import contextlib
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
FENCE = re.compile(r"^```([A-Za-z0-9_-]*)([^\n]*)\n(.*?)^```[ \t]*$", re.S | re.M)
JOURNEY = re.compile(r"(?:^|\s)journey=([A-Za-z0-9_-]+)(?:\s|$)")
TIMEOUT = 300  # seconds for one journey; each is meant to take under a minute
# Every user of issue 16 has a journey; a README edit that drops one fails here.
USERS = {"operator", "node-operator", "integrator", "viewer", "creator", "auditor", "demo-audit"}


def journeys(text: str) -> dict[str, list[tuple[str, str]]]:
    """Journey name -> its blocks (language, code) in README order."""
    found: dict[str, list[tuple[str, str]]] = {}
    for match in FENCE.finditer(text):
        language, info, code = match.group(1), match.group(2), match.group(3)
        name = JOURNEY.search(info)
        if name is None:
            continue
        if language not in ("sh", "bash", "python"):
            raise ValueError(f"journey block in {language!r}: only sh, bash and python run")
        found.setdefault(name.group(1), []).append((language, code))
    return found


def script(blocks: list[tuple[str, str]]) -> str:
    parts = ["set -euo pipefail"]
    for language, code in blocks:
        if language == "python":
            assert "\nPYEOF\n" not in f"\n{code}", "a python block may not contain PYEOF"
            parts.append(f"python - <<'PYEOF'\n{code}PYEOF")
        else:
            parts.append(code.rstrip("\n"))
    return "\n".join(parts) + "\n"


JOURNEYS = journeys(README.read_text())


def test_the_readme_has_journeys_and_each_python_block_parses() -> None:
    assert set(JOURNEYS) == USERS, f"README journeys {sorted(JOURNEYS)}, expected {sorted(USERS)}"
    for name, blocks in JOURNEYS.items():
        for language, code in blocks:
            if language == "python":
                ast.parse(code, filename=f"README journey {name}")


def test_the_extractor_keeps_order_and_ignores_unmarked_blocks() -> None:
    text = (
        "```sh journey=a\necho 1\n```\n```sh\necho no\n```\n"
        "```python journey=a\nprint(2)\n```\n```sh journey=b\necho 3\n```\n"
    )
    assert journeys(text) == {"a": [("sh", "echo 1\n"), ("python", "print(2)\n")],
                              "b": [("sh", "echo 3\n")]}  # fmt: skip
    assert script(journeys(text)["a"]).splitlines() == [
        "set -euo pipefail", "echo 1", "python - <<'PYEOF'", "print(2)", "PYEOF",
    ]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(JOURNEYS))
def test_the_readme_journey_runs_as_written(name: str, tmp_path: Path) -> None:
    env = dict(os.environ)
    tools = [ROOT / ".venv" / "bin", ROOT / "node_modules" / ".bin", ROOT / ".tools" / "bin"]
    env["PATH"] = os.pathsep.join([*(str(t) for t in tools), env.get("PATH", "")])
    env["REPO"] = str(ROOT)
    env["COLUMNS"] = "200"
    for leak in [k for k in env if k.startswith("W2E_")]:
        del env[leak]  # the journey sets what it needs, as a reader would
    log = tmp_path / "journey.log"
    with log.open("w") as out:
        # Output to a file, not a pipe: a background process the journey started (anvil,
        # the service) would hold a pipe open after bash itself has finished.
        proc = subprocess.Popen(
            ["bash", "-c", script(JOURNEYS[name])],
            cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        try:
            code = proc.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            code = None
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    text = log.read_text(errors="replace")[-6000:]
    assert code is not None, f"journey {name} ran over {TIMEOUT} s:\n{text}"
    assert code == 0, f"journey {name} exited {code}:\n{text}"

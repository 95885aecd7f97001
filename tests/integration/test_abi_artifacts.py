"""The committed ABI artifacts (settlement/adapters/abi) must be what a fresh forge build gives,
so Python never deploys or calls a stale contract."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from storekit import skip_module_without

ROOT = Path(__file__).resolve().parents[2]
# The native binary: the npm launcher in node_modules/.bin loses forge's exit code.
FORGE = ROOT / ".tools" / "bin" / "forge"
ABI_DIR = ROOT / "settlement" / "adapters" / "abi"
CONTRACTS = ("W2EToken", "RewardDistributor")

pytestmark = pytest.mark.forge

if not FORGE.exists():
    skip_module_without(".tools/bin/forge")


@pytest.fixture(scope="module")
def out_dir() -> Path:
    # Incremental: compiles only when sources changed since the last build.
    subprocess.run([str(FORGE), "build"], cwd=ROOT, check=True, capture_output=True, timeout=600)
    return ROOT / "out"


def fresh(out_dir: Path, name: str) -> str:
    artifact = json.loads((out_dir / f"{name}.sol" / f"{name}.json").read_text())
    doc = {"abi": artifact["abi"], "bytecode": artifact["bytecode"]["object"], "contractName": name}
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


@pytest.mark.parametrize("name", CONTRACTS)
def test_committed_artifact_matches_fresh_build(out_dir: Path, name: str) -> None:
    path = ABI_DIR / f"{name}.json"
    assert path.exists(), f"{path.relative_to(ROOT)} is missing: run scripts/export-abi"
    committed = path.read_text()
    assert committed == fresh(out_dir, name), (
        f"{path.relative_to(ROOT)} differs from a fresh forge build of contracts/src: "
        "run scripts/export-abi and commit the result"
    )


@pytest.mark.parametrize("name", CONTRACTS)
def test_artifact_shape(name: str) -> None:
    doc = json.loads((ABI_DIR / f"{name}.json").read_text())
    assert set(doc) == {"abi", "bytecode", "contractName"}
    assert doc["contractName"] == name
    assert doc["bytecode"].startswith("0x") and len(doc["bytecode"]) > 2
    names = {entry.get("name") for entry in doc["abi"]}
    if name == "RewardDistributor":
        assert {
            "claim",
            "claimMany",
            "proposeRoot",
            "acceptRoot",
            "Claimed",
            "RootProposed",
            "proposeCorrection",
            "pausedAtBlock",
            "CorrectionProposed",
            "StaleClaims",
        } <= names
    else:
        assert {"mint", "permit", "MINTER_ROLE"} <= names

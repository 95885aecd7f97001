"""Cross-check against the reference: npm @openzeppelin/merkle-tree and settlement.domain.merkle
must agree on every root, proof and dump byte, and each must load the other's dump."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
from pathlib import Path

import pytest
from storekit import skip_module_without

from settlement.domain.merkle import MerkleTree, verify

ROOT = Path(__file__).resolve().parents[2]
OZ_SCRIPT = ROOT / "scripts" / "oz-merkle.mjs"
OZ_PACKAGE = ROOT / "node_modules" / "@openzeppelin" / "merkle-tree" / "package.json"

if not OZ_PACKAGE.exists() or shutil.which("node") is None:
    # On CI a missing reference would turn the one cross-check that matters into a pass.
    skip_module_without("node or node_modules/@openzeppelin/merkle-tree")


def oz(*args: str | Path) -> dict:
    out = Path(str(args[-1]))
    subprocess.run(["node", str(OZ_SCRIPT), *map(str, args)], cwd=ROOT, check=True, timeout=300)
    return json.loads(out.read_text())


def random_values(n: int, seed: int) -> list[tuple[str, int]]:
    rnd = random.Random(seed)
    accounts = {"0x" + rnd.randbytes(20).hex() for _ in range(n)}
    # Edge addresses and amounts: zero padding must not be lost, and the full uint256 range.
    accounts |= {"0x" + "00" * 19 + "01", "0x" + "ff" * 20}
    amounts = [1, 2**256 - 1, 10**18, 0] + [
        rnd.randrange(1, 2 ** rnd.choice([8, 64, 128, 256])) for _ in accounts
    ]
    return sorted(zip(sorted(accounts), amounts, strict=False))


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("oz")
    values = random_values(1200, seed=20261126)
    (tmp / "values.json").write_text(json.dumps([[a, str(n)] for a, n in values]))
    ours = MerkleTree.of(values)
    ref = oz("build", tmp / "values.json", tmp / "oz.json")
    return {"tmp": tmp, "values": values, "ours": ours, "ref": ref}


def test_same_root(case: dict) -> None:
    assert len(case["values"]) >= 1000
    assert case["ours"].root == case["ref"]["root"]


def test_same_proof_for_every_leaf(case: dict) -> None:
    ours, ref = case["ours"], case["ref"]
    assert len(ref["proofs"]) == len(ours)
    for i, (account, amount) in enumerate(case["values"]):
        assert ours.proof(i) == ref["proofs"][i], f"proof of value {i} ({account})"
        assert verify(ours.root, account, amount, ref["proofs"][i])


def test_dump_bytes_equal(case: dict) -> None:
    assert case["ours"].dump_json() == case["ref"]["dump"].encode()


def test_we_load_oz_dump(case: dict) -> None:
    loaded = MerkleTree.load(case["ref"]["dump"].encode())
    assert loaded.root == case["ref"]["root"]
    assert loaded.values == case["values"]
    assert loaded.dump_json() == case["ref"]["dump"].encode()


def test_oz_loads_our_dump(case: dict) -> None:
    tmp = case["tmp"]
    (tmp / "ours.json").write_bytes(case["ours"].dump_json())
    loaded = oz("load", tmp / "ours.json", tmp / "oz-loaded.json")
    assert loaded["root"] == case["ours"].root
    assert loaded["proofs"] == [case["ours"].proof(i) for i in range(len(case["ours"]))]


@pytest.mark.parametrize("n", [1, 2, 3, 5, 17])
def test_small_trees(tmp_path: Path, n: int) -> None:
    # Odd sizes and powers of two exercise every shape of OpenZeppelin's array layout.
    values = random_values(n, seed=n)[:n]
    (tmp_path / "values.json").write_text(json.dumps([[a, str(v)] for a, v in values]))
    ref = oz("build", tmp_path / "values.json", tmp_path / "oz.json")
    ours = MerkleTree.of(values)
    assert ours.root == ref["root"]
    assert ours.dump_json() == ref["dump"].encode()
    assert [ours.proof(i) for i in range(n)] == ref["proofs"]


def test_unsorted_values_same_as_oz(tmp_path: Path) -> None:
    # PROTOCOL sorts values by address, but the tree itself keeps any given order, as OZ does.
    values = random_values(40, seed=7)
    random.Random(1).shuffle(values)
    (tmp_path / "values.json").write_text(json.dumps([[a, str(v)] for a, v in values]))
    ref = oz("build", tmp_path / "values.json", tmp_path / "oz.json")
    ours = MerkleTree.of(values)
    assert ours.dump_json() == ref["dump"].encode()
    assert [ours.proof(i) for i in range(len(values))] == ref["proofs"]

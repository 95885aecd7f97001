"""`settlement receipts verify` on what a close really publishes (issue 16 item 1, auditor):
the epoch's receipts files (a `bucket`, no `kind`, decimal strings) and the epoch directory
itself are verified as the wire receipts they are, the bytes untouched; a tampered line is
rejected and --strict exits 1."""

from __future__ import annotations

import hashlib
from pathlib import Path

import orjson
from storekit import DISTRIBUTOR, EPOCH, GENESIS, GRACE, World, key, opened, settings, wire
from typer.testing import CliRunner

from settlement.cli.main import app
from settlement.services import ingest as service
from settlement.services.close import close_epoch

B1 = GENESIS + 100
CUT1 = GENESIS + EPOCH + GRACE


def published_epoch(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    with opened("sqlite", tmp_path) as store:
        s = settings(emission=1000, data_dir=str(data))
        w = World()
        w.register(store)
        for i in range(3):
            sid = key(f"verify-published-{i}")
            items = wire(
                w.delivery(sid, 30_000 + i, 3, B1),
                w.delivery(sid, 10_000, 1, B1, node=w.node2),
                w.view(sid, 20, B1),
            )
            service.Ingestor(store, s).ingest(items, B1 + 5)
        close_epoch(store, s, now=CUT1)
    return data / "epoch-00000001"


def files_of(epoch: Path) -> dict[str, Path]:
    manifest = orjson.loads((epoch / "manifest.json").read_bytes())
    return {f["name"]: epoch / f"{f['sha256']}.ndjson" for f in manifest["files"]}


def run(*args: str):
    return CliRunner().invoke(app, ["receipts", "verify", *args])


def summary(stderr: str) -> dict:
    return orjson.loads(stderr.strip().splitlines()[-1])["summary"]


def test_a_published_receipts_file_passes_as_published(tmp_path: Path) -> None:
    epoch = published_epoch(tmp_path)
    delivery = files_of(epoch)["delivery_receipts"]
    before = hashlib.sha256(delivery.read_bytes()).hexdigest()
    assert delivery.name == before + ".ndjson"  # the published file, named by its sha256
    first = delivery.read_bytes().splitlines()[0]
    assert first.startswith(b'{"bucket":"1"') and b'"kind"' not in first
    result = run(str(delivery), "--chain-id", "31337", "--distributor", DISTRIBUTOR, "--strict")
    assert result.exit_code == 0, result.output
    assert summary(result.stderr) == {
        "total": 6,
        "accepted": 6,
        "rejected": 0,
        "reasons": {},
        "published_files": 1,
        "judged_at": "issuedAt",
    }
    assert hashlib.sha256(delivery.read_bytes()).hexdigest() == before  # bytes untouched


def test_an_epoch_directory_takes_its_manifests_domain_and_parameters(tmp_path: Path) -> None:
    epoch = published_epoch(tmp_path)
    result = run(str(epoch), "--strict")  # no --chain-id, --distributor: the manifest's
    assert result.exit_code == 0, result.output
    got = summary(result.stderr)
    assert (got["total"], got["accepted"], got["published_files"]) == (9, 9, 2)
    verdicts = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert [v["index"] for v in verdicts] == list(range(9))
    # Another domain: every signature fails, --strict says so.
    elsewhere = run(str(epoch), "--chain-id", "1", "--strict")
    assert elsewhere.exit_code == 1
    assert summary(elsewhere.stderr)["reasons"] == {"SIGNER_MISMATCH": 9}


def test_a_tampered_published_line_is_rejected(tmp_path: Path) -> None:
    epoch = published_epoch(tmp_path)
    view = files_of(epoch)["view_receipts"]
    lines = view.read_bytes().splitlines(keepends=True)
    doc = orjson.loads(lines[0])
    doc["watchSeconds"] = str(int(doc["watchSeconds"]) + 1)
    tampered = tmp_path / "tampered.ndjson"
    tampered.write_bytes(
        orjson.dumps(doc, option=orjson.OPT_SORT_KEYS) + b"\n" + b"".join(lines[1:])
    )
    result = run(str(tampered), "--chain-id", "31337", "--distributor", DISTRIBUTOR, "--strict")
    assert result.exit_code == 1
    first = orjson.loads(result.stdout.splitlines()[0])
    assert (first["index"], first["reason"]) == (0, "SIGNER_MISMATCH")
    assert summary(result.stderr)["accepted"] == 2


def test_a_tree_dump_is_found_from_its_epoch_directory(tmp_path: Path) -> None:
    """`settlement claim --dump data/epochs/epoch-NNNNNNNN`: the README's dump path exists."""
    import pytest

    from settlement.adapters.chain.claims import load_tree
    from settlement.errors import InputError

    epoch = published_epoch(tmp_path)
    manifest = orjson.loads((epoch / "manifest.json").read_bytes())
    tree_file = next(f for f in manifest["files"] if f["name"] == "tree")
    from_dir = load_tree(epoch)
    assert from_dir.root == manifest["root"]
    assert load_tree(epoch / f"{tree_file['sha256']}.json").root == from_dir.root
    with pytest.raises(InputError, match="cannot read"):
        load_tree(tmp_path)  # a directory that is no epoch

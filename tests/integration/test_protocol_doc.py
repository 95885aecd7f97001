"""docs/protocol.md section 9 (Dataset reference) held to the dataset of a real close and of a
correction: every file a manifest lists is documented, every field of every line of every file
is documented with its type and encoding (hex with `0x` of the stated length, decimal string,
...), every documented field appears, lines are sorted by the documented key, and the
manifests' fields and parameter names are the documented ones.

The tables are read from the page itself: a heading (`###` or `####`) names the table below it
by its first backticked word; the first column is the field, the columns `type`, `encoding`,
`key` (and `kind` for the evidence objects) say the rest.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from storekit import EPOCH, GENESIS, GRACE, World, key, opened, wire
from storekit import settings as make_settings

from settlement.adapters.db.epochs import CloseReader, EpochStore
from settlement.domain import dataset as ds
from settlement.domain import merkle
from settlement.domain.receipts import address_of
from settlement.services import correct
from settlement.services import ingest as service
from settlement.services import registry as registry_service
from settlement.services.close import close_epoch

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
SECTION = "## 9. Dataset reference"
OVERVIEW = "Directories and files"
TYPES = "Types and encodings"
MANIFEST = "manifest.json"
CORRECTION_MANIFEST = "correction manifest"
# Tables of objects inside a file or manifest: examples after them belong to the table before.
NESTED = {"evidence", "tree.values", "parameters", "pools", "counts", "files"}

EPOCH_FILES = (
    ds.DELIVERY_RECEIPTS,
    ds.VIEW_RECEIPTS,
    ds.DELIVERY_WATERMARKS,
    ds.VIEW_WATERMARKS,
    ds.QUARANTINE,
    ds.REGISTRY_NODES,
    ds.REGISTRY_CONTENT,
    ds.REGISTRY_VIEWERS,
    ds.ALLOCATIONS,
    ds.TREE,
)
CORRECTION_FILES = (ds.TREE, correct.RECOMPUTED_FILE, correct.CLAIMED_FILE)

DECIMAL = re.compile(r"^(0|[1-9][0-9]*)$")


# --- the page ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Field:
    name: str
    type: str
    encoding: str
    key: int | None
    kind: str | None  # the evidence table's column: delivery, view or both


@dataclass
class Table:
    id: str
    columns: list[str]
    fields: dict[str, Field]
    rows: list[list[str]]
    examples: list[str]


def _cells(line: str) -> list[str]:
    """A table row's cells; `\\|` is a pipe inside a cell."""
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]


def _unquote(cell: str) -> str:
    m = re.fullmatch(r"`([^`]+)`", cell)
    return m.group(1) if m else cell


def parse_reference(text: str) -> dict[str, Table]:
    """The tables of section 9, by id, with the example blocks that follow each."""
    assert SECTION in text, f"{DOC} has no section {SECTION!r}"
    body = text[text.index(SECTION) + len(SECTION) :]
    if "\n## " in body:
        body = body[: body.index("\n## ")]
    tables: dict[str, Table] = {}
    heading: str | None = None
    owner: str | None = None  # the table examples belong to
    lines = body.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("###"):
            title = line.lstrip("#").strip()
            m = re.search(r"`([^`]+)`", title)
            heading = m.group(1) if m else re.sub(r"^[0-9.]+\s+", "", title)
            if heading not in NESTED:
                owner = heading
            i += 1
        elif line.startswith("|"):
            block = []
            while i < len(lines) and lines[i].startswith("|"):
                block.append(_cells(lines[i]))
                i += 1
            assert heading is not None, f"a table before any heading: {block[0]}"
            assert heading not in tables, f"two tables named {heading!r}"
            columns = [c.lower() for c in block[0]]
            rows = block[2:]
            fields = {}
            if columns[0] in ("field", "name") and {"type", "encoding"} <= set(columns):
                for row in rows:
                    cell = dict(zip(columns, row, strict=True))
                    name = _unquote(row[0])
                    assert name not in fields, f"{heading}: {name} twice"
                    k = cell.get("key", "")
                    fields[name] = Field(
                        name=name,
                        type=_unquote(cell["type"]),
                        encoding=cell["encoding"],
                        key=int(k) if k else None,
                        kind=cell.get("kind"),
                    )
            tables[heading] = Table(heading, columns, fields, rows, [])
        elif line.startswith("```json"):
            j = lines.index("```", i + 1)
            assert owner in tables, f"an example before the table of {owner!r}"
            tables[owner].examples.append("\n".join(lines[i + 1 : j]))
            i = j + 1
        else:
            i += 1
    return tables


@pytest.fixture(scope="module")
def reference() -> dict[str, Table]:
    return parse_reference(DOC.read_text(encoding="utf-8"))


def overview_files(tables: dict[str, Table], where: str) -> set[str]:
    """The files section 9.2 says a dataset of `where` (epoch, correction) publishes."""
    t = tables[OVERVIEW]
    col = t.columns.index("published in")
    return {_unquote(r[0]) for r in t.rows if where in r[col]}


# --- the checks -------------------------------------------------------------------------------


def _see(encoding: str) -> str | None:
    m = re.search(r"\(see `([^`]+)`\)", encoding)
    return m.group(1) if m else None


def _scalar_problem(value: Any, encoding: str) -> str | None:
    """What is wrong with `value` under a scalar encoding, None if nothing; raises on an
    encoding the page's vocabulary (section 9.1) does not have."""
    if m := re.search(r"(\d+) hex, no `0x`", encoding):
        ok = isinstance(value, str) and re.fullmatch(f"[0-9a-f]{{{m.group(1)}}}", value)
    elif m := re.search(r"`0x` \+ (\d+) hex", encoding):
        ok = isinstance(value, str) and re.fullmatch(f"0x[0-9a-f]{{{m.group(1)}}}", value)
    elif "decimal string" in encoding:
        ok = isinstance(value, str) and DECIMAL.match(value)
    elif "`true` or `false`" in encoding:
        ok = type(value) is bool
    elif "JSON number" in encoding:
        ok = type(value) is int and value >= 0
    elif "JSON string" in encoding:
        ok = isinstance(value, str)
    else:
        raise AssertionError(f"encoding not in section 9.1: {encoding!r}")
    return None if ok else f"{value!r} is not {encoding}"


def check_value(
    value: Any, f: Field, where: str, tables: dict[str, Table], problems: list[str]
) -> None:
    enc = f.encoding
    if m := re.search(r"exactly `([^`]+)`", enc):
        if value != json.loads(m.group(1)):
            problems.append(f"{where}: {value!r} is not exactly {m.group(1)}")
        return
    if m := re.search(r"one of (.+)$", enc):
        allowed = [json.loads(x) for x in re.findall(r"`([^`]+)`", m.group(1))]
        if value not in allowed:
            problems.append(f"{where}: {value!r} is not one of {allowed}")
        return
    nested = _see(enc)
    if enc.startswith("array"):
        if not isinstance(value, list):
            problems.append(f"{where}: {value!r} is not an array")
            return
        if nested:
            for n, item in enumerate(value):
                check_object(item, nested, f"{where}[{n}]", tables, problems)
            return
        parts = enc.removeprefix("array of ").split(", ")
        if len(parts) > 1 and len(value) != len(parts):
            problems.append(f"{where}: {value!r} has not {len(parts)} items")
            return
        for n, item in enumerate(value):
            bad = _scalar_problem(item, parts[n] if len(parts) > 1 else parts[0])
            if bad:
                problems.append(f"{where}[{n}]: {bad}")
        return
    if enc.startswith("object"):
        if value is None and "or `null`" in enc:
            return
        if not isinstance(value, dict):
            problems.append(f"{where}: {value!r} is not an object")
        elif nested == "pools":
            classes = set(tables[ds.ALLOCATIONS].fields["class"].encoding.split("`")[1::2])
            if set(value) != {json.loads(c) for c in classes}:
                problems.append(f"{where}: classes {sorted(value)} are not those of allocations")
            for cls, pool in value.items():
                check_object(pool, "pools", f"{where}.{cls}", tables, problems)
        elif nested == "counts":
            (counted,) = tables["counts"].fields.values()
            for name, rows in value.items():
                check_value(rows, counted, f"{where}.{name}", tables, problems)
        elif nested:
            check_object(value, nested, where, tables, problems)
        return
    bad = _scalar_problem(value, enc)
    if bad:
        problems.append(f"{where}: {bad}")
        return
    if (m := re.fullmatch(r"uint(\d+)", f.type)) and int(value) >= 2 ** int(m.group(1)):
        problems.append(f"{where}: {value!r} does not fit a {f.type}")


def check_object(
    obj: Any,
    table_id: str,
    where: str,
    tables: dict[str, Table],
    problems: list[str],
    skip: frozenset[str] = frozenset(),
) -> None:
    """Every field of `obj` documented in `table_id` with a value of its encoding, and every
    documented field present; problems are appended, not raised, so that one run lists all."""
    if not isinstance(obj, dict):
        problems.append(f"{where}: {obj!r} is not an object")
        return
    fields = tables[table_id].fields
    if "kind" in tables[table_id].columns:
        fields = {n: f for n, f in fields.items() if f.kind in ("both", obj.get("kind"))}
    for name in sorted(fields.keys() - obj.keys()):
        problems.append(f"{where}: documented field {name!r} is missing")
    for name in sorted(obj.keys() - fields.keys()):
        problems.append(f"{where}: field {name!r} is not documented in `{table_id}`")
    for name in sorted(fields.keys() & obj.keys() - skip):
        check_value(obj[name], fields[name], f"{where}.{name}", tables, problems)


def check_sorted(objs: list[dict[str, Any]], table: Table, where: str, problems: list[str]) -> None:
    keys = sorted((f for f in table.fields.values() if f.key), key=lambda f: f.key or 0)
    if not keys:
        return
    got = [tuple(o.get(f.name) for f in keys) for o in objs]
    for n in range(1, len(got)):
        if not got[n - 1] < got[n]:
            names = [f.name for f in keys]
            problems.append(f"{where}: lines {n - 1} and {n} not ascending by {names}")


def check_file(
    directory: Path, entry: dict[str, Any], tables: dict[str, Table], problems: list[str]
) -> None:
    name = entry["name"]
    ext = "json" if name == ds.TREE else "ndjson"
    data = (directory / f"{entry['sha256']}.{ext}").read_bytes()
    assert hashlib.sha256(data).hexdigest() == entry["sha256"]
    assert str(len(data)) == entry["size"]
    if name == ds.TREE:
        doc = orjson.loads(data)
        assert str(len(doc["values"])) == entry["rows"]
        check_object(doc, name, name, tables, problems)
        return
    lines = data.decode().splitlines()
    assert str(len(lines)) == entry["rows"]
    assert lines, f"the test's dataset has no line of {name}: it checks nothing"
    objs = [orjson.loads(x) for x in lines]
    for n, obj in enumerate(objs):
        check_object(obj, name, f"{name}[{n}]", tables, problems)
    check_sorted(objs, tables[name], name, problems)


# --- the dataset ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dataset:
    epoch_dir: Path
    manifest: dict[str, Any]
    correction_dir: Path
    correction: dict[str, Any]


def cutoff(e: int) -> int:
    return GENESIS + e * EPOCH + GRACE


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: Any) -> Dataset:
    """Two closes and a correction of the second, on SQLite: every file has lines (a session
    over two epochs and two nodes, a quarantined one with both evidence objects, registries
    with viewers)."""
    tmp = tmp_path_factory.mktemp("protocol-doc")
    with opened("sqlite", tmp) as store:
        s = make_settings(data_dir=str(tmp / "data"))
        w = World()
        w.register(store)
        other_key = key("viewer-2")
        registry_service.add_viewer(store, w.viewer)
        registry_service.add_viewer(store, address_of(other_key))
        sid, cheat = key("session-a"), key("cheat")
        ingest = service.Ingestor(store, s).ingest
        b1 = GENESIS + 100
        got = ingest(
            wire(
                w.delivery(sid, 3_000_000, 3, b1),
                w.delivery(sid, 1_000_000, 1, b1, node=w.node2),
                w.view(sid, 20, b1),
                w.delivery(cheat, 2_000_000, 2, b1, viewer_key=other_key),
                w.view(cheat, 8, b1, viewer_key=other_key),
            ),
            b1 + 5,
        )
        assert [i.verdict for i in got.items] == ["accepted"] * 5
        close_epoch(store, s, now=cutoff(1))
        b2 = cutoff(1) + 100
        got = ingest(
            wire(
                w.delivery(sid, 6_000_000, 6, b2),
                w.view(sid, 40, b2),
                w.view(cheat, 12, b2, content=w.content2, viewer_key=other_key),
            ),
            b2 + 5,
        )
        assert [i.reason or i.verdict for i in got.items] == ["accepted", "accepted", "CONFLICT"]
        closed = close_epoch(store, s, now=cutoff(2))

        # A correction of epoch 2 as `settlement correct` publishes it, with claimed amounts
        # made up instead of read from a chain: one above its balance, one below.
        epochs = EpochStore(store)
        by_class = epochs.run(lambda cur: CloseReader(epochs, cur).balances(3))
        recomputed = {"0x" + a.hex(): n + v + c for a, (n, v, c) in by_class.items()}
        claimed = {"0x" + w.node.hex(): 1200 * 10**18, "0x" + w.viewer.hex(): 100 * 10**18}
        leaves = {a: max(recomputed.get(a, 0), claimed.get(a, 0)) for a in recomputed | claimed}
        tree = merkle.tree_for_balances(leaves)
        assert tree is not None
        plan = correct.CorrectionPlan(
            epoch=2,
            corrects=closed.data_hash,
            claimed_at_block=41,
            recomputed=recomputed,
            claimed=claimed,
            leaves=leaves,
            tree=tree,
        )
        directory, manifest, _ = correct.publish_correction(store, s, plan)
    return Dataset(closed.directory, closed.manifest_obj, directory, orjson.loads(manifest))


def report(problems: list[str]) -> None:
    assert not problems, f"{len(problems)} difference(s) from {DOC.name}:\n" + "\n".join(problems)


# --- the tests --------------------------------------------------------------------------------


def test_the_reference_is_complete_and_consistent(reference: dict[str, Table]) -> None:
    """The page alone: a table for every file and object, types and encodings from 9.1's
    vocabulary and agreeing with each other, the examples matching their tables."""
    for name in (OVERVIEW, TYPES, MANIFEST, CORRECTION_MANIFEST, *NESTED):
        assert name in reference, f"section 9 has no table {name!r}"
    for name in overview_files(reference, "epoch") | overview_files(reference, "correction"):
        assert reference[name].fields, f"section 9 lists {name} but has no table of its fields"
    types = {t for row in reference[TYPES].rows for t in re.findall(r"`([^`]+)`", row[0])}
    expected = {
        "address": ["`0x` + 40 hex"],
        "bytes32": ["`0x` + 64 hex", "64 hex, no `0x`"],
        "bytes": ["`0x` + 130 hex"],
        "bool": ["`true` or `false`"],
        "string": ["JSON string"],
        "object": ["object"],
        "array": ["array"],
    }
    problems: list[str] = []
    for table in reference.values():
        for f in table.fields.values():
            where = f"{table.id}.{f.name}"
            if f.type not in types:
                problems.append(f"{where}: type {f.type!r} is not in section 9.1")
            wanted = expected.get(f.type, ["decimal string", "JSON number"])
            if not any(f.encoding.startswith(x) for x in wanted):
                problems.append(f"{where}: {f.type} encoded as {f.encoding!r}")
            if not f.encoding.startswith(("object", "array")) and "exactly" not in f.encoding:
                _scalar_problem("", f.encoding)  # raises on an unknown encoding
    for table in reference.values():
        for n, text in enumerate(table.examples):
            example = json.loads(text)
            where = f"example {n} of {table.id}"
            if table.id == CORRECTION_MANIFEST:
                check_correction_manifest(example, reference, where, problems)
                params = example.get("parameters")
                check_object(params, "parameters", f"{where}.parameters", reference, problems)
            else:
                check_object(example, table.id, where, reference, problems)
    report(problems)


def test_every_file_a_manifest_lists_is_documented(
    reference: dict[str, Table], dataset: Dataset
) -> None:
    listed = {f["name"] for f in dataset.manifest["files"]}
    assert listed == overview_files(reference, "epoch") == set(EPOCH_FILES)
    listed = {f["name"] for f in dataset.correction["files"]}
    assert listed == overview_files(reference, "correction") == set(CORRECTION_FILES)


@pytest.mark.parametrize("name", EPOCH_FILES)
def test_every_line_of_an_epoch_file_is_documented(
    reference: dict[str, Table], dataset: Dataset, name: str
) -> None:
    (entry,) = [f for f in dataset.manifest["files"] if f["name"] == name]
    problems: list[str] = []
    check_file(dataset.epoch_dir, entry, reference, problems)
    report(problems)


@pytest.mark.parametrize("name", CORRECTION_FILES)
def test_every_line_of_a_correction_file_is_documented(
    reference: dict[str, Table], dataset: Dataset, name: str
) -> None:
    (entry,) = [f for f in dataset.correction["files"] if f["name"] == name]
    problems: list[str] = []
    check_file(dataset.correction_dir, entry, reference, problems)
    report(problems)


def check_manifest(
    m: dict[str, Any], tables: dict[str, Table], where: str, problems: list[str]
) -> None:
    check_object(m, MANIFEST, where, tables, problems, skip=frozenset({"parameters"}))
    files = m.get("files", [])
    check_sorted(files, tables["files"], f"{where}.files", problems)
    counts = {f.get("name"): f.get("rows") for f in files}
    if m.get("counts") != counts:
        problems.append(f"{where}.counts: {m.get('counts')} are not the files' rows {counts}")
    for cls, pool in m.get("pools", {}).items():
        if int(pool["emitted"]) + int(pool["carriedIn"]) != int(pool["allocated"]) + int(
            pool["carriedOut"]
        ):
            problems.append(f"{where}.pools.{cls}: emitted + carriedIn != allocated + carriedOut")


def check_correction_manifest(
    m: dict[str, Any], tables: dict[str, Table], where: str, problems: list[str]
) -> None:
    """The correction's fields, and all of manifest.json's (the correction's table wins)."""
    merged = dict(tables[MANIFEST].fields) | tables[CORRECTION_MANIFEST].fields
    both = Table("correction+manifest", ["field", "type", "encoding"], merged, [], [])
    check_manifest(m, {**tables, MANIFEST: both}, where, problems)


def test_the_manifest_fields_are_the_documented_ones(
    reference: dict[str, Table], dataset: Dataset
) -> None:
    problems: list[str] = []
    check_manifest(dataset.manifest, reference, "manifest", problems)
    report(problems)


def test_the_parameter_names_are_the_documented_ones(
    reference: dict[str, Table], dataset: Dataset
) -> None:
    problems: list[str] = []
    params = dataset.manifest["parameters"]
    check_object(params, "parameters", "manifest.parameters", reference, problems)
    report(problems)


def test_the_correction_manifest_fields_are_the_documented_ones(
    reference: dict[str, Table], dataset: Dataset
) -> None:
    m, base = dataset.correction, dataset.manifest
    for same in ("epoch", "start", "end", "cutoff", "parameters", "pools"):
        assert m[same] == base[same], f"a correction's {same} is the corrected epoch's"
    problems: list[str] = []
    check_correction_manifest(m, reference, "correction", problems)
    report(problems)


def test_a_correction_leaf_is_the_larger_of_balance_and_claimed(dataset: Dataset) -> None:
    def read(name: str) -> bytes:
        (f,) = [f for f in dataset.correction["files"] if f["name"] == name]
        ext = "json" if name == ds.TREE else "ndjson"
        return (dataset.correction_dir / f"{f['sha256']}.{ext}").read_bytes()

    def column(name: str, field: str) -> dict[str, int]:
        lines = map(orjson.loads, read(name).splitlines())
        return {o["account"]: int(o[field]) for o in lines}

    amounts = column(correct.RECOMPUTED_FILE, "amount")
    claimed = column(correct.CLAIMED_FILE, "claimed")
    values = orjson.loads(read(ds.TREE))["values"]
    leaves = {v["value"][0]: int(v["value"][1]) for v in values}
    assert leaves == {a: max(amounts.get(a, 0), claimed.get(a, 0)) for a in amounts | claimed}
    assert dataset.correction["root"] == merkle.MerkleTree.load(read(ds.TREE)).root


def test_a_field_missing_from_the_page_is_reported(
    reference: dict[str, Table], dataset: Dataset
) -> None:
    """The check can fail: the page without the `bucket` row of delivery_receipts, or with
    another length for `sessionId`, does not describe the real lines."""
    text = DOC.read_text(encoding="utf-8")
    row = next(x for x in text.splitlines() if x.startswith("| `bucket` |"))
    (entry,) = [f for f in dataset.manifest["files"] if f["name"] == ds.DELIVERY_RECEIPTS]
    problems: list[str] = []
    check_file(dataset.epoch_dir, entry, parse_reference(text.replace(row + "\n", "", 1)), problems)
    assert any("'bucket' is not documented" in p for p in problems), problems
    row = "| `sessionId` | bytes32 | `0x` + 64 hex |"
    wrong = text.replace(row, row.replace("64", "62"), 1)
    problems = []
    check_file(dataset.epoch_dir, entry, parse_reference(wrong), problems)
    assert any("sessionId" in p and "62 hex" in p for p in problems), problems

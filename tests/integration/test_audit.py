"""The independent auditor (issue 14) against real services on the embedded chain (py-evm):
an untampered history with a correction in the middle audits clean on SQLite and on
PostgreSQL; each tamper is caught with a precise message (epoch, file, line, account or
receipt, expected against found)."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from storekit import backend_url
from test_submitter_anvil import GENESIS, HOUR, Net, make_net

from settlement.adapters import chain as c
from settlement.domain import dataset
from settlement.domain.merkle import MerkleTree
from settlement.domain.receipts import Domain, ViewReceipt, address_of, keccak, sign
from settlement.domain.wire import to_wire
from settlement.errors import DataUnavailable
from settlement.services import registry as registry_service
from settlement.services.audit import AuditReport, ChainView, Mismatch, audit, open_source
from settlement.services.correct import run_correction
from settlement.services.ingest import Ingestor


def _accept(n: Net) -> None:
    sub = n.submitter()
    (row,) = sub.step()
    n.chain.increase_time(HOUR)
    (row,) = sub.step()
    assert row.status == "accepted", row


def _equivocate(n: Net) -> None:
    """A viewer signs two view receipts of one session naming two contents: the second is a
    CONFLICT and the session is quarantined, with both receipts as evidence."""
    contents = [cid for cid, _ in registry_service.content(n.store)]
    domain = Domain.from_hex(n.settings.chain_id, n.settings.distributor)
    secret = keccak(b"audit equivocator")
    viewer, sid, started = address_of(secret), keccak(b"audit session"), GENESIS + 100
    a = sign(ViewReceipt(sid, viewer, contents[0], started, 8, started + 20), domain, secret)
    b = sign(ViewReceipt(sid, viewer, contents[1], started, 12, started + 30), domain, secret)
    result = Ingestor(n.store, n.settings).ingest([to_wire(a), to_wire(b)], started + 60)
    assert [v.reason or v.verdict for v in result.items] == ["accepted", "CONFLICT"]


def _history(n: Net) -> None:
    """A quarantined session; epochs 1 and 2 accepted, claims against 2; epoch 3 closed; a
    correction at epoch 3 (paused, proposed, accepted); then epochs 4 and 5 under its floor,
    accepted."""
    d = n.distributor
    _equivocate(n)
    n.close(1)
    _accept(n)
    n.close(2)
    _accept(n)
    sub = n.submitter()
    tree = _tree_of(n, 2)
    for account, _ in tree.values[:2]:
        c.send_claim(n.relayer, d, c.claim_info(d, tree, account))
    n.close(3)
    n.chain.transact(n.guardian, d.pause())
    n.chain.mine(1)
    state = run_correction(sub)
    assert state.stage == "pending", state
    n.chain.increase_time(HOUR)
    assert run_correction(sub).stage == "accepted"
    n.chain.transact(n.guardian, d.unpause())
    for epoch in (4, 5):
        n.close(epoch)
        _accept(n)


def _tree_of(n: Net, epoch: int) -> MerkleTree:
    doc = json.loads((_dir(n, epoch) / dataset.MANIFEST).read_bytes())
    (entry,) = [f for f in doc["files"] if f["name"] == dataset.TREE]
    return MerkleTree.load((_dir(n, epoch) / f"{entry['sha256']}.json").read_bytes())


def _dir(n: Net, epoch: int) -> Path:
    return Path(n.settings.data_dir) / f"epoch-{epoch:08d}"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def history(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Net]:
    tmp = tmp_path_factory.mktemp(f"audit-{request.param}")
    with backend_url(request.param, tmp) as url:
        n = make_net(tmp, "", funded_epochs=8, window=6 * 900, database_url=url)
        try:
            _history(n)
            yield n
        finally:
            n.store.close()


def _audit(n: Net, data: Path | None = None, **kw: object) -> AuditReport:
    source = open_source(str(data)) if data is not None else None
    return audit(source, ChainView(n.distributor, n.deployment.block), **kw)  # type: ignore[arg-type]


def test_untampered_history_with_a_correction_audits_clean(history: Net) -> None:
    report = _audit(history)
    assert report.ok, [str(m) for m in report.mismatches]
    kinds = [(s.epoch, s.kind, s.on_chain) for s in report.epochs]
    assert kinds == [
        (1, "epoch", "accepted"),
        (2, "epoch", "accepted"),
        (3, "epoch", "not proposed"),
        (3, "correction", "accepted"),
        (4, "epoch", "accepted"),
        (5, "epoch", "accepted"),
    ], kinds
    assert all(s.signatures_checked == s.receipts for s in report.epochs if s.kind == "epoch")
    # The quarantined session is published (with its evidence) by every close.
    for epoch in (1, 5):
        doc = json.loads((_dir(history, epoch) / dataset.MANIFEST).read_bytes())
        assert doc["counts"][dataset.QUARANTINE] == "1"
    assert sum(s.receipts for s in report.epochs) > 50
    json.loads(report.to_json())  # JSON for machines


def _found(report: AuditReport, **want: object) -> list[Mismatch]:
    hits = [
        m
        for m in report.mismatches
        if all(
            (str(v) in str(getattr(m, k))) if k == "what" else getattr(m, k) == v
            for k, v in want.items()
        )
    ]
    assert hits, (want, [str(m) for m in report.mismatches])
    return hits


@pytest.fixture
def copy(history: Net, tmp_path: Path) -> Path:
    out = tmp_path / "epochs"
    shutil.copytree(history.settings.data_dir, out)
    return out


# --- tampering: a copy of the published data, changed the way a dishonest operator would
# (each changed file renamed by its new sha256 and its manifest entry fixed, so the file
# checks pass and the deeper check must catch it), audited against the real chain.


def _entry(doc: dict[str, object], name: str) -> dict[str, str]:
    (entry,) = [f for f in doc["files"] if f["name"] == name]  # type: ignore[attr-defined]
    return entry  # type: ignore[no-any-return]


def _rewrite(data: Path, epoch: int, name: str, edit: object) -> dict[str, object]:
    """Apply `edit(lines) -> lines` to file `name` of epoch `epoch` and republish its
    manifest consistently (sha256, size, rows, counts); the new manifest's object."""
    import hashlib

    directory = data / f"epoch-{epoch:08d}"
    doc = json.loads((directory / dataset.MANIFEST).read_bytes())
    entry = _entry(doc, name)
    old = directory / f"{entry['sha256']}.ndjson"
    lines = old.read_bytes().split(b"\n")[:-1]
    body = b"".join(line + b"\n" for line in edit(lines))  # type: ignore[operator]
    sha = hashlib.sha256(body).hexdigest()
    (directory / f"{sha}.ndjson").write_bytes(body)
    entry.update(sha256=sha, size=str(len(body)), rows=str(body.count(b"\n")))
    doc["counts"][name] = entry["rows"]
    (directory / dataset.MANIFEST).write_bytes(dataset.canonical_bytes(doc))
    return doc  # type: ignore[no-any-return]


def _line(o: dict[str, str]) -> bytes:
    return json.dumps(o, sort_keys=True, separators=(",", ":")).encode()


def test_flipped_signature_byte(history: Net, copy: Path) -> None:
    def flip(lines: list[bytes]) -> list[bytes]:
        o = json.loads(lines[0])
        sig = bytearray.fromhex(o["signature"][2:])
        sig[10] ^= 0x01
        o["signature"] = "0x" + sig.hex()
        return [_line(o), *lines[1:]]

    first = json.loads(
        (_dir_in(copy, 2) / _name(copy, 2, dataset.VIEW_RECEIPTS)).read_bytes().split(b"\n")[0]
    )
    _rewrite(copy, 2, dataset.VIEW_RECEIPTS, flip)
    report = _audit(history, copy)
    assert not report.ok
    (m,) = _found(
        report, epoch=2, file=dataset.VIEW_RECEIPTS, line=1, what="SIGNER_MISMATCH",
        account=first["viewer"], receipt=first["sessionId"],
    )  # fmt: skip
    assert m.expected == "accepted" and m.found == "SIGNER_MISMATCH"


def test_inflated_counter(history: Net, copy: Path) -> None:
    first = json.loads(
        (_dir_in(copy, 2) / _name(copy, 2, dataset.DELIVERY_RECEIPTS)).read_bytes().split(b"\n")[0]
    )

    def inflate(lines: list[bytes]) -> list[bytes]:
        o = json.loads(lines[0])
        o["bytesServed"] = str(int(o["bytesServed"]) + 1_000_000)
        return [_line(o), *lines[1:]]

    _rewrite(copy, 2, dataset.DELIVERY_RECEIPTS, inflate)
    report = _audit(history, copy)
    _found(report, epoch=2, file=dataset.DELIVERY_RECEIPTS, line=1, what="SIGNER_MISMATCH",
           account=first["viewer"], receipt=f"{first['sessionId']}/node {first['node']}")  # fmt: skip
    # Recomputed from the inflated line, its node would earn more than it was allocated.
    (m,) = _found(report, epoch=2, file=dataset.ALLOCATIONS, account=first["node"],
                  what="node allocation differs")  # fmt: skip
    assert m.expected is not None and m.found is not None and int(m.expected) > int(m.found)


def test_dropped_receipt(history: Net, copy: Path) -> None:
    lines = (_dir_in(copy, 2) / _name(copy, 2, dataset.DELIVERY_RECEIPTS)).read_bytes().split(b"\n")
    dropped = json.loads(lines[0])
    _rewrite(copy, 2, dataset.DELIVERY_RECEIPTS, lambda ls: ls[1:])
    report = _audit(history, copy)
    # The allocations were made with the receipt: its node earned more than what is left
    # now justifies.
    (m,) = _found(report, epoch=2, file=dataset.ALLOCATIONS, account=dropped["node"],
                  what="node allocation differs")  # fmt: skip
    assert m.expected is not None and m.found is not None and int(m.found) > int(m.expected)
    _found(report, epoch=2, file=f"epoch-{2:08d}/manifest.json", what="differs from the dataHash")


def test_added_account_in_allocations(history: Net, copy: Path) -> None:
    intruder = "0x" + "ee" * 20
    line = _line({"account": intruder, "amount": "1000", "class": "viewer"})
    _rewrite(copy, 3, dataset.ALLOCATIONS, lambda ls: sorted([*ls, line]))
    report = _audit(history, copy)
    (m,) = _found(report, epoch=3, file=dataset.ALLOCATIONS, account=intruder)
    assert "earns nothing in class viewer" in m.what and m.expected == "no line"
    assert m.found == "1000" and m.line is not None


def test_changed_manifest(history: Net, copy: Path) -> None:
    path = _dir_in(copy, 4) / dataset.MANIFEST
    doc = json.loads(path.read_bytes())
    doc["pools"]["node"]["carriedOut"] = "1"
    path.write_bytes(dataset.canonical_bytes(doc))
    report = _audit(history, copy)
    (m,) = _found(report, epoch=4, file=f"epoch-{4:08d}/manifest.json",
                  what="keccak256(manifest.json) differs from the dataHash of RootProposed")  # fmt: skip
    assert m.found == "0x" + dataset.data_hash(path.read_bytes()).hex()
    _found(report, epoch=4, file=dataset.MANIFEST, what="pools.node differ from the recomputation")
    # Each epoch's summary counts its mismatches, those of the chain's view of it included.
    counts = {s.epoch: s.mismatches for s in report.epochs if s.kind == "epoch"}
    assert counts[4] == sum(1 for x in report.mismatches if x.epoch == 4) >= 2


def test_wrong_floor(history: Net, copy: Path) -> None:
    path = _dir_in(copy, 4) / dataset.MANIFEST
    doc = json.loads(path.read_bytes())
    floor = doc["floor"]
    assert floor != ZERO  # epoch 4 closed under the correction's floor
    doc["floor"] = ZERO
    path.write_bytes(dataset.canonical_bytes(doc))
    report = _audit(history, copy)
    (m,) = _found(report, epoch=4, file="chain", what="proposed under another floor")
    assert m.expected == floor and m.found == ZERO


def test_broken_manifest_chain(history: Net, copy: Path) -> None:
    path = _dir_in(copy, 5) / dataset.MANIFEST
    doc = json.loads(path.read_bytes())
    right = doc["prevManifestHash"]
    doc["prevManifestHash"] = "0x" + "12" * 32
    path.write_bytes(dataset.canonical_bytes(doc))
    report = _audit(history, copy)
    (m,) = _found(report, epoch=5, what="broken manifest chain")
    assert m.found == "0x" + "12" * 32 and m.expected is not None and right in m.expected


def test_dataset_of_another_distributor(history: Net, copy: Path) -> None:
    n = history
    other = c.deploy(
        n.chain, n.admin, poster=n.poster.address, guardian=n.guardian.address,
        challenge_period=HOUR,
    )  # fmt: skip
    view = ChainView(c.Distributor(n.chain, other.distributor), other.block)
    report = audit(open_source(str(copy)), view)
    (m,) = _found(report, epoch=1, file=dataset.MANIFEST, what="dataset of another distributor")
    assert m.expected == other.distributor.lower() and m.found == n.distributor.address.lower()
    # Every receipt was signed for the first distributor: none recovers to its viewer here.
    hits = _found(report, epoch=1, file=dataset.DELIVERY_RECEIPTS, what="SIGNER_MISMATCH")
    assert hits[0].line == 1


def test_different_root_posted_by_the_poster_key(tmp_path: Path) -> None:
    n = make_net(tmp_path, "", funded_epochs=4)
    try:
        d = n.distributor
        n.close(1)
        _accept(n)
        n.close(2)
        doc = json.loads((_dir(n, 2) / dataset.MANIFEST).read_bytes())
        real = "0x" + dataset.data_hash((_dir(n, 2) / dataset.MANIFEST).read_bytes()).hex()
        bad_root = "0x" + "ab" * 32
        uri = str((_dir(n, 2) / dataset.MANIFEST).resolve())
        n.chain.transact(
            n.poster, d.propose_root(2, bad_root, int(doc["cumulativeTotal"]), real, uri)
        )
        report = _audit(n)
        (m,) = _found(report, epoch=2, file="chain", what="RootProposed root differs")
        assert m.expected == doc["root"] and m.found == bad_root
        assert [s.on_chain for s in report.epochs] == ["accepted", "pending"]
    finally:
        n.store.close()


def test_claimed_above_a_leaf_of_a_foreign_root(tmp_path: Path) -> None:
    """The poster key posts a real tree that overpays one account, it is accepted and the
    account claims it: the Claimed event is above the account's leaf in every root that
    the published data gives."""
    n = make_net(tmp_path, "", funded_epochs=4)
    try:
        d = n.distributor
        n.close(1)
        _accept(n)
        n.close(2)
        doc = json.loads((_dir(n, 2) / dataset.MANIFEST).read_bytes())
        honest = dict(_tree_of(n, 2).values)
        top = max(honest, key=lambda a: honest[a])
        bad = MerkleTree.of(sorted({**honest, top: honest[top] + 5 * 10**18}.items()))
        uri = str((_dir(n, 2) / dataset.MANIFEST).resolve())
        real = "0x" + dataset.data_hash((_dir(n, 2) / dataset.MANIFEST).read_bytes()).hex()
        n.chain.transact(n.poster, d.propose_root(2, bad.root, bad.cumulative_total, real, uri))
        n.chain.increase_time(HOUR)
        n.chain.transact(n.relayer, d.accept_root())
        c.send_claim(n.relayer, d, c.claim_info(d, bad, top))
        report = _audit(n)
        (m,) = _found(report, file="chain", account=top, what="Claimed above the account's leaf")
        assert m.expected == f"<= {honest[top]}" and m.found == str(honest[top] + 5 * 10**18)
        _found(report, epoch=2, file="chain", what="RootProposed root differs")
        assert doc["root"] != bad.root
    finally:
        n.store.close()


ZERO = "0x" + "00" * 32


def _dir_in(data: Path, epoch: int) -> Path:
    return data / f"epoch-{epoch:08d}"


def _name(data: Path, epoch: int, name: str) -> str:
    doc = json.loads((_dir_in(data, epoch) / dataset.MANIFEST).read_bytes())
    return f"{_entry(doc, name)['sha256']}.ndjson"


def test_quarantine_evidence_with_a_bad_signature(history: Net, copy: Path) -> None:
    def flip(lines: list[bytes]) -> list[bytes]:
        (only,) = lines
        o = json.loads(only)
        sig = bytearray.fromhex(o["evidenceReceived"]["signature"][2:])
        sig[3] ^= 0x40
        o["evidenceReceived"]["signature"] = "0x" + sig.hex()
        return [_line(o)]

    _rewrite(copy, 2, dataset.QUARANTINE, flip)
    report = _audit(history, copy)
    (m,) = _found(report, epoch=2, file=dataset.QUARANTINE, line=1,
                  what="evidenceReceived fails SIGNER_MISMATCH")  # fmt: skip
    assert m.account is not None and m.receipt is not None


def test_quarantine_evidence_that_does_not_conflict(history: Net, copy: Path) -> None:
    def same(lines: list[bytes]) -> list[bytes]:
        (only,) = lines
        o = json.loads(only)
        o["evidenceStored"] = o["evidenceReceived"]
        return [_line(o)]

    _rewrite(copy, 3, dataset.QUARANTINE, same)
    report = _audit(history, copy)
    _found(report, epoch=3, file=dataset.QUARANTINE, line=1, what="do not conflict")


def test_over_http_as_from_a_folder(history: Net) -> None:
    """The same files served over HTTP (here by the standard library's file server, as the
    service's own read-only route would) audit exactly as the folder does."""
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    handler = functools.partial(SimpleHTTPRequestHandler, directory=history.settings.data_dir)
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        over_http = _audit_url(history, url)
        from_folder = _audit(history, Path(history.settings.data_dir))
    finally:
        server.shutdown()
        thread.join()
    assert over_http.ok, [str(m) for m in over_http.mismatches]
    assert [(s.data_hash, s.root, s.receipts) for s in over_http.epochs] == [
        (s.data_hash, s.root, s.receipts) for s in from_folder.epochs
    ]


def _audit_url(n: Net, url: str) -> AuditReport:
    return audit(open_source(url), ChainView(n.distributor, n.deployment.block))


# --- the command, as a third party runs it (README "Auditing"): a live chain over JSON-RPC.


@pytest.fixture(scope="module")
def on_anvil(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Net, str]]:
    from storekit import _ENV
    from support.anvil import Anvil, find_anvil

    anvil = find_anvil()
    if anvil is None:
        if _ENV.ci:
            pytest.fail("CI=true but anvil is missing: run scripts/setup")
        pytest.skip("anvil not installed (run scripts/setup)")
    tmp = tmp_path_factory.mktemp("audit-anvil")
    with Anvil(anvil) as node:
        n = make_net(tmp, node.url, funded_epochs=4)
        try:
            for epoch in (1, 2):
                n.close(epoch)
                _accept(n)
            yield n, node.url
        finally:
            n.store.close()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    import sys

    return subprocess.run(
        [sys.executable, "-m", "settlement.cli", "audit", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_cli_audits_a_live_chain(on_anvil: tuple[Net, str], tmp_path: Path) -> None:
    n, url = on_anvil
    address = n.distributor.address
    # 1: the data found through each proposal's dataURI
    run = _cli("--rpc", url, "--distributor", address)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "OK: every root matches" in run.stdout
    # 2: the data named, one JSON report
    run = _cli("--rpc", url, "--distributor", address, "--data", n.settings.data_dir, "--json")
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["ok"] and [e["epoch"] for e in report["epochs"]] == [1, 2]
    assert report["chainId"] == n.chain.chain_id
    # A tampered copy fails, exit 1, the mismatch in the JSON.
    data = tmp_path / "epochs"
    shutil.copytree(n.settings.data_dir, data)
    intruder = "0x" + "ee" * 20
    line = _line({"account": intruder, "amount": "5", "class": "node"})
    _rewrite(data, 2, dataset.ALLOCATIONS, lambda ls: sorted([*ls, line]))
    run = _cli(
        "--rpc", url, "--distributor", address, "--data", str(data), "--epoch", "2", "--json"
    )
    assert run.returncode == 1, run.stderr
    report = json.loads(run.stdout)
    assert not report["ok"]
    assert any(
        m["account"] == intruder and m["file"] == "allocations" and m["epoch"] == 2
        for m in report["mismatches"]
    ), report["mismatches"]
    run = _cli("--rpc", url, "--distributor", address, "--data", str(data))
    assert run.returncode == 1 and "MISMATCH" in run.stdout and intruder in run.stdout


def test_one_epoch_in_full(history: Net) -> None:
    """--epoch E: the epochs before E replayed for their state (signatures not re-checked),
    E in full, nothing after it; roots and claims of epochs not audited are not judged."""
    # Epoch 1 alone: the claims made against epoch 2's root are not held against anything.
    report = _audit(history, epochs=[1])
    assert report.ok, [str(m) for m in report.mismatches]
    assert [(s.epoch, s.signatures_checked > 0) for s in report.epochs] == [(1, True)]
    report = _audit(history, epochs=[3])
    assert report.ok, [str(m) for m in report.mismatches]
    assert [(s.epoch, s.kind) for s in report.epochs] == [
        (1, "epoch"), (2, "epoch"), (3, "epoch"), (3, "correction"),
    ]  # fmt: skip
    checked = {s.epoch: s.signatures_checked for s in report.epochs if s.kind == "epoch"}
    assert checked[1] == checked[2] == 0 and checked[3] > 0


def test_correction_with_claims_read_outside_the_pause(history: Net, copy: Path) -> None:
    (path,) = (copy / "corrections").glob(f"*/{dataset.MANIFEST}")
    doc = json.loads(path.read_bytes())
    doc["claimedAtBlock"] = "1"  # before the pause: claims could still land after it
    path.write_bytes(dataset.canonical_bytes(doc))
    report = _audit(history, copy)
    (m,) = _found(report, epoch=3, file=dataset.MANIFEST, what="claimedAtBlock is not a block")
    assert m.found == "1" and m.expected is not None and m.expected.startswith("in [")


class _OtherChain(ChainView):
    """The same distributor address on a chain with another id and no events: what an
    auditor of that chain sees when handed this dataset."""

    def __init__(self, chain_id: int, address: str) -> None:
        super().__init__(None)
        self._id, self._address = chain_id, address.lower()

    @property
    def chain_id(self) -> int:
        return self._id

    @property
    def address(self) -> str:
        return self._address

    def events(self, refresh: bool = False) -> list[object]:
        return []

    def root(self) -> str:
        return ZERO


def test_dataset_of_another_chain(history: Net, copy: Path) -> None:
    n = history
    report = audit(open_source(str(copy)), _OtherChain(n.chain.chain_id + 1, n.distributor.address))
    (m,) = _found(report, epoch=1, file=dataset.MANIFEST, what="dataset of another chain")
    assert m.expected == str(n.chain.chain_id + 1) and m.found == str(n.chain.chain_id)
    assert _found(report, epoch=1, file=dataset.VIEW_RECEIPTS, what="SIGNER_MISMATCH")
    # The same folder under its own chain's id: every signature holds (what remains is the
    # events this fake chain lacks, such as the claims the correction read).
    same = audit(open_source(str(copy)), _OtherChain(n.chain.chain_id, n.distributor.address))
    assert {m.file for m in same.mismatches} == {"onchain_claimed"}, same.mismatches


def test_data_found_through_http_data_uris(tmp_path: Path) -> None:
    """A service publishing under W2E_DATA_BASE_URI: the proposals' dataURIs are URLs, and
    an auditor given nothing but the chain downloads from them."""
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    n = make_net(tmp_path, "", funded_epochs=4)
    data = Path(n.settings.data_dir)
    data.mkdir(parents=True, exist_ok=True)
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(data))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}/"
        n.settings = n.settings.model_copy(update={"data_base_uri": base})
        for epoch in (1, 2):
            n.close(epoch)
            _accept(n)
        uris = [
            e.args["dataURI"]
            for e in c.read_events(n.distributor, n.deployment.block)
            if e.name == "RootProposed"
        ]
        assert uris == [f"{base}epoch-{e:08d}/manifest.json" for e in (1, 2)]
        report = audit(None, ChainView(n.distributor, n.deployment.block))
        assert report.ok, [str(m) for m in report.mismatches]
        assert report.source == "dataURI on chain" and len(report.epochs) == 2
        # Nothing listens any more: a clear error, not a traceback, and not a finding on the
        # data (DataUnavailable, the CLI's exit 3): a watchtower tries again.
        server.shutdown()
        server.server_close()
        with pytest.raises(DataUnavailable, match=r"cannot read http://127\.0\.0\.1:\d+/epoch-"):
            audit(None, ChainView(n.distributor, n.deployment.block))
    finally:
        server.shutdown()
        thread.join()
        n.store.close()

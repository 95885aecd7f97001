"""The independent auditor (issue 14): every root on-chain recomputed from the published
datasets alone, with the core's own rules; no database, no secret.

Entry point (stable; the watchtower and the benchmark call it):

    audit(source, chain, epochs=None, progress=None, *, workers=None) -> AuditReport

- `source`: a `DataSource`, the published files: `open_source(DIR_OR_URL)` for a folder or an
  http(s) base (the `<data dir>` of docs/protocol.md 9.2), or None to follow each proposal's
  `dataURI` on chain.
- `chain`: a `ChainView` of one RewardDistributor: `ChainView.connect(rpc_url, address,
  from_block)`, or `ChainView(distributor, from_block)` over an open
  `adapters.chain.Distributor`. It reads the events (again at every audit: a watchtower may
  keep one) and the views only.
- `epochs`: the epochs to audit in full (signatures included); None: all. Earlier epochs are
  replayed from their files (hashes, recomputation) without their signatures, since the
  state (watermarks, balances, carried pools, floor) must come from somewhere; later ones
  are not read, and their roots and claims not judged.
- `progress(description, done, total)`: called per manifest audited (None: silent).
- `workers`: processes verifying signatures (default: every core, the verify pool of
  `settlement.parallel`; small datasets stay in this process).
- `AuditReport`: `.ok` (no mismatch), `.mismatches` (`Mismatch(epoch, file, line, account,
  receipt, what, expected, found)`; `epoch` None: the chain as a whole; `file` "chain" for
  what the events say), `.suppressed` (mismatches of a kind beyond the first 20, counted),
  `.epochs` (`EpochSummary` per manifest audited, in publication order, with `on_chain`:
  "accepted", "pending", "revoked" or "not proposed"), `.to_dict()` / `.to_json()`.
- Raises `DataUnavailable` when a file cannot be read now (network, 5xx, 429): no verdict,
  try again; a file the server says is absent (404) or whose bytes differ is a mismatch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import itertools
import re
import shutil
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Final, Protocol

import numpy as np
import orjson

from settlement import parallel
from settlement.domain import credit, dataset, merkle, published
from settlement.domain.columns import U64, Cols, key, lookup, max_per_key
from settlement.domain.epochs import EpochClock
from settlement.domain.floor import correction_leaves, leaves_under_floor
from settlement.domain.receipts import Domain, Params, Rejected, verify
from settlement.domain.rewards import (
    CLASSES,
    ClassAmounts,
    EpochWeights,
    RewardParams,
    settle_weights,
)
from settlement.domain.wire import parse_wire
from settlement.errors import DataUnavailable, InputError, MalformedReceipt

Progress = Callable[[str, int, int], None]

ZERO: Final = dataset.ZERO_HASH
_MAX64: Final = 2**64 - 1
_SHOWN_PER_KIND: Final = 20  # mismatches of one (epoch, file, what) listed; the rest counted
_PART_BYTES: Final = 16 << 20  # a verify task's share of a big file
_INLINE_BYTES: Final = 2 << 20
_DROPPED: Final = (
    "(problems of the same kinds, counted)"  # below this the files are parsed and verified here
)
_BIG: Final = (
    dataset.DELIVERY_RECEIPTS,
    dataset.VIEW_RECEIPTS,
    dataset.DELIVERY_WATERMARKS,
    dataset.VIEW_WATERMARKS,
)
EPOCH_FILES: Final = frozenset(
    (
        *_BIG,
        dataset.QUARANTINE,
        dataset.REGISTRY_NODES,
        dataset.REGISTRY_CONTENT,
        dataset.REGISTRY_VIEWERS,
        dataset.ALLOCATIONS,
    )
)
RECOMPUTED_BALANCES: Final = "recomputed_balances"
ONCHAIN_CLAIMED: Final = "onchain_claimed"


# --- the report -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Mismatch:
    """One thing that is not as the published data and the rules say. `epoch` None: the
    chain as a whole; `file` a dataset file's name, `manifest.json` or `chain`."""

    epoch: int | None
    file: str | None
    line: int | None
    account: str | None
    receipt: str | None
    what: str
    expected: str | None = None
    found: str | None = None

    def __str__(self) -> str:
        where = ", ".join(
            p
            for p in (
                f"epoch {self.epoch}" if self.epoch is not None else "",
                self.file or "",
                f"line {self.line}" if self.line is not None else "",
                f"account {self.account}" if self.account else "",
                f"receipt {self.receipt}" if self.receipt else "",
            )
            if p
        )
        out = f"{where}: {self.what}" if where else self.what
        if self.expected is not None or self.found is not None:
            out += f" (expected {self.expected}, found {self.found})"
        return out


@dataclasses.dataclass(slots=True)
class EpochSummary:
    """One manifest audited: an epoch's, or a correction's (`kind`)."""

    epoch: int
    kind: str  # "epoch" or "correction"
    data_hash: str
    root: str
    cumulative_total: int
    receipts: int = 0
    signatures_checked: int = 0
    accounts: int = 0
    on_chain: str = "not proposed"  # "accepted", "pending", "revoked", "not proposed"
    mismatches: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.mismatches == 0


@dataclasses.dataclass(slots=True)
class AuditReport:
    chain_id: int
    distributor: str
    source: str
    mismatches: list[Mismatch] = dataclasses.field(default_factory=list)
    epochs: list[EpochSummary] = dataclasses.field(default_factory=list)
    suppressed: int = 0  # mismatches counted, not listed (beyond _SHOWN_PER_KIND of a kind)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.mismatches and not self.suppressed

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "chainId": self.chain_id,
            "distributor": self.distributor,
            "source": self.source,
            "seconds": round(self.seconds, 3),
            "mismatches": [dataclasses.asdict(m) for m in self.mismatches],
            "suppressed": self.suppressed,
            "epochs": [
                {**dataclasses.asdict(e), "cumulative_total": str(e.cumulative_total), "ok": e.ok}
                for e in self.epochs
            ],
        }

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())


# --- where the files are ------------------------------------------------------------------------


class DataSource(Protocol):
    """The published datasets under one base (docs/protocol.md 9.2), read-only."""

    description: str

    def fetch(self, relpath: str) -> Path | None:
        """A local file holding `relpath`'s bytes, or None when it is not published."""

    def list_corrections(self) -> list[str]:
        """Relative paths of correction manifests it can list (a folder can; HTTP cannot)."""


class FolderSource:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.description = str(self.root)

    def fetch(self, relpath: str) -> Path | None:
        path = self.root / relpath
        return path if path.is_file() else None

    def list_corrections(self) -> list[str]:
        base = self.root / "corrections"
        if not base.is_dir():
            return []
        return sorted(
            f"corrections/{d.name}/{dataset.MANIFEST}"
            for d in base.iterdir()
            if (d / dataset.MANIFEST).is_file()
        )


class HttpSource:
    """An http(s) base URL; each file is downloaded once into a temporary folder."""

    def __init__(self, base: str, timeout: float = 60.0) -> None:
        self.base = base.rstrip("/")
        self.description = self.base
        self.timeout = timeout
        self._dir = Path(tempfile.mkdtemp(prefix="w2e-audit-"))
        self._got: dict[str, Path | None] = {}

    def fetch(self, relpath: str) -> Path | None:
        if relpath in self._got:
            return self._got[relpath]
        url = f"{self.base}/{urllib.parse.quote(relpath)}"
        path = self._dir / relpath.replace("/", "__")
        # Only a 404 answers for the data (the file is not published); a refused or dropped
        # connection, a timeout, a 5xx or 429 says nothing about it, and must not become a
        # finding: DataUnavailable, so a watchtower tries again instead of revoking.
        try:
            with (
                urllib.request.urlopen(url, timeout=self.timeout) as response,
                open(path, "wb") as out,
            ):
                shutil.copyfileobj(response, out, 1 << 20)
                # A read in chunks ends quietly at a closed connection: a body cut short of
                # its Content-Length would otherwise be audited as the published file.
                length = response.headers.get("Content-Length", "")
                if length.isdigit() and out.tell() != int(length):
                    raise DataUnavailable(
                        f"cannot read {url}: {out.tell()} of {length} bytes, then the "
                        "connection closed"
                    )
            got: Path | None = path
        except urllib.error.HTTPError as error:
            if error.code != 404:
                raise DataUnavailable(f"cannot read {url}: HTTP {error.code}") from None
            got = None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
            # HTTPException: a malformed or cut answer (IncompleteRead of a chunked body).
            reason = str(getattr(error, "reason", None) or error) or type(error).__name__
            raise DataUnavailable(f"cannot read {url}: {reason}") from None
        self._got[relpath] = got
        return got

    def list_corrections(self) -> list[str]:
        return []

    def close(self) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)


def open_source(spec: str) -> DataSource:
    """A folder, or an http(s) base URL, holding `epoch-NNNNNNNN/` (and `corrections/`)."""
    scheme = urllib.parse.urlsplit(spec).scheme
    if scheme in ("http", "https"):
        return HttpSource(spec)
    if scheme not in ("", "file"):
        raise InputError(f"--data must be a folder or an http(s) URL, not {spec}")
    path = Path(urllib.parse.urlsplit(spec).path if scheme == "file" else spec)
    if not path.is_dir():
        raise InputError(f"no folder {path}: give the service's data dir or its public URL")
    return FolderSource(path)


_URI_TAIL: Final = re.compile(r"(?:^|/)((?:epoch-\d{8}|corrections/[^/]+)/manifest\.json)$")


def split_data_uri(uri: str) -> tuple[str, str]:
    """(base, relpath of the manifest) of a proposal's dataURI (a path or a URL)."""
    found = _URI_TAIL.search(uri)
    if found is None:
        raise InputError(f"dataURI {uri!r} does not end in epoch-NNNNNNNN/manifest.json")
    return uri[: found.start(1)].rstrip("/") or "/", found.group(1)


# --- the chain ----------------------------------------------------------------------------------


class ChainView:
    """What the auditor reads of one RewardDistributor: its events and views."""

    def __init__(self, distributor: Any, from_block: int = 0) -> None:
        self.distributor = distributor
        self.from_block = from_block
        self._events: list[Any] | None = None

    @classmethod
    def connect(cls, rpc_url: str, address: str, from_block: int = 0) -> ChainView:
        from settlement.adapters.chain import contracts, provider

        chain = provider.connect(rpc_url=rpc_url)
        distributor = contracts.Distributor(chain, address)
        if not distributor.has_code():
            raise InputError(f"no contract at {address} on chain {chain.chain_id}")
        return cls(distributor, from_block)

    @property
    def chain_id(self) -> int:
        return int(self.distributor.chain.chain_id)

    @property
    def address(self) -> str:
        return str(self.distributor.address).lower()

    def events(self, refresh: bool = False) -> list[Any]:
        """Every distributor event (adapters.chain.events.ChainEvent), in chain order."""
        if self._events is None or refresh:
            from settlement.adapters.chain.events import read_events

            self._events = read_events(self.distributor, self.from_block)
        return self._events

    def root(self) -> str:
        """The accepted root, 0x hex."""
        return str(self.distributor.root()).lower()


# --- the audit ----------------------------------------------------------------------------------


@dataclasses.dataclass(slots=True)
class _Manifest:
    relpath: str
    raw: bytes
    doc: dict[str, Any]
    data_hash: str

    @property
    def kind(self) -> str:
        return "correction" if "corrects" in self.doc else "epoch"

    @property
    def epoch(self) -> int:
        try:
            return int(self.doc.get("epoch", "0"))
        except (TypeError, ValueError):
            return 0

    @property
    def directory(self) -> str:
        return self.relpath.rsplit("/", 1)[0]


@dataclasses.dataclass(slots=True)
class _State:
    """What a close carries to the next, rebuilt from the published files."""

    dm_keys: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, "S72"))
    dm_bytes: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, U64))
    dm_segs: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, U64))
    vm_keys: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, "S52"))
    vm_watch: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, U64))
    vm_credited: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, U64))
    balances: dict[bytes, int] = dataclasses.field(default_factory=dict)
    carried: ClassAmounts = dataclasses.field(default_factory=ClassAmounts)
    last_epoch: int = 0
    last_epoch_doc: dict[str, Any] | None = None
    floors: dict[str, dict[bytes, int]] = dataclasses.field(default_factory=dict)
    # The recomputed leaves of each manifest audited, by its dataHash.
    leaves_by_hash: dict[str, dict[bytes, int]] = dataclasses.field(default_factory=dict)


class _Audit:
    def __init__(
        self,
        source: DataSource | None,
        chain: ChainView,
        epochs: Iterable[int] | None,
        progress: Progress | None,
        workers: int | None,
    ) -> None:
        self.source = source
        self.chain = chain
        self.only = None if epochs is None else set(epochs)
        self.progress = progress or (lambda d, i, n: None)
        self.workers = workers
        self.domain = Domain(chain.chain_id, bytes.fromhex(chain.address[2:]))
        self.report = AuditReport(
            chain.chain_id,
            chain.address,
            source.description if source is not None else "dataURI on chain",
        )
        self._kinds: dict[tuple[Any, ...], int] = {}
        self._evidence: dict[tuple[bytes, Params], Any] = {}
        # Mismatches of an epoch found while loading or checking the chain (not while its
        # manifest was audited): counted into its summary at the end.
        self._inside = False
        self._outside: dict[int, int] = {}
        # Each proposal's manifest as found at its dataURI (its hash may differ: reported).
        self._at_uri: dict[tuple[int, int], _Manifest] = {}
        self._sources: dict[str, DataSource] = {}

    # -- reporting ---------------------------------------------------------------------------

    def bad(
        self,
        epoch: int | None,
        file: str | None,
        what: str,
        expected: Any = None,
        found: Any = None,
        *,
        line: int | None = None,
        account: str | None = None,
        receipt: str | None = None,
    ) -> None:
        if not self._inside and epoch is not None:
            self._outside[epoch] = self._outside.get(epoch, 0) + 1
        kind = (epoch, file, what.split(":")[0])
        n = self._kinds[kind] = self._kinds.get(kind, 0) + 1
        if n > _SHOWN_PER_KIND:
            self.report.suppressed += 1
            return
        self.report.mismatches.append(
            Mismatch(
                epoch,
                file,
                line,
                account,
                receipt,
                what,
                None if expected is None else str(expected),
                None if found is None else str(found),
            )
        )

    # -- sources -----------------------------------------------------------------------------

    def _source_of(self, uri: str | None) -> DataSource:
        if self.source is not None:
            return self.source
        if uri is None:
            raise InputError("no --data and no proposal on chain: nothing says where the data is")
        base, _ = split_data_uri(uri)
        if base not in self._sources:
            self._sources[base] = open_source(base)
        return self._sources[base]

    def _read(self, source: DataSource, relpath: str) -> bytes | None:
        path = source.fetch(relpath)
        return None if path is None else path.read_bytes()

    def _load(self, source: DataSource, relpath: str) -> _Manifest | None:
        raw = self._read(source, relpath)
        if raw is None:
            return None
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError:
            doc = None
        if type(doc) is not dict:
            self.bad(None, relpath, "manifest is not a JSON object")
            doc = {}
        return _Manifest(relpath, raw, doc, "0x" + dataset.data_hash(raw).hex())

    # -- the run -----------------------------------------------------------------------------

    def run(self) -> AuditReport:
        try:
            return self._run()
        finally:
            for opened in self._sources.values():  # the HTTP downloads it made itself
                close = getattr(opened, "close", None)
                if close is not None:
                    close()

    def _run(self) -> AuditReport:
        t0 = time.perf_counter()
        self.progress("reading the chain", 0, 1)
        events = self.chain.events(refresh=True)  # a watchtower reuses its ChainView
        proposals = [e for e in events if e.name in ("RootProposed", "CorrectionProposed")]
        latest_uri = proposals[-1].args["dataURI"] if proposals else None
        source = self._source_of(latest_uri)
        manifests: dict[str, _Manifest] = {}

        def add(m: _Manifest | None) -> None:
            if m is not None:
                manifests.setdefault(m.data_hash, m)

        for p in proposals:
            try:
                _, rel = split_data_uri(p.args["dataURI"])
            except InputError as error:
                self.bad(p.args["epoch"], "chain", str(error))
                continue
            m = self._load(self._source_of(p.args["dataURI"]), rel)
            if m is not None:
                self._at_uri[(p.block_number, p.log_index)] = m
                if m.data_hash != p.args["dataHash"]:
                    self.bad(
                        m.epoch, rel,
                        f"keccak256(manifest.json) differs from the dataHash of {p.name} "
                        f"(block {p.block_number})",
                        p.args["dataHash"], m.data_hash,
                    )  # fmt: skip
            if m is None:
                self.bad(
                    p.args["epoch"], rel, "the manifest a proposal names is not published",
                    p.args["dataHash"], "no file",
                )  # fmt: skip
                continue
            add(m)
        top = max((p.args["epoch"] for p in proposals), default=0)
        e = 1
        while True:
            m = self._load(source, f"epoch-{e:08d}/{dataset.MANIFEST}")
            if m is None and e > top:
                break
            add(m)
            e += 1
        for rel in source.list_corrections():
            add(self._load(source, rel))
        chain = self._order(manifests, proposals)
        self.progress("auditing", 0, len(chain))
        state = _State()
        last_full = max(self.only) if self.only else None
        summaries: dict[str, EpochSummary] = {}
        for i, m in enumerate(chain):
            if last_full is not None and m.epoch > last_full:
                break
            t = time.perf_counter()
            before = len(self.report.mismatches) + self.report.suppressed
            self._inside = True
            full = self.only is None or m.epoch in self.only
            summary = EpochSummary(
                m.epoch,
                m.kind,
                m.data_hash,
                str(m.doc.get("root", "")),
                _int(m.doc.get("cumulativeTotal")),
            )
            if m.kind == "epoch":
                self._epoch(source, m, state, summary, full)
            else:
                self._correction(source, m, state, summary, events)
            summary.seconds = time.perf_counter() - t
            summary.mismatches = len(self.report.mismatches) + self.report.suppressed - before
            self._inside = False
            summaries[m.data_hash] = summary
            self.report.epochs.append(summary)
            self.progress(f"{m.kind} {m.epoch}", i + 1, len(chain))
        self._check_chain(events, manifests, summaries, state)
        for epoch, count in self._outside.items():
            mine = [x for x in self.report.epochs if x.epoch == epoch]
            mine.sort(key=lambda x: x.kind != "epoch")
            if mine:
                mine[0].mismatches += count
        self.report.seconds = time.perf_counter() - t0
        return self.report

    def _order(self, manifests: dict[str, _Manifest], proposals: list[Any]) -> list[_Manifest]:
        """The manifests in publication order: the prevManifestHash chain from the newest
        back to the first, each link checked."""
        if not manifests:
            return []
        named = {str(m.doc.get("prevManifestHash", "")) for m in manifests.values()}
        heads = [m for h, m in manifests.items() if h not in named]
        # The newest: the head whose chain holds the latest proposal, else the highest epoch.
        latest = proposals[-1].args["dataHash"] if proposals else None
        chains = []
        for head in heads:
            seq = [head]
            seen = {head.data_hash}
            while True:
                prev = str(seq[-1].doc.get("prevManifestHash", ""))
                if prev == ZERO or prev not in manifests or prev in seen:
                    break
                seen.add(prev)
                seq.append(manifests[prev])
            chains.append(seq)
        chains.sort(key=lambda s: (latest in {m.data_hash for m in s}, s[0].epoch, len(s)))
        best = chains[-1] if chains else []
        best.reverse()
        on_chain = {m.data_hash for m in best}
        first = best[0] if best else None
        if first is not None:
            prev = str(first.doc.get("prevManifestHash", ""))
            if prev != ZERO:
                # Which manifest it should have named: the one published just before it.
                want = self._expected_prev(first, manifests)
                self.bad(
                    first.epoch, first.relpath,
                    "broken manifest chain: prevManifestHash names no published manifest",
                    want, prev,
                )  # fmt: skip
        rest = sorted(
            (m for h, m in manifests.items() if h not in on_chain),
            key=lambda m: (m.epoch, m.kind == "correction"),
        )
        for m in rest:
            self.bad(
                m.epoch, m.relpath,
                "manifest is not on the prevManifestHash chain of the newest manifest",
                None, m.data_hash,
            )  # fmt: skip
        # Audit them too, in epoch order before the chain they failed to join.
        merged = sorted(rest + best, key=lambda m: (m.epoch, m.kind == "correction"))
        return merged if rest else best

    def _expected_prev(self, m: _Manifest, manifests: dict[str, _Manifest]) -> str:
        """The manifests that may have been published just before `m`: for an epoch's, the
        epoch before's or a correction at it; for a correction's, its epoch's or another
        correction at it."""
        if m.kind == "epoch" and m.epoch == 1:
            return ZERO
        at = m.epoch - 1 if m.kind == "epoch" else m.epoch
        options = [
            f"{o.data_hash} ({o.kind} {o.epoch})"
            for o in manifests.values()
            if o.epoch == at and o is not m
        ]
        return " or ".join(options) or f"a manifest of epoch {at}"

    # -- files ---------------------------------------------------------------------------------

    def _files(
        self, source: DataSource, m: _Manifest, wanted: frozenset[str], tree: bool
    ) -> dict[str, Path]:
        """The manifest's data files, each checked against its entry (sha256, size, rows)."""
        e = m.epoch
        out: dict[str, Path] = {}
        files = m.doc.get("files")
        if type(files) is not list:
            self.bad(e, dataset.MANIFEST, "manifest has no files list")
            return out
        names = [f.get("name") if type(f) is dict else None for f in files]
        expected = sorted(wanted | ({dataset.TREE} if tree else set()))
        if names != expected:
            self.bad(e, dataset.MANIFEST, "files listed", expected, names)
        counts = m.doc.get("counts")
        if counts != {f["name"]: f["rows"] for f in files if type(f) is dict and "name" in f}:
            self.bad(e, dataset.MANIFEST, "counts differ from the files' rows")
        for f in files:
            if type(f) is not dict or f.get("name") not in expected:
                continue
            name = f["name"]
            ext = "json" if name == dataset.TREE else "ndjson"
            rel = f"{m.directory}/{f.get('sha256')}.{ext}"
            path = self._fetch(source, rel)
            if path is None:
                self.bad(e, name, "file is not published", rel, "no file")
                continue
            digest, size, lines = _digest(path)
            if digest != f.get("sha256"):
                self.bad(
                    e, name, "sha256 of the file differs from the manifest", f.get("sha256"), digest
                )
            if str(size) != f.get("size"):
                self.bad(e, name, "size differs from the manifest", f.get("size"), size)
            if name != dataset.TREE and str(lines) != f.get("rows"):
                self.bad(
                    e, name, "line count differs from the manifest's rows", f.get("rows"), lines
                )
            out[name] = path
        return out

    def _fetch(self, source: DataSource, rel: str) -> Path | None:
        return source.fetch(rel)

    def _parse_big(
        self, files: dict[str, Path], m: _Manifest, params: Params, clock: EpochClock, full: bool
    ) -> dict[str, dict[str, np.ndarray]]:
        """The four big files as columns, parsed and (receipts, when `full`) verified on every
        core."""
        tasks: list[tuple[Any, ...]] = []
        owners: list[str] = []
        for name in _BIG:
            path = files.get(name)
            if path is None:
                continue
            judged = full and name in (dataset.DELIVERY_RECEIPTS, dataset.VIEW_RECEIPTS)
            for start, end, first in _parts(path):
                tasks.append(
                    (
                        str(path), start, end, first, name,
                        self.domain if judged else None, params if judged else None,
                        clock, m.epoch,
                    )
                )  # fmt: skip
                owners.append(name)
        # Small datasets stay in this process: starting the pool costs more than it saves.
        small = sum(t[2] - t[1] for t in tasks) < _INLINE_BYTES
        results = parallel.map_tasks(_parse_part, tasks, workers=1 if small else self.workers)
        parts: dict[str, list[dict[str, np.ndarray]]] = {n: [] for n in _BIG}
        for name, (cols, problems) in zip(owners, results, strict=True):
            parts[name].append(cols)
            for line, what, expected, found, account, receipt in problems:
                if what == _DROPPED:
                    self.report.suppressed += int(found or 0)
                    continue
                self.bad(
                    m.epoch,
                    name,
                    what,
                    expected,
                    found,
                    line=line,
                    account=account,
                    receipt=receipt,
                )
        out: dict[str, dict[str, np.ndarray]] = {}
        for name in _BIG:
            out[name] = _concat(parts[name], name)
        return out

    # -- one epoch ----------------------------------------------------------------------------

    def _epoch(
        self, source: DataSource, m: _Manifest, state: _State, s: EpochSummary, full: bool
    ) -> None:
        e = m.epoch
        doc = m.doc
        if tuple(sorted(doc)) != dataset.MANIFEST_FIELDS:
            self.bad(
                e, dataset.MANIFEST, "manifest fields", list(dataset.MANIFEST_FIELDS), sorted(doc)
            )
            return
        if doc["protocolVersion"] != dataset.PROTOCOL_VERSION:
            self.bad(
                e,
                dataset.MANIFEST,
                "protocolVersion",
                dataset.PROTOCOL_VERSION,
                doc["protocolVersion"],
            )
        if e != state.last_epoch + 1:
            self.bad(
                e, dataset.MANIFEST, "epoch does not follow the one before", state.last_epoch + 1, e
            )
        try:
            params, rparams, clock, allowlist = self._parameters(m)
        except (KeyError, TypeError, ValueError) as error:
            self.bad(e, dataset.MANIFEST, f"parameters unreadable: {error}")
            return
        for field, value in (
            ("start", clock.start(e)),
            ("end", clock.end(e)),
            ("cutoff", clock.cutoff(e)),
        ):
            if doc[field] != str(value):
                self.bad(e, dataset.MANIFEST, f"{field} is not the epoch's", value, doc[field])
        tree_expected = doc["root"] != ZERO
        files = self._files(source, m, EPOCH_FILES, tree_expected)
        if set(files) != (EPOCH_FILES | ({dataset.TREE} if tree_expected else set())):
            state.last_epoch = e
            return
        big = self._parse_big(files, m, params, clock, full)
        d, v = big[dataset.DELIVERY_RECEIPTS], big[dataset.VIEW_RECEIPTS]
        dm, vm = big[dataset.DELIVERY_WATERMARKS], big[dataset.VIEW_WATERMARKS]
        s.receipts = len(d["viewer"]) + len(v["viewer"])
        s.signatures_checked = s.receipts if full else 0
        for name, cols, keys in (
            (dataset.DELIVERY_RECEIPTS, d, ("viewer", "session_id", "node")),
            (dataset.VIEW_RECEIPTS, v, ("viewer", "session_id")),
            (dataset.DELIVERY_WATERMARKS, dm, ("viewer", "session_id", "node")),
            (dataset.VIEW_WATERMARKS, vm, ("viewer", "session_id")),
        ):
            self._sorted(e, name, key(*(cols[k] for k in keys)))
        nodes, content, _viewers = self._registries(e, files, allowlist)
        # Section 3 row 5 (nodes are never removed from the registry, only deactivated, and a
        # verdict is final: a node must be in the snapshot, active or not) and row 6.
        if len(d["node"]):
            known = np.array(sorted(nodes), dtype="S20") if nodes else np.zeros(0, "S20")
            _, found = lookup(known, key(d["node"]))
            for i in np.flatnonzero(~found)[:_SHOWN_PER_KIND]:
                self.bad(
                    e, dataset.DELIVERY_RECEIPTS, "node is not in the registry snapshot (UNKNOWN_NODE)",
                    None, "0x" + d["node"][i].tobytes().hex(), line=int(i) + 1,
                    account="0x" + d["viewer"][i].tobytes().hex(),
                    receipt="0x" + d["session_id"][i].tobytes().hex(),
                )  # fmt: skip
        quarantined = self._quarantine(e, files, params)
        sessions = self._sessions(e, d, v, quarantined)
        self._continuity(e, state, dm, vm, d, v, sessions)
        cc = self._credit(e, d, v, dm, vm, sessions, clock, rparams)
        if cc is None:
            state.last_epoch = e
            return
        creators = dict(content)
        weights = cc.weights(
            rparams.max_bytes_per_viewer, rparams.max_watch_seconds_per_epoch, creators
        )
        rewards = settle_weights(
            EpochWeights(
                node=weights.node,
                viewer=weights.viewer,
                creator=weights.creator,
                capped_bytes=weights.capped_bytes,
                capped_watch=weights.capped_watch,
            ),
            creators,
            state.balances,
            state.carried,
            rparams,
        )
        self._allocations(e, files, rewards.allocations)
        pools = {
            cls: {
                "emitted": str(rewards.pools.emitted.get(cls)),
                "carriedIn": str(rewards.pools.carried_in.get(cls)),
                "allocated": str(rewards.pools.allocated.get(cls)),
                "carriedOut": str(rewards.pools.carried_out.get(cls)),
            }
            for cls in CLASSES
        }
        for cls in CLASSES:
            got = doc["pools"].get(cls) if type(doc["pools"]) is dict else None
            if got != pools[cls]:
                self.bad(
                    e,
                    dataset.MANIFEST,
                    f"pools.{cls} differ from the recomputation",
                    pools[cls],
                    got,
                )
        floor_hash = str(doc["floor"])
        floor: dict[bytes, int] = {}
        if floor_hash != ZERO:
            if floor_hash not in state.floors:
                self.bad(
                    e, dataset.MANIFEST,
                    "floor names no correction published before this close",
                    " or ".join([ZERO, *state.floors]) , floor_hash,
                )  # fmt: skip
            floor = state.floors.get(floor_hash, {})
        leaves = leaves_under_floor(rewards.balances, floor)
        self._tree(e, m, files, leaves, s)
        # The state the next close starts from.
        state.balances = rewards.balances
        state.carried = rewards.pools.carried_out
        self._advance_marks(state, cc)
        state.last_epoch = e
        state.last_epoch_doc = doc
        state.leaves_by_hash[m.data_hash] = leaves

    def _parameters(self, m: _Manifest) -> tuple[Params, RewardParams, EpochClock, bool]:
        p = m.doc["parameters"]
        e = m.epoch
        if p["chainId"] != str(self.chain.chain_id):
            self.bad(
                e,
                dataset.MANIFEST,
                "dataset of another chain: parameters.chainId",
                self.chain.chain_id,
                p["chainId"],
            )
        if p["distributor"] != self.chain.address:
            self.bad(
                e, dataset.MANIFEST, "dataset of another distributor: parameters.distributor",
                self.chain.address, p["distributor"],
            )  # fmt: skip
        n = {k: int(v) for k, v in p.items() if k not in ("distributor", "viewerAllowlist")}
        params = Params(
            genesis=n["genesis"],
            clock_skew=n["clockSkew"],
            max_age=n["maxAge"],
            max_session_age=n["maxSessionAge"],
            segment_seconds=n["segmentSeconds"],
            max_bitrate=n["maxBitrate"],
            max_lead_seconds=n["maxLeadSeconds"],
            min_segment_bytes=n["minSegmentBytes"],
        )
        rparams = RewardParams(
            emission=n["emission"],
            bps_node=n["bpsNode"],
            bps_viewer=n["bpsViewer"],
            segment_seconds=n["segmentSeconds"],
            max_bytes_per_viewer=n["maxBytesPerViewer"],
            max_watch_seconds_per_epoch=n["maxWatchSecondsPerEpoch"],
        )
        clock = EpochClock(n["genesis"], n["epochSeconds"], n["graceSeconds"])
        return params, rparams, clock, p["viewerAllowlist"] is True

    def _sorted(self, e: int, name: str, keys: np.ndarray) -> None:
        if len(keys) > 1:
            bad = np.flatnonzero(~(keys[1:] > keys[:-1]))
            if len(bad):
                self.bad(
                    e,
                    name,
                    "lines are not in ascending key order, or repeat a key",
                    line=int(bad[0]) + 2,
                )

    def _registries(
        self, e: int, files: dict[str, Path], allowlist: bool
    ) -> tuple[set[bytes], list[tuple[bytes, bytes]], list[bytes]]:
        nodes: set[bytes] = set()
        content: list[tuple[bytes, bytes]] = []
        viewers: list[bytes] = []
        checks: tuple[tuple[str, Callable[[dict[str, Any]], str], Callable[[dict[str, Any]], str]], ...] = (
            (dataset.REGISTRY_NODES,
             lambda o: dataset.node_line(_b(o["address"]), o["label"], o["active"]),
             lambda o: o["address"]),
            (dataset.REGISTRY_CONTENT,
             lambda o: dataset.content_line(_b(o["contentId"]), _b(o["creator"])),
             lambda o: o["contentId"]),
            (dataset.REGISTRY_VIEWERS, lambda o: dataset.viewer_line(_b(o["address"])),
             lambda o: o["address"]),
        )  # fmt: skip
        for name, fmt, sort_key in checks:
            data = files[name].read_bytes()
            fast = _fixed_registry(name, data)
            if fast is not None:
                if name == dataset.REGISTRY_CONTENT:
                    content = fast
                else:
                    viewers = fast
                continue
            previous = None
            for i, raw in enumerate(data.split(b"\n")[:-1], 1):
                try:
                    o = orjson.loads(raw)
                    line = fmt(o)
                except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as error:
                    self.bad(e, name, f"line is malformed: {error}", line=i)
                    continue
                if line.encode() != raw + b"\n":
                    self.bad(
                        e,
                        name,
                        "line is not in canonical form",
                        line.rstrip("\n"),
                        raw.decode(errors="replace"),
                        line=i,
                    )
                k = sort_key(o)
                if previous is not None and not k > previous:
                    self.bad(
                        e, name, "lines are not in ascending key order, or repeat a key", line=i
                    )
                previous = k
                if name == dataset.REGISTRY_NODES:
                    nodes.add(_b(o["address"]))
                elif name == dataset.REGISTRY_CONTENT:
                    content.append((_b(o["contentId"]), _b(o["creator"])))
                else:
                    viewers.append(_b(o["address"]))
        return nodes, content, viewers

    def _quarantine(self, e: int, files: dict[str, Path], params: Params) -> set[bytes]:
        """The quarantined sessions (viewer + sessionId), each shown by two valid signed
        receipts that conflict (PROTOCOL 3). Each close republishes the whole set: a line
        is judged once and its findings repeated for every epoch that publishes it."""
        out: set[bytes] = set()
        name = dataset.QUARANTINE
        for i, raw in enumerate(files[name].read_bytes().split(b"\n")[:-1], 1):
            memo = (raw, params)
            found = self._evidence.get(memo)
            if found is None:
                found = self._evidence[memo] = self._judge_evidence(raw, params)
            session, account, receipt, problems = found
            if session is not None:
                out.add(session)
            for what, expected, got in problems:
                self.bad(e, name, what, expected, got, line=i, account=account, receipt=receipt)
        return out

    def _judge_evidence(
        self, raw: bytes, params: Params
    ) -> tuple[bytes | None, str | None, str | None, list[tuple[str, str | None, str | None]]]:
        """(session key, viewer, sessionId, problems) of one quarantine line."""
        problems: list[tuple[str, str | None, str | None]] = []
        try:
            o = orjson.loads(raw)
            viewer, sid = _b(o["viewer"]), _b(o["sessionId"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None, None, None, [("line is malformed", None, None)]
        if dataset.canonical_bytes(o) != raw:
            problems.append(("line is not in canonical form", None, None))
        receipts = []
        for side in ("evidenceStored", "evidenceReceived"):
            ev = o.get(side)
            if ev is None:
                problems.append(
                    (f"quarantine without evidence: {side} is null", "a signed receipt", "null")
                )
                continue
            try:
                r = parse_wire(ev)
            except (MalformedReceipt, InputError) as error:
                problems.append((f"{side} is not a receipt: {error}", None, None))
                continue
            if r.viewer != viewer or r.session_id != sid:
                problems.append((f"{side} is of another session", None, None))
            verdict = verify(r, self.domain, params, r.issued_at)
            if type(verdict) is Rejected:
                problems.append(
                    (
                        f"{side} fails {verdict.reason.value}: {verdict.detail}",
                        "a valid signature",
                        verdict.reason.value,
                    )
                )
            receipts.append(r)
        if len(receipts) == 2 and not _conflict(*receipts):
            problems.append(("the two evidence receipts do not conflict", None, None))
        return viewer + sid, o["viewer"], o["sessionId"], problems

    def _sessions(
        self, e: int, d: dict[str, np.ndarray], v: dict[str, np.ndarray], quarantined: set[bytes]
    ) -> Cols:
        """The sessions of the published receipts: one contentId and startedAt each."""
        viewer = np.concatenate([d["viewer"], v["viewer"]])
        sid = np.concatenate([d["session_id"], v["session_id"]])
        cid = np.concatenate([d["content_id"], v["content_id"]])
        started = np.concatenate([d["started_at"], v["started_at"]])
        skeys = key(viewer, sid)
        order = np.argsort(skeys, kind="stable")
        sk = skeys[order]
        first = np.ones(len(sk), bool)
        first[1:] = sk[1:] != sk[:-1]
        group = np.cumsum(first) - 1
        rep = order[first][group]  # each row's session's first row
        differs = (cid[order] != cid[rep]).any(axis=1) | (started[order] != started[rep])
        nd = len(d["viewer"])
        for i in np.flatnonzero(differs)[:_SHOWN_PER_KIND]:
            row = int(order[i])
            name = dataset.DELIVERY_RECEIPTS if row < nd else dataset.VIEW_RECEIPTS
            self.bad(
                e, name, "receipts of one session name another contentId or startedAt (a CONFLICT)",
                line=(row if row < nd else row - nd) + 1, account="0x" + viewer[row].tobytes().hex(),
                receipt="0x" + sid[row].tobytes().hex(),
            )  # fmt: skip
        if quarantined:
            q = np.array(sorted(quarantined), dtype="S52")
            _, hit = lookup(q, sk[first])
            for i in np.flatnonzero(hit)[:_SHOWN_PER_KIND]:
                row = int(order[first][i])
                self.bad(
                    e, dataset.DELIVERY_RECEIPTS if row < nd else dataset.VIEW_RECEIPTS,
                    "a quarantined session is credited", "no receipt", "a receipt",
                    account="0x" + viewer[row].tobytes().hex(), receipt="0x" + sid[row].tobytes().hex(),
                )  # fmt: skip
        rows = order[first]
        return Cols(
            viewer=viewer[rows],
            session_id=sid[rows],
            content_id=cid[rows],
            started_at=started[rows],
            quarantined_at=np.full(len(rows), _MAX64, U64),
        )

    def _continuity(
        self,
        e: int,
        state: _State,
        dm: dict[str, np.ndarray],
        vm: dict[str, np.ndarray],
        d: dict[str, np.ndarray],
        v: dict[str, np.ndarray],
        sessions: Cols,
    ) -> None:
        """The previous watermarks published are those the closes before left, and they are
        all there: every delivery key of each credited session, one view line each."""
        skeys = key(sessions["viewer"], sessions["session_id"])  # sorted, unique
        # delivery_watermarks: values continue
        mkeys = key(dm["viewer"], dm["session_id"], dm["node"])
        at, found = lookup(state.dm_keys, mkeys)
        wb = np.where(found, state.dm_bytes[at] if len(state.dm_bytes) else U64(0), U64(0))
        ws = np.where(found, state.dm_segs[at] if len(state.dm_segs) else U64(0), U64(0))
        name = dataset.DELIVERY_WATERMARKS
        for i in np.flatnonzero((wb != dm["bytes_served"]) | (ws != dm["segments"]))[
            :_SHOWN_PER_KIND
        ]:
            self.bad(
                e, name, "watermark does not continue from the closes before",
                f"{wb[i]} bytes, {ws[i]} segments", f"{dm['bytes_served'][i]} bytes, {dm['segments'][i]} segments",
                line=int(i) + 1, account=_hex(dm["viewer"][i]),
                receipt=f"{_hex(dm['session_id'][i])}/node {_hex(dm['node'][i])}",
            )  # fmt: skip
        # every line's session is credited; every key of a credited session is there
        _, in_s = lookup(skeys, key(dm["viewer"], dm["session_id"]))
        for i in np.flatnonzero(~in_s)[:_SHOWN_PER_KIND]:
            self.bad(e, name, "watermark line of a session with no included key", line=int(i) + 1,
                     account=_hex(dm["viewer"][i]), receipt=_hex(dm["session_id"][i]))  # fmt: skip
        if len(state.dm_keys) and len(skeys):
            prefix = _prefix(state.dm_keys, 52)
            _, of_credited = lookup(skeys, prefix)
            need = state.dm_keys[of_credited]
            _, there = lookup(np.sort(mkeys), need)
            for k in need[~there][:_SHOWN_PER_KIND]:
                raw = k.ljust(72, b"\0")
                self.bad(
                    e, name, "a delivery key of a credited session is missing (its watermark counts in segments_cum)",
                    "a line", "none", account="0x" + raw[:20].hex(),
                    receipt=f"0x{raw[20:52].hex()}/node 0x{raw[52:].hex()}",
                )  # fmt: skip
        dkeys = np.sort(key(d["viewer"], d["session_id"], d["node"]))
        _, has_mark = lookup(np.sort(mkeys), dkeys)
        if (~has_mark).any():
            self.bad(e, name, "an included delivery key has no previous-watermark line",
                     "a line per delivery receipt", f"{int((~has_mark).sum())} missing")  # fmt: skip
        # view_watermarks
        name = dataset.VIEW_WATERMARKS
        vkeys = key(vm["viewer"], vm["session_id"])
        at, found = lookup(state.vm_keys, vkeys)
        pw = np.where(found, state.vm_watch[at] if len(state.vm_watch) else U64(0), U64(0))
        pc = np.where(found, state.vm_credited[at] if len(state.vm_credited) else U64(0), U64(0))
        for i in np.flatnonzero((pw != vm["watch_seconds"]) | (pc != vm["credited"]))[
            :_SHOWN_PER_KIND
        ]:
            self.bad(
                e, name, "view watermark or credited does not continue from the closes before",
                f"watchSeconds {pw[i]}, credited {pc[i]}",
                f"watchSeconds {vm['watch_seconds'][i]}, credited {vm['credited'][i]}",
                line=int(i) + 1, account=_hex(vm["viewer"][i]), receipt=_hex(vm["session_id"][i]),
            )  # fmt: skip
        if len(vkeys) != len(skeys) or not np.array_equal(np.sort(vkeys), skeys):
            self.bad(
                e, name, "one line per session with an included key",
                f"{len(skeys)} sessions", f"{len(vkeys)} lines",
            )  # fmt: skip

    def _credit(
        self,
        e: int,
        d: dict[str, np.ndarray],
        v: dict[str, np.ndarray],
        dm: dict[str, np.ndarray],
        vm: dict[str, np.ndarray],
        sessions: Cols,
        clock: EpochClock,
        rparams: RewardParams,
    ) -> credit.CloseCredit | None:
        """PROTOCOL 4 by `domain.credit`, as the close runs it: the published receipts are
        the candidates; a key with a watermark line and no receipt is not included, its
        candidate standing at its watermark."""
        nd, nv = len(d["viewer"]), len(v["viewer"])
        mkeys = key(dm["viewer"], dm["session_id"], dm["node"])
        _, has = lookup(np.sort(key(d["viewer"], d["session_id"], d["node"])), mkeys)
        extra = np.flatnonzero(~has)
        deliveries = Cols(
            viewer=np.concatenate([d["viewer"], dm["viewer"][extra]]),
            session_id=np.concatenate([d["session_id"], dm["session_id"][extra]]),
            node=np.concatenate([d["node"], dm["node"][extra]]),
            bucket=np.concatenate([d["bucket"], np.full(len(extra), e, U64)]),
            bytes_served=np.concatenate([d["bytes_served"], dm["bytes_served"][extra]]),
            segments=np.concatenate([d["segments"], dm["segments"][extra]]),
        )
        vkeys = key(vm["viewer"], vm["session_id"])
        _, has = lookup(np.sort(key(v["viewer"], v["session_id"])), vkeys)
        extra = np.flatnonzero(~has)
        views = Cols(
            viewer=np.concatenate([v["viewer"], vm["viewer"][extra]]),
            session_id=np.concatenate([v["session_id"], vm["session_id"][extra]]),
            bucket=np.concatenate([v["bucket"], np.full(len(extra), e, U64)]),
            watch_seconds=np.concatenate([v["watch_seconds"], vm["watch_seconds"][extra]]),
        )
        delivery_marks = Cols(
            viewer=dm["viewer"], session_id=dm["session_id"], node=dm["node"],
            bytes_served=dm["bytes_served"], segments=dm["segments"],
        )  # fmt: skip
        view_marks = Cols(
            viewer=vm["viewer"], session_id=vm["session_id"],
            watch_seconds=vm["watch_seconds"], credited=vm["credited"],
        )  # fmt: skip
        cc = credit.credit_epoch(
            deliveries, views, sessions, delivery_marks, view_marks,
            now=clock.cutoff(e), segment_seconds=rparams.segment_seconds,
        )  # fmt: skip
        # Every published receipt is an included key's candidate (section 4).
        dk = cc.delivery
        real = dk.row < nd
        for i in np.flatnonzero(real & ~dk.included)[:_SHOWN_PER_KIND]:
            row = int(dk.row[i])
            self.bad(
                e, dataset.DELIVERY_RECEIPTS, "published receipt is not above its watermark (not included)",
                f"above {dk.mark_bytes[i]} bytes, {dk.mark_segments[i]} segments",
                f"{dk.bytes_served[i]} bytes, {dk.segments[i]} segments", line=row + 1,
                account=_hex(d["viewer"][row]), receipt=f"{_hex(d['session_id'][row])}/node {_hex(d['node'][row])}",
            )  # fmt: skip
        if int(real.sum()) != nd:
            self.bad(
                e,
                dataset.DELIVERY_RECEIPTS,
                "receipts of sessions the close could not credit",
                nd,
                int(real.sum()),
            )
        vk = cc.view
        real = vk.row < nv
        for i in np.flatnonzero(real & ~vk.included)[:_SHOWN_PER_KIND]:
            row = int(vk.row[i])
            self.bad(
                e, dataset.VIEW_RECEIPTS, "published receipt is not above its watermark (not included)",
                f"above {vk.mark_watch[i]} s", f"{v['watch_seconds'][row]} s", line=row + 1,
                account=_hex(v["viewer"][row]), receipt=_hex(v["session_id"][row]),
            )  # fmt: skip
        return cc

    def _allocations(
        self, e: int, files: dict[str, Path], allocations: dict[str, dict[bytes, int]]
    ) -> None:
        name = dataset.ALLOCATIONS
        rows = sorted((a, cls, amount) for cls in CLASSES for a, amount in allocations[cls].items())
        want = "".join(dataset.allocation_line(a, cls, amount) for a, cls, amount in rows).encode()
        got = files[name].read_bytes()
        if want == got:
            return
        expected = {("0x" + a.hex(), cls): amount for a, cls, amount in rows}
        seen: set[tuple[str, str]] = set()
        for i, raw in enumerate(got.split(b"\n")[:-1], 1):
            try:
                o = orjson.loads(raw)
                k = (o["account"], o["class"])
                amount = int(o["amount"])
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                self.bad(e, name, "line is malformed", line=i)
                continue
            seen.add(k)
            if k not in expected:
                self.bad(e, name, f"account earns nothing in class {k[1]} by the recomputation",
                         "no line", amount, line=i, account=k[0])  # fmt: skip
            elif expected[k] != amount:
                self.bad(e, name, f"{k[1]} allocation differs from the recomputation",
                         expected[k], amount, line=i, account=k[0])  # fmt: skip
        for k, amount in expected.items():
            if k not in seen:
                self.bad(e, name, f"{k[1]} allocation missing", amount, "no line", account=k[0])
        if {k for k in expected} == seen:
            self.bad(e, name, "file differs from the recomputation's bytes (order or form)",
                     hashlib.sha256(want).hexdigest(), hashlib.sha256(got).hexdigest())  # fmt: skip

    def _tree(
        self,
        e: int,
        m: _Manifest,
        files: dict[str, Path],
        leaves: dict[bytes, int],
        s: EpochSummary,
    ) -> merkle.MerkleTree | None:
        tree = merkle.tree_for_balances(leaves)
        root = merkle.root_of(tree)
        total = sum(leaves.values())
        s.accounts = len(leaves)
        if m.doc.get("root") != root:
            self.bad(
                e,
                dataset.MANIFEST,
                "root differs from the recomputed tree",
                root,
                m.doc.get("root"),
            )
        if m.doc.get("cumulativeTotal") != str(total):
            self.bad(e, dataset.MANIFEST, "cumulativeTotal differs from the sum of the recomputed leaves",
                     total, m.doc.get("cumulativeTotal"))  # fmt: skip
        path = files.get(dataset.TREE)
        if tree is None:
            if path is not None:
                self.bad(e, dataset.TREE, "a tree dump with no positive leaf")
            return None
        if path is None:
            self.bad(e, dataset.TREE, "no tree dump", "a dump", "none")
            return tree
        got = path.read_bytes()
        if got == tree.dump_json():
            return tree
        try:
            published_tree = merkle.MerkleTree.load(got)
            values = dict(published_tree.values)
        except (InputError, ValueError, KeyError, TypeError) as error:
            self.bad(e, dataset.TREE, f"tree dump is not a standard-v1 dump: {error}")
            return tree
        mine = dict(tree.values)
        for account in sorted(set(values) | set(mine)):
            if values.get(account) != mine.get(account):
                self.bad(e, dataset.TREE, "leaf differs from the recomputation",
                         mine.get(account, "no leaf"), values.get(account, "no leaf"), account=account)  # fmt: skip
        if values == mine:
            self.bad(e, dataset.TREE, "dump bytes differ from OpenZeppelin's for the same leaves",
                     hashlib.sha256(tree.dump_json()).hexdigest(), hashlib.sha256(got).hexdigest())  # fmt: skip
        return tree

    def _advance_marks(self, state: _State, cc: credit.CloseCredit) -> None:
        dw = cc.delivery_watermarks().all()
        k = np.concatenate([state.dm_keys, key(dw["viewer"], dw["session_id"], dw["node"])])
        state.dm_keys, state.dm_bytes, state.dm_segs = max_per_key(
            k,
            np.concatenate([state.dm_bytes, dw["bytes_served"].astype(U64)]),
            np.concatenate([state.dm_segs, dw["segments"].astype(U64)]),
        )
        vw = cc.view_watermarks().all()
        k = np.concatenate([state.vm_keys, key(vw["viewer"], vw["session_id"])])
        state.vm_keys, state.vm_watch, state.vm_credited = max_per_key(
            k,
            np.concatenate([state.vm_watch, vw["watch_seconds"].astype(U64)]),
            np.concatenate([state.vm_credited, vw["credited"].astype(U64)]),
        )

    # -- a correction --------------------------------------------------------------------------

    def _correction(
        self, source: DataSource, m: _Manifest, state: _State, s: EpochSummary, events: list[Any]
    ) -> None:
        e = m.epoch
        doc = m.doc
        want_fields = tuple(sorted((*dataset.MANIFEST_FIELDS, *dataset.CORRECTION_FIELDS)))
        if tuple(sorted(doc)) != want_fields:
            self.bad(
                e, dataset.MANIFEST, "correction manifest fields", list(want_fields), sorted(doc)
            )
            return
        if e != state.last_epoch:
            self.bad(
                e,
                dataset.MANIFEST,
                "a correction's epoch is the last closed epoch",
                state.last_epoch,
                e,
            )
        last = state.last_epoch_doc or {}
        for field in ("start", "end", "cutoff", "parameters", "pools"):
            if doc[field] != last.get(field):
                self.bad(
                    e,
                    dataset.MANIFEST,
                    f"correction's {field} differs from epoch {state.last_epoch}'s",
                )
        files = self._files(
            source, m, frozenset((RECOMPUTED_BALANCES, ONCHAIN_CLAIMED)), doc["root"] != ZERO
        )
        if RECOMPUTED_BALANCES not in files or ONCHAIN_CLAIMED not in files:
            return
        # recomputed_balances: the auditor's own balances after the close of e
        want = "".join(
            dataset.canonical_line({"account": a, "amount": n})
            for a, n in sorted(state.balances.items()) if n > 0
        ).encode()  # fmt: skip
        got = files[RECOMPUTED_BALANCES].read_bytes()
        if want != got:
            theirs = {o["account"]: int(o["amount"]) for o in published.parse_lines(got)}
            mine = {"0x" + a.hex(): n for a, n in state.balances.items() if n > 0}
            for a in sorted(set(theirs) | set(mine)):
                if theirs.get(a) != mine.get(a):
                    self.bad(e, RECOMPUTED_BALANCES, "balance differs from the recomputation",
                             mine.get(a, "no line"), theirs.get(a, "no line"), account=a)  # fmt: skip
        # onchain_claimed: Claimed events up to claimedAtBlock
        at_block = _int(doc["claimedAtBlock"])
        claimed: dict[str, int] = {}
        for ev in events:
            if ev.name == "Claimed" and ev.block_number <= at_block:
                claimed[ev.args["account"]] = ev.args["cumulative"]
        want = "".join(
            dataset.canonical_line({"account": a, "claimed": n}) for a, n in sorted(claimed.items())
        ).encode()
        got = files[ONCHAIN_CLAIMED].read_bytes()
        theirs = {o["account"]: int(o["claimed"]) for o in published.parse_lines(got)}
        if want != got:
            for a in sorted(set(theirs) | set(claimed)):
                if theirs.get(a) != claimed.get(a):
                    self.bad(e, ONCHAIN_CLAIMED, f"claimed at block {at_block} differs from the Claimed events",
                             claimed.get(a, "no line"), theirs.get(a, "no line"), account=a)  # fmt: skip
        leaves = correction_leaves(state.balances, {_b(a): n for a, n in claimed.items()})
        self._tree(e, m, files, leaves, s)
        state.floors[m.data_hash] = leaves
        state.leaves_by_hash[m.data_hash] = leaves

    # -- the chain -----------------------------------------------------------------------------

    def _check_chain(
        self,
        events: list[Any],
        manifests: dict[str, _Manifest],
        summaries: dict[str, EpochSummary],
        state: _State,
    ) -> None:
        """Roots and totals against the events, the floor in force at each proposal, and
        no Claimed above the account's leaf."""
        accepted_floor = ZERO  # dataHash of the last accepted correction
        paused_at: int | None = None  # block of the pause in force
        pending: Any = None
        current: tuple[str, dict[bytes, int] | None] | None = None
        previous: tuple[str, dict[bytes, int] | None] | None = None
        for ev in events:
            a = ev.args
            if ev.name in ("RootProposed", "CorrectionProposed"):
                pending = ev
                m = manifests.get(a["dataHash"]) or self._at_uri.get(
                    (ev.block_number, ev.log_index)
                )
                s = summaries.get(m.data_hash) if m is not None else None
                if m is None:
                    self.bad(a["epoch"], "chain", f"{ev.name} dataHash is keccak256 of no published manifest",
                             None, a["dataHash"])  # fmt: skip
                    continue
                if s is not None:
                    s.on_chain = "pending"
                if self.only is not None and m.epoch not in self.only:
                    continue
                if m.doc.get("root") != a["root"]:
                    self.bad(m.epoch, "chain", f"{ev.name} root differs from the manifest's (block {ev.block_number})",
                             m.doc.get("root"), a["root"])  # fmt: skip
                if m.doc.get("cumulativeTotal") != str(a["cumulativeTotal"]):
                    self.bad(m.epoch, "chain", f"{ev.name} cumulativeTotal differs from the manifest's",
                             m.doc.get("cumulativeTotal"), a["cumulativeTotal"])  # fmt: skip
                if m.epoch != a["epoch"]:
                    self.bad(
                        m.epoch,
                        "chain",
                        f"{ev.name} epoch differs from the manifest's",
                        m.epoch,
                        a["epoch"],
                    )
                if (ev.name == "CorrectionProposed") != (m.kind == "correction"):
                    self.bad(m.epoch, "chain", f"{ev.name} names a manifest of kind {m.kind}")
                if ev.name == "RootProposed" and m.doc.get("floor") != accepted_floor:
                    self.bad(m.epoch, "chain", "proposed under another floor than the one in force",
                             accepted_floor, m.doc.get("floor"))  # fmt: skip
                if ev.name == "CorrectionProposed":
                    at = _int(m.doc.get("claimedAtBlock"))
                    if paused_at is None or not paused_at <= at < ev.block_number:
                        self.bad(m.epoch, dataset.MANIFEST,
                                 "claimedAtBlock is not a block of the pause the correction was proposed in",
                                 f"in [{paused_at}, {ev.block_number})", at)  # fmt: skip
                    if m.doc.get("floor") != accepted_floor:
                        self.bad(m.epoch, dataset.MANIFEST, "a correction's floor names the floor it replaces",
                                 accepted_floor, m.doc.get("floor"))  # fmt: skip
                    replaced = _accepted_hash(current, manifests)
                    if replaced is not None and m.doc.get("corrects") != replaced:
                        self.bad(m.epoch, dataset.MANIFEST, "corrects is not the dataHash of the accepted root",
                                 replaced, m.doc.get("corrects"))  # fmt: skip
            elif ev.name == "RootAccepted":
                if pending is None or pending.args["root"] != a["root"]:
                    self.bad(
                        a["epoch"], "chain", "RootAccepted of a root not pending", None, a["root"]
                    )
                    continue
                # What the account may claim: its leaf as recomputed from the data the
                # proposal names (a root that is not that data's earns it nothing more).
                pm = manifests.get(pending.args["dataHash"]) or self._at_uri.get(
                    (pending.block_number, pending.log_index)
                )
                leaves = state.leaves_by_hash.get(pm.data_hash) if pm is not None else None
                if pm is not None and summaries.get(pm.data_hash) is not None:
                    summaries[pm.data_hash].on_chain = "accepted"
                if pending.name == "CorrectionProposed":
                    accepted_floor = pending.args["dataHash"]
                    previous = None
                else:
                    previous = current
                current = (a["root"], leaves)
                self._current_hash = pending.args["dataHash"]
                pending = None
            elif ev.name == "Paused":
                paused_at = ev.block_number
            elif ev.name == "Unpaused":
                paused_at = None
            elif ev.name == "RootRevoked":
                if pending is not None:
                    s = summaries.get(pending.args["dataHash"])
                    if s is not None:
                        s.on_chain = "revoked"
                pending = None
            elif ev.name == "Claimed":
                account = a["account"]
                amount = a["cumulative"]
                leaves_now = [_leaf(r, account) for r in (current, previous) if r is not None]
                if None in leaves_now:
                    continue  # a root whose data was not audited (or names none): reported above
                limit = max((x for x in leaves_now if x is not None), default=0)
                if amount > limit:
                    self.bad(None, "chain", f"Claimed above the account's leaf (block {ev.block_number})",
                             f"<= {limit}", amount, account=account)  # fmt: skip
        if current is not None:
            on_chain = self.chain.root()
            if on_chain != current[0]:
                self.bad(
                    None, "chain", "root() is not the last accepted root", current[0], on_chain
                )


# The registries of fixed-width lines, checked whole by one regular expression (their lines
# are the canonical form by construction) and sliced; others are read line by line.
_FIXED: Final = {
    dataset.REGISTRY_VIEWERS: re.compile(rb'(?:\{"address":"0x[0-9a-f]{40}"\}\n)*'),
    dataset.REGISTRY_CONTENT: re.compile(
        rb'(?:\{"contentId":"0x[0-9a-f]{64}","creator":"0x[0-9a-f]{40}"\}\n)*'
    ),
}


def _fixed_registry(name: str, data: bytes) -> list[Any] | None:
    """The rows of a fixed-width registry file whose lines are all canonical and ascending,
    else None (the caller reads it line by line and names the faulty lines)."""
    pattern = _FIXED.get(name)
    if pattern is None or pattern.fullmatch(data) is None:
        return None
    lines = data.split(b"\n")[:-1]
    if any(b <= a for a, b in itertools.pairwise(lines)):
        return None
    if name == dataset.REGISTRY_VIEWERS:
        return [bytes.fromhex(line[14:54].decode()) for line in lines]
    return [
        (bytes.fromhex(line[16:80].decode()), bytes.fromhex(line[95:135].decode()))
        for line in lines
    ]


def _accepted_hash(current: Any, manifests: dict[str, _Manifest]) -> str | None:
    if current is None:
        return None
    for h, m in manifests.items():
        if m.doc.get("root") == current[0]:
            return h
    return None


def _leaf(root: tuple[str, dict[bytes, int] | None], account: str) -> int | None:
    """The account's leaf in a root's recomputed leaves; None: that root's data unknown."""
    if root[1] is None:
        return None
    return root[1].get(_b(account), 0)


def audit(
    source: DataSource | None,
    chain: ChainView,
    epochs: Iterable[int] | None = None,
    progress: Progress | None = None,
    *,
    workers: int | None = None,
) -> AuditReport:
    """Audit `chain`'s roots against the datasets in `source` (None: each proposal's
    dataURI). See the module docstring."""
    return _Audit(source, chain, epochs, progress, workers).run()


# --- helpers ------------------------------------------------------------------------------------


def _parse_part(
    path: str,
    start: int,
    end: int,
    first_line: int,
    name: str,
    domain: Domain | None,
    params: Params | None,
    clock: EpochClock | None,
    epoch: int,
) -> tuple[dict[str, np.ndarray], list[published.Problem]]:
    """One task of the verify pool: a byte range of whole lines of a published file. Of
    its problems only the first few of each kind cross back (a dataset of another domain
    fails every line): the rest are counted, as a last problem of line 0."""
    with open(path, "rb") as f:
        f.seek(start)
        data = f.read(end - start)
    cols, problems = published.parse_chunk(name, data, first_line, domain, params, clock, epoch)
    kept: list[published.Problem] = []
    per_kind: dict[str, int] = {}
    dropped = 0
    for p in problems:
        kind = p[1].split(":")[0]
        per_kind[kind] = per_kind.get(kind, 0) + 1
        if per_kind[kind] <= _SHOWN_PER_KIND:
            kept.append(p)
        else:
            dropped += 1
    if dropped:
        kept.append((0, _DROPPED, None, str(dropped), None, None))
    # Verified here: the signatures (a third of a receipt's bytes) need not cross back.
    cols.pop("signature", None)
    return cols, kept


def _parts(path: Path) -> Iterator[tuple[int, int, int]]:
    """(start, end, first line) of ranges of whole lines, about _PART_BYTES each."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        start, line = 0, 1
        while start < size:
            f.seek(min(start + _PART_BYTES, size))
            f.readline()
            end = min(f.tell(), size)
            f.seek(start)
            lines = f.read(end - start).count(b"\n")
            yield start, end, line
            start, line = end, line + lines


def _digest(path: Path) -> tuple[str, int, int]:
    h = hashlib.sha256()
    size = lines = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
            size += len(chunk)
            lines += chunk.count(b"\n")
    return h.hexdigest(), size, lines


def _concat(parts: list[dict[str, np.ndarray]], name: str) -> dict[str, np.ndarray]:
    fields = [published.COLUMN[f] for f in published.FIELDS[name] if f != "signature"]
    if not parts:
        widths = {"viewer": 20, "node": 20, "session_id": 32, "content_id": 32, "signature": 65}
        return {
            f: np.zeros((0, widths[f]), np.uint8) if f in widths else np.zeros(0, U64)
            for f in fields
        }
    return {f: np.concatenate([p[f] for p in parts]) for f in fields}


def _prefix(keys: np.ndarray, width: int) -> np.ndarray:
    n = len(keys)
    raw = np.zeros((n, keys.dtype.itemsize), np.uint8)
    if n:
        raw[:] = keys.view(np.uint8).reshape(n, keys.dtype.itemsize)
    return key(raw[:, :width])


def _conflict(a: Any, b: Any) -> bool:
    """Two receipts of one session that PROTOCOL 3 calls a CONFLICT."""
    if a.content_id != b.content_id or a.started_at != b.started_at:
        return True
    if a.kind == "delivery" and b.kind == "delivery" and a.node == b.node:
        up = (a.bytes_served > b.bytes_served, a.segments_served > b.segments_served)
        down = (a.bytes_served < b.bytes_served, a.segments_served < b.segments_served)
        return any(up) and any(down)
    return False


def _b(value: Any) -> bytes:
    if type(value) is not str or value[:2] != "0x":
        raise ValueError(f"not 0x hex: {value!r}")
    return bytes.fromhex(value[2:])


def _hex(row: np.ndarray) -> str:
    return "0x" + row.tobytes().hex()


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0

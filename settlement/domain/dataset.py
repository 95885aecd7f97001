"""The epoch dataset's formats (PROTOCOL 6), pure: file names, canonical JSON, each file's
lines, the manifest's bytes and its dataHash: what the close writes and an auditor re-derives.

Formats: one object a line, keys sorted, no spaces, integers as decimal strings, hex
lowercase `0x...`, lines sorted by their key fields. The few big files (receipts and
watermarks, a million lines an epoch) are formatted by the `*_line` functions below (and
column-wise by `dataset_columns`); a unit test holds each to `canonical_line` byte for byte.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson

from settlement.domain.merkle import keccak256

PROTOCOL_VERSION: Final = "2"
ZERO_HASH: Final = "0x" + "00" * 32
MANIFEST: Final = "manifest.json"
MANIFEST_FIELDS: Final = tuple(
    sorted(
        (
            "protocolVersion",
            "epoch",
            "start",
            "end",
            "cutoff",
            "parameters",
            "pools",
            "counts",
            "root",
            "cumulativeTotal",
            "floor",
            "prevManifestHash",
            "files",
        )
    )
)
# A correction's manifest has these two fields more (PROTOCOL 6).
CORRECTION_FIELDS: Final = ("claimedAtBlock", "corrects")

# Logical names of the data files (the manifest's `files[].name`) and their key fields.
DELIVERY_RECEIPTS: Final = "delivery_receipts"  # viewer, sessionId, node
VIEW_RECEIPTS: Final = "view_receipts"  # viewer, sessionId
DELIVERY_WATERMARKS: Final = "delivery_watermarks"  # viewer, sessionId, node
VIEW_WATERMARKS: Final = "view_watermarks"  # viewer, sessionId
QUARANTINE: Final = "quarantine"  # viewer, sessionId
REGISTRY_NODES: Final = "registry_nodes"  # address
REGISTRY_CONTENT: Final = "registry_content"  # contentId
REGISTRY_VIEWERS: Final = "registry_viewers"  # address
ALLOCATIONS: Final = "allocations"  # account, class
TREE: Final = "tree"  # the standard-v1 dump (JSON, not NDJSON)


# --- canonical JSON -------------------------------------------------------------------------


def canonical(value: Any) -> Any:
    """ints -> decimal strings, bytes -> lowercase 0x hex, recursively (bools stay bools)."""
    if type(value) is bool or value is None:
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return "0x" + bytes(value).hex()
    if isinstance(value, Mapping):
        return {str(k): canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [canonical(v) for v in value]
    return value


def canonical_bytes(value: Any) -> bytes:
    """Keys sorted, no spaces, UTF-8 (the manifest's bytes, and each NDJSON line)."""
    return orjson.dumps(canonical(value), option=orjson.OPT_SORT_KEYS)


def canonical_line(value: Any) -> str:
    return canonical_bytes(value).decode() + "\n"


def wire_evidence(obj: Mapping[str, Any] | None) -> Any:
    """A stored wire receipt (evidence) in the dataset's form: hex lowercase, ints as strings."""
    if obj is None:
        return None
    out: dict[str, Any] = {}
    for k, v in obj.items():
        if isinstance(v, str) and v[:2] in ("0x", "0X"):
            v = "0x" + v[2:].lower()
        out[k] = v
    return out


# --- the big files: hand-formatted, equal to canonical_line ----------------------------------


def delivery_line(
    viewer: bytes,
    session_id: bytes,
    node: bytes,
    content_id: bytes,
    started_at: int,
    bytes_served: int,
    segments: int,
    issued_at: int,
    signature: bytes,
    bucket: int,
) -> str:
    return (
        f'{{"bucket":"{bucket}","bytesServed":"{bytes_served}","contentId":"0x{content_id.hex()}",'
        f'"issuedAt":"{issued_at}","node":"0x{node.hex()}","segmentsServed":"{segments}",'
        f'"sessionId":"0x{session_id.hex()}","signature":"0x{signature.hex()}",'
        f'"startedAt":"{started_at}","viewer":"0x{viewer.hex()}"}}\n'
    )


def view_line(
    viewer: bytes,
    session_id: bytes,
    content_id: bytes,
    started_at: int,
    watch_seconds: int,
    issued_at: int,
    signature: bytes,
    bucket: int,
) -> str:
    return (
        f'{{"bucket":"{bucket}","contentId":"0x{content_id.hex()}","issuedAt":"{issued_at}",'
        f'"sessionId":"0x{session_id.hex()}","signature":"0x{signature.hex()}",'
        f'"startedAt":"{started_at}","viewer":"0x{viewer.hex()}","watchSeconds":"{watch_seconds}"}}\n'
    )


def delivery_mark_line(
    viewer: bytes, session_id: bytes, node: bytes, bytes_served: int, segments: int
) -> str:
    return (
        f'{{"bytesServed":"{bytes_served}","node":"0x{node.hex()}","segmentsServed":"{segments}",'
        f'"sessionId":"0x{session_id.hex()}","viewer":"0x{viewer.hex()}"}}\n'
    )


def view_mark_line(viewer: bytes, session_id: bytes, watch_seconds: int, credited: int) -> str:
    return (
        f'{{"credited":"{credited}","sessionId":"0x{session_id.hex()}",'
        f'"viewer":"0x{viewer.hex()}","watchSeconds":"{watch_seconds}"}}\n'
    )


def allocation_line(account: bytes, cls: str, amount: int) -> str:
    return f'{{"account":"0x{account.hex()}","amount":"{amount}","class":"{cls}"}}\n'


def node_line(address: bytes, label: str, active: bool) -> str:
    return (
        f'{{"active":{"true" if active else "false"},"address":"0x{address.hex()}",'
        f'"label":{orjson.dumps(label).decode()}}}\n'
    )


def content_line(content_id: bytes, creator: bytes) -> str:
    return f'{{"contentId":"0x{content_id.hex()}","creator":"0x{creator.hex()}"}}\n'


def viewer_line(address: bytes) -> str:
    return f'{{"address":"0x{address.hex()}"}}\n'


# --- manifest ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PublishedFile:
    """One data file as the manifest lists it (`filename`: its name on disk)."""

    name: str  # logical name
    sha256: str  # hex, no 0x: also the file's name on disk (plus its extension)
    size: int
    rows: int
    filename: str

    def manifest_entry(self) -> dict[str, Any]:
        return {"name": self.name, "sha256": self.sha256, "size": self.size, "rows": self.rows}


def manifest_bytes(
    *,
    epoch: int,
    start: int,
    end: int,
    cutoff: int,
    parameters: Mapping[str, Any],
    pools: Mapping[str, Mapping[str, int]],
    root: str,
    cumulative_total: int,
    floor: str,
    prev_manifest_hash: str,
    files: Iterable[PublishedFile],
    correction: Mapping[str, Any] | None = None,
) -> bytes:
    """The manifest's bytes: exactly the PROTOCOL 6 fields, canonical JSON. `floor`: the
    dataHash of the correction whose leaves are the floor (ZERO_HASH: none). `correction`:
    a correction's `corrects` and `claimedAtBlock`."""
    files = sorted(files, key=lambda f: f.name)
    manifest = {
        "protocolVersion": PROTOCOL_VERSION,
        "epoch": epoch,
        "start": start,
        "end": end,
        "cutoff": cutoff,
        "parameters": dict(parameters),
        "pools": {k: dict(v) for k, v in pools.items()},
        "counts": {f.name: f.rows for f in files},
        "root": root,
        "cumulativeTotal": cumulative_total,
        "floor": floor,
        "prevManifestHash": prev_manifest_hash,
        "files": [f.manifest_entry() for f in files],
    }
    assert tuple(sorted(manifest)) == MANIFEST_FIELDS
    if correction is not None:
        assert tuple(sorted(correction)) == CORRECTION_FIELDS
        manifest.update(correction)
    return canonical_bytes(manifest)


def data_hash(manifest: bytes) -> bytes:
    """`dataHash = keccak256(manifest bytes)` (PROTOCOL 6), also the next `prevManifestHash`."""
    return keccak256(manifest)

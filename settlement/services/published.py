"""The published dataset files, read-only (PROTOCOL 6): which paths under W2E_DATA_DIR are
public, the URI a proposal names for them, and how long a reader may cache them.

The public names are a closed pattern, not a filter of bad ones: an epoch's or a
correction's directory, then `manifest.json` or a file named by its sha256. Nothing else
under the data directory (temp files, other directories, symlinks out of it) is served.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from settlement.adapters import files as publish
from settlement.config import Settings
from settlement.domain import dataset
from settlement.errors import NotFound

# The directories `adapters.files.epoch_dir` and `services.correct.correction_dir` name,
# and the files a `DatasetWriter` leaves in them.
_DIRECTORY: Final = r"(?:epoch-[0-9]{8}|corrections/correction-[0-9]{8}-[0-9]{12}-[0-9a-f]{1,12})"
_FILE: Final = r"(?:manifest\.json|(?P<sha>[0-9a-f]{64})\.(?P<ext>ndjson|json))"
_PUBLIC: Final = re.compile(rf"{_DIRECTORY}/{_FILE}")

# Every public file is final once it has its name: a data file is renamed into place
# complete and named by its hash, a manifest is written last and never changes (a close or
# correction is published once). So a reader may keep any of them forever.
CACHE_CONTROL: Final = "public, max-age=31536000, immutable"
MEDIA_TYPES: Final = {"json": "application/json", "ndjson": "application/x-ndjson"}


@dataclass(frozen=True, slots=True)
class PublishedPath:
    """One public file: where it is, its size and validator, and its media type."""

    path: Path
    stat: os.stat_result
    etag: str  # quoted, as the header carries it: the file's sha256
    media_type: str


def published_file(settings: Settings, relative: str) -> PublishedPath:
    """The public file `relative` names under W2E_DATA_DIR (as a dataURI does below
    W2E_DATA_BASE_URI). NotFound for anything that is not a published file, whatever the
    reason: a name outside the pattern, a traversal, a symlink out, absent."""
    match = _PUBLIC.fullmatch(relative)
    if match is None:
        raise NotFound("no published file at this path: give epoch-NNNNNNNN/FILE")
    root = Path(settings.data_dir).resolve()
    path = root / relative
    try:
        # The pattern admits no `..` nor absolute path; a symlink in the data directory
        # could still point out of it: its target must stay inside.
        if not path.resolve(strict=True).is_relative_to(root):
            raise NotFound("no published file at this path")
        st = path.stat()
    except OSError:
        raise NotFound(f"{relative} is not published (yet)") from None
    if not stat.S_ISREG(st.st_mode):
        raise NotFound("no published file at this path")
    sha = match.group("sha")
    if sha is None:  # the manifest: a few kilobytes, hashed per request
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
    ext = match.group("ext") or "json"
    return PublishedPath(path, st, f'"{sha}"', MEDIA_TYPES[ext])


def data_uri(settings: Settings, directory: Path) -> str:
    """The dataURI of the manifest in `directory` (an epoch's or a correction's, under
    W2E_DATA_DIR): under W2E_DATA_BASE_URI when it is set, where `settlement serve` answers
    (GET BASE/epoch-NNNNNNNN/manifest.json); else the local absolute path."""
    manifest = Path(directory, dataset.MANIFEST)
    if not settings.data_base_uri:
        return str(manifest.resolve())
    relative = manifest.resolve().relative_to(Path(settings.data_dir).resolve())
    return f"{settings.data_base_uri.rstrip('/')}/{relative.as_posix()}"


def epoch_data_uri(settings: Settings, epoch: int) -> str:
    return data_uri(settings, publish.epoch_dir(settings.data_dir, epoch))

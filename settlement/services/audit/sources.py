"""Where the published files are: a folder, or an http(s) base whose downloads go to a
temporary folder (docs/protocol.md 9.2)."""

from __future__ import annotations

import http.client
import re
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Final, Protocol

from settlement.domain import dataset
from settlement.errors import DataUnavailable, InputError


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

"""Dataset files on disk (PROTOCOL 6): each file written atomically (temp, fsync, rename),
named by its sha256, big ones past the page cache (O_DIRECT); the close's export workers.

The formats themselves (lines, manifest bytes) are `domain.dataset`'s.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import mmap
import os
import secrets
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import astuple
from pathlib import Path
from typing import Any, BinaryIO, Final

from settlement import faults, parallel
from settlement.domain.dataset import PublishedFile
from settlement.errors import SettlementError


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class DirectFile:
    """A file written with O_DIRECT: whole aligned blocks from a page-aligned buffer, the
    last one padded and the file then cut to its size.

    The big dataset files are written once and not read back by the close: through the page
    cache, the copy into it and the writeback at fsync cost this machine between 0.3 and 3
    CPU-seconds of kernel time per GB (varying run to run), O_DIRECT about 0.05.
    """

    BLOCK: Final = 4096
    SIZE: Final = 8 << 20  # the buffer: bytes per write

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buf = mmap.mmap(-1, self.SIZE)  # page-aligned, as O_DIRECT wants
        self.used = 0
        self.written = 0
        self.closed = False

    @classmethod
    def open(cls, path: Path) -> DirectFile | None:
        """None where the platform or file system has no O_DIRECT (tmpfs, macOS)."""
        flag = getattr(os, "O_DIRECT", 0)
        if not flag:
            return None
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | flag, 0o644)
        except OSError:
            return None
        return cls(fd)

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        while view:
            n = min(len(view), self.SIZE - self.used)
            self.buf[self.used : self.used + n] = view[:n]
            self.used += n
            view = view[n:]
            if self.used == self.SIZE:
                self._drain(self.SIZE)
        return len(data)

    def _drain(self, n: int) -> None:
        """Write the buffer's first n bytes (a multiple of BLOCK)."""
        done = 0
        with memoryview(self.buf) as whole:
            while done < n:
                done += os.write(self.fd, whole[done:n])
        self.written += n
        self.used = 0

    def flush(self) -> None:
        """Write what is buffered (padded to a block) and cut the file to its true size.
        Called once, when the file is complete."""
        if self.used:
            size = self.written + self.used
            padded = -(-self.used // self.BLOCK) * self.BLOCK
            self.buf[self.used : padded] = bytes(padded - self.used)
            self._drain(padded)
            os.ftruncate(self.fd, size)

    def fileno(self) -> int:
        return self.fd

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.buf.close()
            os.close(self.fd)


class FileSink:
    """One data file being written: text in, sha256 and size kept, renamed when finished."""

    _FLUSH: Final = 4096  # lines buffered between writes

    def __init__(self, directory: Path, name: str, ext: str, direct: bool = False) -> None:
        self.directory = directory
        self.name = name
        self.ext = ext
        self.tmp = directory / f".{name}.{secrets.token_hex(6)}.tmp"
        direct_file = DirectFile.open(self.tmp) if direct else None
        # Closed in finish or abort.
        self._f: BinaryIO | DirectFile = direct_file or open(self.tmp, "wb")  # noqa: SIM115
        self._h = hashlib.sha256()
        self._buf: list[str] = []
        self.size = 0
        self.rows = 0

    def add(self, line: str) -> None:
        self._buf.append(line)
        self.rows += 1
        if len(self._buf) >= self._FLUSH:
            self._flush()

    def add_many(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.add(line)

    def write_raw(self, data: bytes, rows: int) -> None:
        self._flush()
        self._write(data)
        self.rows += rows

    def _flush(self) -> None:
        if self._buf:
            data = "".join(self._buf).encode()
            self._buf.clear()
            self._write(data)

    def _write(self, data: bytes) -> None:
        self._h.update(data)
        self._f.write(data)
        self.size += len(data)

    def finish(self) -> PublishedFile:
        faults.point("files.finish")
        self._flush()
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()
        sha = self._h.hexdigest()
        filename = f"{sha}.{self.ext}"
        os.replace(self.tmp, self.directory / filename)
        return PublishedFile(self.name, sha, self.size, self.rows, filename)

    def abort(self) -> None:
        if not self._f.closed:
            with contextlib.suppress(OSError):  # a full disk fails the close's flush too
                self._f.close()
        self.tmp.unlink(missing_ok=True)


class DatasetWriter:
    """The data files of one epoch in `directory`; `write_manifest` goes last."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.sinks: dict[str, FileSink] = {}
        self.files: dict[str, PublishedFile] = {}

    def sink(self, name: str, ext: str = "ndjson", direct: bool = False) -> FileSink:
        """A new file; `direct`: written past the page cache where the file system allows
        (`DirectFile`), for files of hundreds of megabytes written in large pieces."""
        s = self.sinks[name] = FileSink(self.directory, name, ext, direct)
        return s

    def finish(self, name: str) -> None:
        """Finish one file now (fsync, rename): while others are still being written."""
        sink = self.sinks.pop(name)
        try:
            self.files[name] = sink.finish()
        except BaseException:
            sink.abort()  # out of `sinks` already: abort() would not see its temp file
            raise

    def finish_all(self) -> list[PublishedFile]:
        for name in list(self.sinks):
            self.finish(name)
        _fsync_dir(self.directory)
        return sorted(self.files.values(), key=lambda f: f.name)

    def abort(self) -> None:
        for s in self.sinks.values():
            s.abort()
        self.sinks.clear()


def write_atomic(path: Path, data: bytes) -> None:
    """temp + fsync + rename + fsync(dir): a reader sees the old file or the whole new one."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def ensure_file(path: Path, data: bytes) -> bool:
    """Put `data` at `path` unless it is there already (`write_atomic`); True when written.

    A dataset's manifest is written last, after the close commits, so a crash between the two
    leaves a committed epoch without it: whoever reads the epoch next puts it back."""
    if path.exists() and path.read_bytes() == data:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, data)
    return True


def missing_files(directory: Path, sha256s: Iterable[str]) -> list[str]:
    """Which of the data files named by these hashes (`<sha256>.ndjson` or `.json`, as a
    `FileSink` names them) are not in `directory`."""
    return [
        sha
        for sha in sha256s
        if not (directory / f"{sha}.ndjson").exists() and not (directory / f"{sha}.json").exists()
    ]


def epoch_dir(data_dir: str | Path, epoch: int) -> Path:
    return Path(data_dir) / f"epoch-{epoch:08d}"


# --- export workers ------------------------------------------------------------------------------

# How the big files are written: by forked children (they share the close's columns
# copy-on-write, and format them on other cores than the close's own work, which the GIL
# would not allow a thread), or by a thread where the platform has no fork. Tests choose.
FORK: Final = "fork"
THREAD: Final = "thread"


def default_export() -> str:
    return FORK if parallel.can_fork() else THREAD


# Writes the files `names` into a writer, finishing each (`DatasetWriter.finish`) as soon as it
# is complete; called in the child (or the thread).
WriteFiles = Callable[["DatasetWriter", tuple[str, ...]], None]


class ExportWorkers:
    """The big files of one dataset, written next to the close's own work, a worker per
    group of `groups`: forked children at nice 10 (below the parent, whose rewards are the
    close's critical path, and below a service's ingest, which matters more than this
    export) or one thread for all groups. `join` waits and takes their files into the
    parent's writer; `abort` stops them and drops what they left half-written.
    """

    def __init__(self, writer: DatasetWriter, names: tuple[str, ...]) -> None:
        self.writer = writer
        self.names = names
        self.children: list[tuple[int, int]] = []  # (pid, read end of its pipe)
        self.thread: ThreadPoolExecutor | None = None
        self.job: Future[float] | None = None

    @classmethod
    def start(
        cls,
        writer: DatasetWriter,
        groups: tuple[tuple[str, ...], ...],
        write: WriteFiles,
        strategy: str,
    ) -> ExportWorkers:
        self = cls(writer, tuple(name for group in groups for name in group))
        if strategy == THREAD:
            self.thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="close-export")
            self.job = self.thread.submit(_timed_write, write, writer, self.names)
            return self
        if strategy != FORK:
            raise ValueError(f"export strategy is {FORK!r} or {THREAD!r}, not {strategy!r}")
        for names in groups:
            work = functools.partial(_child_export, writer.directory, write, names)
            self.children.append(parallel.fork_child(work, nice=10))
        return self

    @property
    def forked(self) -> bool:
        return bool(self.children)

    def join(self) -> float:
        """Wait for the files; the slowest writer's seconds. Raises a worker's error."""
        if self.job is not None:
            seconds = self.job.result()
            self.thread.shutdown()  # type: ignore[union-attr]
            return seconds
        seconds = 0.0
        while self.children:
            pid, fd = self.children.pop(0)
            report, status = parallel.join_child(pid, fd)
            if "error" in report or status != 0:
                raise SettlementError(f"writing the dataset's big files failed: {report}")
            for f in report["files"]:
                published = PublishedFile(*f)
                self.writer.files[published.name] = published
            seconds = max(seconds, float(report["seconds"]))
        return seconds

    def abort(self) -> None:
        """Stop the children (or wait for the thread) and drop what they left half-written."""
        if self.job is not None:
            wait([self.job])
            self.thread.shutdown()  # type: ignore[union-attr]
            return
        for pid, fd in self.children:
            parallel.kill_child(pid, fd)
        self.children.clear()
        for name in self.names:
            for tmp in self.writer.directory.glob(f".{name}.*.tmp"):
                tmp.unlink(missing_ok=True)


def _timed_write(write: WriteFiles, writer: DatasetWriter, names: tuple[str, ...]) -> float:
    t = time.perf_counter()
    write(writer, names)
    return time.perf_counter() - t


def _child_export(directory: Path, write: WriteFiles, names: tuple[str, ...]) -> dict[str, Any]:
    """In a forked child: the files `names` in a writer of its own, reported to the parent."""
    mine = DatasetWriter(directory)
    seconds = _timed_write(write, mine, names)
    return {"seconds": seconds, "files": [astuple(f) for f in mine.files.values()]}


# --- reading a published file by its URI ---------------------------------------------------------


def read_uri(uri: str, *, max_bytes: int = 1 << 30, timeout: float = 30.0) -> bytes:
    """The bytes at `uri`: an http(s) URL (as `settlement serve` publishes under
    W2E_DATA_BASE_URI), a file:// URL or a local path. DataUnavailable when it cannot be
    read now (absent, refused, timed out, an HTTP error): a caller may try again later."""
    from urllib.parse import unquote, urlsplit

    from settlement.errors import DataUnavailable, redact

    parts = urlsplit(uri)
    if parts.scheme in ("http", "https"):
        import httpx

        try:
            with httpx.stream("GET", uri, timeout=timeout, follow_redirects=True) as r:
                if r.status_code != 200:
                    raise DataUnavailable(f"GET {redact(uri)}: HTTP {r.status_code}")
                chunks, size = [], 0
                for chunk in r.iter_bytes():
                    size += len(chunk)
                    if size > max_bytes:
                        raise DataUnavailable(f"GET {redact(uri)}: more than {max_bytes} bytes")
                    chunks.append(chunk)
                return b"".join(chunks)
        except httpx.HTTPError as error:
            raise DataUnavailable(f"GET {redact(uri)}: {type(error).__name__}") from None
    path = unquote(parts.path) if parts.scheme == "file" else uri
    try:
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as error:
        raise DataUnavailable(f"cannot read {path}: {error.strerror or error}") from None
    if len(data) > max_bytes:
        raise DataUnavailable(f"{path}: more than {max_bytes} bytes")
    return data

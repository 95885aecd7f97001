"""Dataset files on disk (`adapters.files`): named by their sha256 and renamed whole, aborted
writers leave nothing, atomic writes, O_DIRECT files."""

from __future__ import annotations

import hashlib
import os
import random
import shutil

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from settlement.adapters import files as publish
from settlement.domain import dataset


def test_files_are_named_by_their_sha256_and_renamed_whole(tmp_path):
    w = publish.DatasetWriter(tmp_path / "e1")
    sink = w.sink("things")
    for i in range(10_000):
        sink.add(dataset.canonical_line({"i": i}))
    assert not list((tmp_path / "e1").glob("*.ndjson"))  # nothing visible before finish
    (f,) = w.finish_all()
    data = (tmp_path / "e1" / f.filename).read_bytes()
    assert f.sha256 == hashlib.sha256(data).hexdigest() and f.filename == f.sha256 + ".ndjson"
    assert (f.size, f.rows) == (len(data), 10_000)
    assert not [p for p in os.listdir(tmp_path / "e1") if p.endswith(".tmp")]


def test_an_aborted_writer_leaves_nothing(tmp_path):
    w = publish.DatasetWriter(tmp_path)
    w.sink("x").add("{}\n")
    w.abort()
    assert os.listdir(tmp_path) == []


def test_write_atomic_replaces_whole(tmp_path):
    p = tmp_path / "manifest.json"
    publish.write_atomic(p, b"one")
    publish.write_atomic(p, b"two")
    assert p.read_bytes() == b"two" and os.listdir(tmp_path) == ["manifest.json"]


@pytest.mark.parametrize("where", ["disk", "tmpfs"])
@settings(max_examples=25, deadline=None)
@given(
    chunks=st.lists(
        st.sampled_from([0, 1, 4095, 4096, 4097, 100_000, publish.DirectFile.SIZE, 9_000_000]),
        max_size=5,
    ),
    seed=st.integers(0, 2**32),
)
def test_direct_files_hold_exactly_what_was_written(tmp_path_factory, where, chunks, seed):
    """O_DIRECT writes whole padded blocks and cuts the file to its size afterwards: the file
    and its sha256 equal a buffered write's. On tmpfs (no O_DIRECT) it falls back."""
    if where == "tmpfs":
        if not os.path.isdir("/dev/shm"):
            pytest.skip("no tmpfs at /dev/shm")
        import tempfile

        directory = tempfile.mkdtemp(dir="/dev/shm")
        request_cleanup = directory
    else:
        request_cleanup = None
        directory = tmp_path_factory.mktemp("direct")
    rnd = random.Random(seed)
    data = [rnd.randbytes(n) for n in chunks]
    files = {}
    for direct in (False, True):
        writer = publish.DatasetWriter(os.path.join(directory, str(direct)))
        sink = writer.sink("delivery_receipts", direct=direct)
        if direct and where == "disk" and hasattr(os, "O_DIRECT"):
            assert isinstance(sink._f, publish.DirectFile)
        for part in data:
            sink.write_raw(part, 1)
        (f,) = writer.finish_all()
        files[direct] = (f, (writer.directory / f.filename).read_bytes())
    if request_cleanup is not None:
        shutil.rmtree(request_cleanup)
    assert files[True] == files[False]
    whole = b"".join(data)
    assert files[True][1] == whole and files[True][0].sha256 == hashlib.sha256(whole).hexdigest()

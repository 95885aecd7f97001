"""The published dataset over HTTP (issue 14 item 2): every file a manifest names, fetched
from a real server under W2E_DATA_BASE_URI, is the folder's file byte for byte; anything
that is not a published file is 404, traversals included."""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import uvicorn
from storekit import EPOCH, GENESIS, GRACE, World, key, opened, settings, wire

from settlement.api.app import create_app
from settlement.domain import dataset
from settlement.services import ingest as service
from settlement.services.close import close_epoch
from settlement.services.published import CACHE_CONTROL, epoch_data_uri

B1 = GENESIS + 100
CUT1 = GENESIS + EPOCH + GRACE


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Any, Path]]:
    """A closed epoch and the API on a real socket: (base URI, settings, data dir)."""
    port = _free_port()
    base = f"http://127.0.0.1:{port}/v1/data"
    data = tmp_path / "data"
    with opened("sqlite", tmp_path) as store:
        s = settings(emission=1000, data_dir=str(data), data_base_uri=base)
        w = World()
        w.register(store)
        for i in range(3):
            sid = key(f"data-session-{i}")
            items = wire(
                w.delivery(sid, 300 + i, 3, B1),
                w.delivery(sid, 100, 1, B1, node=w.node2),
                w.view(sid, 20, B1),
            )
            service.Ingestor(store, s).ingest(items, B1 + 5)
        close_epoch(store, s, now=CUT1)
        (data / "epoch-00000001" / ".partial.abc.tmp").write_bytes(b"half written")
        (tmp_path / "secret.txt").write_bytes(b"not public")
        server = uvicorn.Server(
            uvicorn.Config(create_app(s, store), host="127.0.0.1", port=port, log_level="error")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 20
        while not server.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.02)
        try:
            yield base, s, data
        finally:
            server.should_exit = True
            thread.join(10)


def _raw_get(base: str, target: str) -> int:
    """The status of GET `target` sent as is: no client normalises the path first."""
    host, port = base.split("//")[1].split("/")[0].split(":")
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        head = s.recv(4096).decode(errors="replace")
    return int(head.split(" ", 2)[1])


def test_files_over_http_are_the_folders_bytes(served: tuple[str, Any, Path]) -> None:
    base, s, data = served
    uri = epoch_data_uri(s, 1)
    assert uri == f"{base}/epoch-00000001/manifest.json"
    manifest = httpx.get(uri)
    assert manifest.status_code == 200
    folder = data / "epoch-00000001"
    assert manifest.content == (folder / dataset.MANIFEST).read_bytes()
    files = orjson.loads(manifest.content)["files"]
    assert len(files) >= 5
    with httpx.Client() as client:
        for f in files:
            name = f"{f['sha256']}.{'json' if f['name'] == dataset.TREE else 'ndjson'}"
            r = client.get(uri.rsplit("/", 1)[0] + "/" + name)
            assert r.status_code == 200, name
            assert r.content == (folder / name).read_bytes()
            assert hashlib.sha256(r.content).hexdigest() == f["sha256"]
            assert int(r.headers["content-length"]) == int(f["size"]) == len(r.content)
            assert r.headers["etag"] == f'"{f["sha256"]}"'
            assert r.headers["cache-control"] == CACHE_CONTROL
            assert r.headers["content-type"].startswith(
                "application/json" if name.endswith(".json") else "application/x-ndjson"
            )
            # HEAD: the same headers, no body; If-None-Match: 304 without the body.
            h = client.head(uri.rsplit("/", 1)[0] + "/" + name)
            assert h.status_code == 200 and h.content == b""
            assert h.headers["content-length"] == r.headers["content-length"]
            assert h.headers["etag"] == r.headers["etag"]
            cached = client.get(r.url, headers={"If-None-Match": r.headers["etag"]})
            assert cached.status_code == 304 and cached.content == b""
        m = client.get(uri)
        assert m.headers["etag"] == f'"{hashlib.sha256(m.content).hexdigest()}"'
        assert int(m.headers["content-length"]) == len(m.content)


@pytest.mark.parametrize(
    "target",
    [
        "/v1/data/../../secret.txt",
        "/v1/data/%2e%2e/secret.txt",
        "/v1/data/%2e%2e%2fsecret.txt",
        "/v1/data/epoch-00000001/../../secret.txt",
        "/v1/data/epoch-00000001/%2e%2e/%2e%2e/secret.txt",
        "/v1/data/epoch-00000001/..%2f..%2fsecret.txt",
        "/v1/data//etc/passwd",
        "/v1/data/%2fetc%2fpasswd",
        "/v1/data/epoch-00000001/.partial.abc.tmp",
        "/v1/data/epoch-00000001/",
        "/v1/data/epoch-00000001",
        "/v1/data/",
        "/v1/data/epoch-00000002/manifest.json",
        "/v1/data/epoch-00000001/" + "0" * 64 + ".ndjson",
        "/v1/data/epoch-00000001/manifest.json/",
        "/v1/data/epoch-1/manifest.json",
        "/v1/data/corrections/correction-00000001-000000000001-abc/manifest.json",
    ],
)
def test_traversal_and_unknown_paths_are_404(served: tuple[str, Any, Path], target: str) -> None:
    base, _, _ = served
    assert _raw_get(base, target) == 404


def test_symlink_out_of_the_data_dir_is_404(served: tuple[str, Any, Path]) -> None:
    base, _, data = served
    outside = data.parent / "outside"
    outside.mkdir()
    (outside / "manifest.json").write_bytes(b"{}")
    (data / "epoch-00000009").symlink_to(outside)
    assert httpx.get(f"{base}/epoch-00000009/manifest.json").status_code == 404

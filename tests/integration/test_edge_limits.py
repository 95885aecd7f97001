"""The public edge against slow and heavy clients (issue 15, item 1), on a real `settlement
serve` process: stalled bodies hold no in-flight slot, and every route refuses oversized,
deeply nested and element-heavy bodies before parsing them, with the server's memory
measured (VmRSS / VmHWM of its process group from /proc)."""

from __future__ import annotations

import os
import re
import secrets
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from starlette.routing import Route
from storekit import DISTRIBUTOR, World, wire
from support.server import HOST, ServerProcess

from settlement.adapters.db.store import open_store
from settlement.api.app import create_app
from settlement.config import Settings

TOKEN = "a" * 40
STALLED = 12  # more than W2E_MAX_INFLIGHT_BATCHES (8): each used to hold a slot
BODY_TIMEOUT = 3.0
MAX_ELEMENTS = 2000
PUBLIC_LIMIT = 16 * 1024  # W2E_MAX_PUBLIC_BODY_BYTES default
ADMIN_LIMIT = 1024 * 1024  # W2E_MAX_ADMIN_BODY_BYTES default
RECEIPTS_LIMIT = 16 * 1024 * 1024  # W2E_MAX_BODY_BYTES default
# Values for path parameters, so that each request names a plausible resource.
FILLERS = {
    "address": "0x" + "11" * 20,
    "action": "deactivate",
    "decision": "reject",
    "content_id": "0x" + "22" * 32,
}


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("W2E_")}
    env.update(
        W2E_DATABASE_URL=f"sqlite:///{tmp_path}/edge.db",
        W2E_DISTRIBUTOR=DISTRIBUTOR,
        W2E_CHAIN_ID="31337",
        W2E_ADMIN_TOKEN=TOKEN,
        W2E_RATE_LIMIT="0",
        W2E_BODY_TIMEOUT=str(BODY_TIMEOUT),
    )
    env.update(extra)
    return env


@pytest.fixture
def world(tmp_path: Path) -> World:
    """Registries in the server's database before it starts: honest receipts are accepted."""
    w = World()
    with open_store(f"sqlite:///{tmp_path}/edge.db", create=True) as store:
        w.register(store)
    return w


def _honest_batch(w: World, n: int = 4) -> bytes:
    now = int(time.time())
    receipts = [w.view(secrets.token_bytes(32), 16, now - 100, started=now - 200) for _ in range(n)]
    return orjson.dumps({"receipts": wire(*receipts)})


def _stall(port: int) -> socket.socket:
    """Headers and the start of a batch, then nothing: a client on a slow or hostile link."""
    s = socket.create_connection((HOST, port))
    s.sendall(
        b"POST /v1/receipts HTTP/1.1\r\nHost: edge\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100000\r\n\r\n" + b'{"receipts":['
    )
    return s


def _read_answer(s: socket.socket, timeout: float) -> bytes:
    s.settimeout(timeout)
    data = b""
    try:
        while chunk := s.recv(65536):
            data += chunk
    except TimeoutError:
        pass
    return data


def test_stalled_bodies_hold_no_slot_and_get_408(tmp_path: Path, world: World) -> None:
    with ServerProcess(_env(tmp_path), workers=1, log=tmp_path / "server.log") as server:
        stalled = [_stall(server.port) for _ in range(STALLED)]
        try:
            time.sleep(0.3)  # every stalled request is inside the app, waiting for its body
            started = time.monotonic()
            with httpx.Client(base_url=server.url, timeout=10) as client:
                for _ in range(5):
                    r = client.post(
                        "/v1/receipts",
                        content=_honest_batch(world),
                        headers={"content-type": "application/json"},
                    )
                    assert r.status_code == 200, r.text[:300]
                    assert r.json()["summary"].get("accepted") == 4, r.text[:300]
            # Answered while the stalled sockets were still inside their deadline.
            assert time.monotonic() - started < BODY_TIMEOUT
            # Past the deadline each stalled request is answered 408 and its connection closed.
            for s in stalled:
                answer = _read_answer(s, BODY_TIMEOUT + 5)
                head, _, body = answer.partition(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 408"), answer[:300]
                assert b"retry-after: 1" in head.lower()
                assert orjson.loads(body)["error"] == "RequestTimeout"
        finally:
            for s in stalled:
                s.close()


def test_stalled_request_heads_are_cut_off_and_connections_bounded(
    tmp_path: Path, world: World
) -> None:
    head_timeout, limit = 2.0, 8
    env = _env(tmp_path, W2E_HEAD_TIMEOUT=str(head_timeout), W2E_LIMIT_CONCURRENCY=str(limit))
    with ServerProcess(env, workers=1, log=tmp_path / "server.log") as server:
        stalled = []
        for i in range(STALLED):
            s = socket.create_connection((HOST, server.port))
            if i % 2:  # half send part of a request line, half nothing at all
                s.sendall(b"POST /v1/receipts HTTP/1.1\r\nHost: ed")
            stalled.append(s)
        try:
            time.sleep(0.3)
            started = time.monotonic()
            with httpx.Client(base_url=server.url, timeout=10) as client:
                # W2E_LIMIT_CONCURRENCY connections are open: uvicorn refuses more work.
                assert client.get("/healthz").status_code == 503
            # Each stalled connection is closed once its head is W2E_HEAD_TIMEOUT late ...
            for s in stalled:
                assert _read_answer(s, head_timeout + 5) == b""
            assert time.monotonic() - started < head_timeout + 2
            # ... which frees the places for honest clients.
            r = httpx.post(
                server.url + "/v1/receipts",
                content=_honest_batch(world),
                headers={"content-type": "application/json"},
                timeout=10,
            )
            assert r.status_code == 200, r.text[:300]
        finally:
            for s in stalled:
                s.close()


def _routes() -> list[tuple[str, str]]:
    """(method, path with its parameters filled) of every route the app serves: those of its
    OpenAPI schema, and the plain ones outside it (/docs, /openapi.json)."""
    app = create_app(Settings(_env_file=None))
    templates = {
        (method.upper(), path)
        for path, operations in app.openapi()["paths"].items()
        for method in operations
    }
    for route in app.routes:
        if isinstance(route, Route):
            templates |= {(m, route.path) for m in route.methods or () if m != "HEAD"}
    found = []
    for method, template in sorted(templates):
        path = template
        for name, filler in FILLERS.items():
            path = path.replace("{" + name + "}", filler)
        found.append((method, re.sub(r"\{[a-z_]+\}", "1", path)))
    return found


def _limit(path: str) -> int:
    if path == "/v1/receipts":
        return RECEIPTS_LIMIT
    return ADMIN_LIMIT if path.startswith("/v1/admin") else PUBLIC_LIMIT


def _chunks(total: int, size: int = 256 * 1024) -> Iterator[bytes]:
    yield b'{"receipts":['
    sent = 13
    while sent < total:
        yield b" " * min(size, total - sent)
        sent += size


def test_every_route_refuses_big_deep_and_wide_bodies_in_bounded_memory(
    tmp_path: Path,
) -> None:
    routes = _routes()
    assert ("POST", "/v1/receipts") in routes
    assert ("POST", "/v1/admin/registries") in routes
    assert ("POST", "/v1/nodes/registrations") in routes
    assert len(routes) >= 20
    env = _env(tmp_path, W2E_MAX_JSON_ELEMENTS=str(MAX_ELEMENTS))
    deep = b"[" * 5000 + b"]" * 5000  # 10 KB: inside every route's size limit
    wide = b"[" + b"0," * (MAX_ELEMENTS + 10) + b"0]"
    with ServerProcess(env, workers=1, log=tmp_path / "server.log") as server:
        base_peak = server.peak_rss_mb()
        headers = {"content-type": "application/json"}
        with httpx.Client(base_url=server.url, timeout=30) as client:
            for method, path in routes:
                limit = _limit(path)
                where = (method, path)
                # Declared too large: refused before a byte of it is read.
                r = client.request(method, path, content=b" " * (limit + 1), headers=headers)
                assert r.status_code == 413, (where, r.text[:200])
                if method != "HEAD":  # an answer to HEAD has no body
                    assert r.json()["error"] == "PayloadTooLarge"
                # Chunked, no length: refused once the limit is passed, connection closed.
                r = client.request(method, path, content=_chunks(limit + 1), headers=headers)
                assert r.status_code == 413, (where, r.text[:200])
                assert r.headers["connection"] == "close"
                for body in (deep, wide):
                    r = client.request(method, path, content=body, headers=headers)
                    assert r.status_code == 422, (where, r.text[:200])
                    if method != "HEAD":
                        assert r.json()["error"] == "JsonTooComplex", (where, r.text[:200])
            # The costliest body a client may send: 16 MiB of the receipts route, nested
            # arrays inside one item (the 850 MB, 9 s of CPU).
            cpu = server.cpu_seconds()
            nested = b'{"receipts":[[' + b"[]," * ((RECEIPTS_LIMIT - 20) // 3) + b"[]]]}"
            assert len(nested) <= RECEIPTS_LIMIT
            r = client.post("/v1/receipts", content=nested, headers=headers)
            assert r.status_code == 422 and r.json()["error"] == "JsonTooComplex", r.text[:200]
            assert server.cpu_seconds() - cpu < 2.0
        # Bound: the body limits are 16 MiB at most; reading one whole, joining it and the
        # scan's copies stay within ~4 of them.
        grown = server.peak_rss_mb() - base_peak
        print(f"every-route peak RSS growth {grown:.1f} MB")
        assert grown < 96, f"peak RSS grew by {grown:.0f} MB"


def test_a_48_mb_unauthenticated_admin_post_is_a_quick_413(tmp_path: Path) -> None:
    body = b'{"nodes": [' + b" " * (48 * 1024 * 1024) + b"]}"
    with ServerProcess(_env(tmp_path), workers=1, log=tmp_path / "server.log") as server:
        base_peak = server.peak_rss_mb()
        for path in ("/v1/admin/registries", "/v1/nodes/registrations"):
            started = time.monotonic()
            r = httpx.post(
                server.url + path,
                content=body,
                headers={"content-type": "application/json"},
                timeout=30,
            )
            took = time.monotonic() - started
            assert r.status_code == 413, r.text[:300]
            assert r.json()["error"] == "PayloadTooLarge"
            setting = "W2E_MAX_ADMIN_BODY_BYTES" if "admin" in path else "W2E_MAX_PUBLIC_BODY"
            assert setting in r.json()["message"]  # says what to raise
            assert took < 3.0, f"{path}: {took:.1f} s"
        grown = server.peak_rss_mb() - base_peak
        print(f"48MB admin peak RSS growth {grown:.1f} MB")
        assert grown < 16, f"peak RSS grew by {grown:.0f} MB"


def test_honest_admin_and_registration_bodies_still_pass(tmp_path: Path, world: World) -> None:
    doc: dict[str, Any] = {
        "content": [
            {"contentId": "0x" + secrets.token_hex(32), "creator": "0x" + "ab" * 20}
            for _ in range(2000)  # ~300 KB, under the 1 MiB admin limit
        ]
    }
    with ServerProcess(_env(tmp_path), workers=1, log=tmp_path / "server.log") as server:
        r = httpx.post(
            server.url + "/v1/admin/registries",
            json=doc,
            headers={"authorization": f"Bearer {TOKEN}"},
            timeout=30,
        )
        assert r.status_code == 200, r.text[:300]
        r = httpx.post(
            server.url + "/v1/receipts",
            content=_honest_batch(world, 1000),
            headers={"content-type": "application/json"},
            timeout=30,
        )
        assert r.status_code == 200 and r.json()["summary"].get("accepted") == 1000, r.text[:300]

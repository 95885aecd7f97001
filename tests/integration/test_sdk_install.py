"""The base install is the SDK: `pip install w2e-settlement` (no extras) into a fresh venv
signs, verifies and submits receipts to a real server (started here, from the test venv),
and does not bring the server's dependencies (FastAPI, psycopg, py-evm, ...)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # a venv and a pip install from the local index: a minute

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "sdk-test-token"
VIEWER_KEY = "0x" + "11" * 32
NODE = "0x" + "22" * 20
CONTENT = "0x" + "33" * 32
CREATOR = "0x" + "44" * 20
DISTRIBUTOR = "0x" + "55" * 20
CHAIN_ID = 31337
# Top-level modules of the server's dependencies: `eth` is py-evm's, `eth_tester` its harness.
SERVER_ONLY = ["fastapi", "uvicorn", "psycopg", "sqlmodel", "sqlalchemy", "alembic",
               "apscheduler", "eth", "eth_tester", "web3", "typer", "pydantic_settings",
               "prometheus_client"]  # fmt: skip

# Runs inside the fresh venv: everything an SDK user does, through the public imports only.
PLAYER = r"""
import importlib.util, json, sys, time
from settlement.client import ReceiptSigner, SettlementClient
from settlement.domain.receipts import Accepted, Domain, Params, verify
from settlement.domain.wire import dumps_wire, verify_wire
from settlement.domain import merkle  # the auditor's half: importable from the base install

args = json.loads(sys.argv[1])
domain = Domain.from_hex(args["chain_id"], args["distributor"])
signer = ReceiptSigner.from_hex(args["key"], domain)
now = int(time.time())
session = signer.start_session(args["content"], started_at=now - 60)
receipts = [
    session.delivery(args["node"], bytes_served=4 * 1_000_000, segments_served=4),
    session.view(watch_seconds=16),
]
params = Params(genesis=args["genesis"], clock_skew=120, max_age=7 * 86400,
                max_session_age=86400, segment_seconds=4, max_bitrate=50_000_000,
                max_lead_seconds=30, min_segment_bytes=8192)
local = [type(verify(r, domain, params, now)).__name__ for r in receipts]
wire = [type(verify_wire(json.loads(dumps_wire(r)), domain, params, now)).__name__ for r in receipts]
with SettlementClient(args["url"]) as client:
    result = client.submit(receipts)
    again = client.submit(receipts)
print(json.dumps({
    "viewer": signer.address_hex,
    "local": local,
    "wire": wire,
    "server": [v.label for v in result.verdicts],
    "again": [v.label for v in again.verdicts],
    "importable": sorted(m for m in args["server_only"] if importlib.util.find_spec(m)),
    "merkle_root": merkle.tree_for_balances({args["node"]: 5}).root,
}))
"""


def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, **kwargs)
    assert done.returncode == 0, f"{cmd}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def sdk_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with only the base package installed (from a copy of the sources, so the
    build leaves nothing in the working tree)."""
    base = tmp_path_factory.mktemp("sdk")
    src = base / "src"
    src.mkdir()
    shutil.copy(ROOT / "pyproject.toml", src)
    shutil.copy(ROOT / "README.md", src)
    shutil.copytree(
        ROOT / "settlement", src / "settlement", ignore=shutil.ignore_patterns("__pycache__")
    )
    _run([sys.executable, "-m", "venv", str(base / "venv")])
    python = base / "venv" / "bin" / "python"
    # The same package sources as scripts/setup (pip's configured index and wheel dirs).
    _run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(src)])
    return python


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The real API over a SQLite store, in a thread of this (the test venv's) process."""
    import uvicorn

    from settlement.adapters.db.store import open_store
    from settlement.api.app import create_app
    from settlement.config import Settings
    from settlement.domain.receipts import address_of
    from settlement.services.ingest import load_registries

    database_url = f"sqlite:///{tmp_path_factory.mktemp('server')}/sdk.db"
    settings = Settings(
        database_url=database_url,
        admin_token=TOKEN,
        rate_limit=0,
        chain_id=CHAIN_ID,
        distributor=DISTRIBUTOR,
    )
    store = open_store(database_url)
    viewer = "0x" + address_of(bytes.fromhex(VIEWER_KEY[2:])).hex()
    load_registries(
        store,
        {
            "nodes": [{"address": NODE, "label": "node-0", "active": True}],
            "content": [{"contentId": CONTENT, "creator": CREATOR}],
            "viewers": [viewer],
        },
    )
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings, store), log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
        store.close()


def test_base_install_signs_verifies_and_submits_without_server_dependencies(
    sdk_python: Path, server_url: str
) -> None:
    from settlement.config import Settings

    args = {
        "key": VIEWER_KEY,
        "chain_id": CHAIN_ID,
        "distributor": DISTRIBUTOR,
        "node": NODE,
        "content": CONTENT,
        "url": server_url,
        "genesis": Settings().genesis,
        "server_only": SERVER_ONLY,
    }
    # Outside the repository, so `settlement` can only come from the venv's install.
    out = _run([str(sdk_python), "-c", PLAYER, json.dumps(args)], cwd=sdk_python.parent)
    got = json.loads(out.stdout)
    assert got["importable"] == []
    assert got["local"] == ["Accepted", "Accepted"]
    assert got["wire"] == ["Accepted", "Accepted"]
    assert got["server"] == ["accepted", "accepted"]
    assert got["again"] == ["duplicate", "duplicate"]
    location = _run(
        [str(sdk_python), "-c", "import settlement; print(settlement.__file__)"],
        cwd=sdk_python.parent,
    ).stdout
    assert str(ROOT) not in location  # the installed copy, not the working tree
    # The script is installed with the package; without the server extra it says so.
    cli = subprocess.run(
        [str(sdk_python.parent / "settlement"), "--help"], capture_output=True, text=True
    )
    assert cli.returncode == 1
    assert "pip install 'w2e-settlement[server]'" in cli.stderr

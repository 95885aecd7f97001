"""The watchtower on anvil (issue 14 item 4): the poster key posts a bad root and the
watchtower, auditing its dataset over HTTP, revokes it before validAt (and with
--pause-on-failure pauses too); a good root is left alone and accepted once due."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import uvicorn
from eth_account import Account
from support.anvil import Anvil, free_port
from test_submitter_anvil import ANVIL, HOUR, Net, make_net

from settlement.adapters import chain as c
from settlement.adapters.db import submitter as sdb
from settlement.adapters.db.epochs import EpochStore
from settlement.api.app import create_app
from settlement.domain import dataset
from settlement.domain.merkle import MerkleTree
from settlement.services.published import epoch_data_uri
from settlement.services.submit import epoch_dump_path
from settlement.services.watchtower import (
    FullAudit,
    WatchMetrics,
    Watchtower,
    chained,
    manifest_audit,
)

pytestmark = pytest.mark.slow  # starts anvil nodes


@pytest.fixture
def net(tmp_path: Path) -> Iterator[Net]:
    """A net whose datasets are served over HTTP under W2E_DATA_BASE_URI."""
    with Anvil(ANVIL) as node:
        n = make_net(tmp_path, node.url, funded_epochs=5)
        port = free_port()
        n.settings = n.settings.model_copy(
            update={"data_base_uri": f"http://127.0.0.1:{port}/v1/data"}
        )
        server = uvicorn.Server(
            uvicorn.Config(
                create_app(n.settings, n.store), host="127.0.0.1", port=port, log_level="error"
            )
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 20
        while not server.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.02)
        try:
            yield n
        finally:
            server.should_exit = True
            thread.join(10)
            n.store.close()


def _tower(n: Net, **kwargs: Any) -> Watchtower:
    full = FullAudit(n.distributor, from_block=n.deployment.block)
    return Watchtower(
        n.distributor,
        chained(manifest_audit(), full),
        from_block=n.deployment.block,
        guardian=n.guardian,
        metrics=WatchMetrics(),
        **kwargs,
    )


def _post_bad_root(n: Net, epoch: int) -> MerkleTree:
    """The poster key proposes a root the published dataset does not give: an attacker's
    leaf added to the true balances, under the true epoch's dataHash and dataURI."""
    stored = EpochStore(n.store).get(epoch)
    assert stored is not None
    dump = epoch_dump_path(n.settings, stored.manifest)
    assert dump is not None
    true = MerkleTree.load(Path(dump).read_bytes())
    values = dict(true.values)
    values[c.Key.generate("attacker").address.lower()] = 10**18
    bad = MerkleTree.of(sorted(values.items()))
    n.chain.transact(
        n.poster,
        n.distributor.propose_root(
            epoch,
            bad.root,
            bad.cumulative_total,
            "0x" + stored.data_hash.hex(),
            epoch_data_uri(n.settings, epoch),
        ),
    )
    return bad


def _post_tampered_dataset(n: Net, epoch: int, tmp: Path) -> str:
    """The poster key proposes the epoch's true root and total with a dataset of its own
    whose manifest agrees with them, but one published receipt's signature has a flipped
    byte: only an audit of the files behind the manifest can see it. Returns its dataHash."""
    src = Path(n.settings.data_dir, f"epoch-{epoch:08d}")
    out = tmp / "elsewhere" / src.name
    shutil.copytree(src, out)
    doc = orjson.loads((out / dataset.MANIFEST).read_bytes())
    (entry,) = [f for f in doc["files"] if f["name"] == dataset.DELIVERY_RECEIPTS]
    path = out / f"{entry['sha256']}.ndjson"
    lines = path.read_bytes().split(b"\n")
    first = orjson.loads(lines[0])
    sig = first["signature"]
    first["signature"] = sig[:10] + ("0" if sig[10] != "0" else "1") + sig[11:]
    lines[0] = orjson.dumps(first, option=orjson.OPT_SORT_KEYS)
    data = b"\n".join(lines)
    path.unlink()
    sha = hashlib.sha256(data).hexdigest()
    (out / f"{sha}.ndjson").write_bytes(data)
    entry.update(sha256=sha, size=str(len(data)))
    raw = orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)
    (out / dataset.MANIFEST).write_bytes(raw)
    data_hash = "0x" + dataset.data_hash(raw).hex()
    n.chain.transact(
        n.poster,
        n.distributor.propose_root(
            epoch, doc["root"], int(doc["cumulativeTotal"]), data_hash, str(out / dataset.MANIFEST)
        ),
    )
    return data_hash


def _block_time(n: Net, block: int) -> int:
    return int(n.chain.w3.eth.get_block(block)["timestamp"])


def test_bad_root_is_revoked_before_valid_at(net: Net) -> None:
    n, d = net, net.distributor
    n.close(1)
    bad = _post_bad_root(n, 1)
    pending = d.pending_root()
    assert pending is not None and pending.root == bad.root
    tower = _tower(n)
    (action,) = tower.step()
    assert action.did == "revoked" and action.proposal.root == bad.root
    assert "root: manifest" in action.verdict.summary
    assert d.pending_root() is None and d.root() == "0x" + "00" * 32
    (revoked,) = [e for e in c.read_events(d, n.deployment.block) if e.name == "RootRevoked"]
    assert revoked.args["root"] == bad.root
    assert _block_time(n, revoked.block_number) < pending.valid_at
    m = tower.metrics
    assert m.value("w2e_watchtower_roots_seen_total") == 1
    assert m.value("w2e_watchtower_roots_audited_total") == 1
    assert m.value("w2e_watchtower_roots_failed_total") == 1
    assert m.value("w2e_watchtower_roots_revoked_total") == 1
    assert m.value("w2e_watchtower_last_audited_epoch") == 1
    assert m.value("w2e_watchtower_window_seconds_left") == 0  # nothing pending now
    assert not d.paused()
    assert tower.step() == []  # acted once

    # The service's own proposal of the same epoch is then audited clean and left alone.
    sub = n.submitter()
    (row,) = sub.step()
    assert row.status == sdb.MINED
    (action,) = tower.step()
    assert action.did == "left" and action.verdict.ok
    assert action.proposal.data_uri.startswith(n.settings.data_base_uri or "unset")
    assert 0 < m.value("w2e_watchtower_window_seconds_left") <= HOUR
    assert m.value("w2e_watchtower_roots_revoked_total") == 1
    n.chain.increase_time(HOUR)
    assert sub.step()[0].status == sdb.ACCEPTED
    assert tower.step() == [] and d.current_epoch() == 1


def test_tampered_dataset_under_the_true_root_is_revoked(net: Net, tmp_path: Path) -> None:
    n, d = net, net.distributor
    n.close(1)
    data_hash = _post_tampered_dataset(n, 1, tmp_path)
    pending = d.pending_root()
    assert pending is not None and pending.data_hash == data_hash
    tower = _tower(n)
    (action,) = tower.step()
    assert action.did == "revoked", action.message
    assert "delivery_receipts" in action.verdict.summary, action.verdict.summary
    assert d.pending_root() is None
    (revoked,) = [e for e in c.read_events(d, n.deployment.block) if e.name == "RootRevoked"]
    assert _block_time(n, revoked.block_number) < pending.valid_at


def test_good_root_is_left_alone(net: Net) -> None:
    n, d = net, net.distributor
    n.close(2)
    sub = n.submitter()
    (row,) = sub.step()
    assert row.status == sdb.MINED and row.data_uri == epoch_data_uri(n.settings, 2)
    tower = _tower(n, pause_on_failure=True)
    (action,) = tower.step()
    assert action.did == "left" and action.verdict.ok
    assert d.pending_root() is not None and not d.paused()
    assert tower.metrics.value("w2e_watchtower_roots_failed_total") == 0
    n.chain.increase_time(HOUR)
    assert sub.step()[0].status == sdb.ACCEPTED
    assert d.root() == row.root and tower.step() == []
    assert tower.metrics.value("w2e_watchtower_roots_revoked_total") == 0


def test_pause_on_failure_revokes_and_pauses(net: Net) -> None:
    n, d = net, net.distributor
    n.close(1)
    _post_bad_root(n, 1)
    tower = _tower(n, pause_on_failure=True)
    (action,) = tower.step()
    assert action.did == "revoked+paused"
    assert d.pending_root() is None and d.paused()
    assert tower.metrics.value("w2e_watchtower_pauses_total") == 1


def _metrics(port: int) -> dict[str, float]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    out = {}
    for line in text.splitlines():
        if line.startswith("w2e_watchtower_"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def _until(check: Any, what: str, timeout: float = 90) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_cli_watch_revokes_a_bad_root_and_serves_metrics(net: Net, tmp_path: Path) -> None:
    """`settlement audit --watch` as an operator runs it: its own process, a guardian key of
    its own in the environment (never printed), metrics on a port."""
    n, d = net, net.distributor
    secret = Account.create()
    n.chain.transact(n.guardian, d.grant_role(c.GUARDIAN_ROLE, secret.address))
    n.chain.set_balance(secret.address, 10**20)  # its gas
    key_hex = "0x" + bytes(secret.key).hex()
    n.close(1)
    port = free_port()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "W2E_WATCH_GUARDIAN": key_hex,
        "W2E_GUARDIAN_KEY_ENV": "W2E_WATCH_GUARDIAN",
        "W2E_CHAIN_POLL_INTERVAL": "0.05",
    }
    log = tmp_path / "watch.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "settlement.cli", "audit", "--watch",
             "--rpc", n.chain.url or "", "--distributor", d.address,
             "--from-block", str(n.deployment.block), "--interval", "0.2",
             "--metrics-port", str(port), "--pause-on-failure"],
            env=env, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        _until(lambda: _metrics_or_none(port), "the metrics port")
        bad = _post_bad_root(n, 1)
        pending = d.pending_root()
        assert pending is not None and pending.root == bad.root
        _until(lambda: d.pending_root() is None, "the revoke")
        m = _until(
            lambda: (x := _metrics_or_none(port)) and x.get("w2e_watchtower_pauses_total") and x,
            "the metrics after the revoke",
        )
        assert m["w2e_watchtower_roots_seen_total"] == 1
        assert m["w2e_watchtower_roots_failed_total"] == 1
        assert m["w2e_watchtower_roots_revoked_total"] == 1
        assert m["w2e_watchtower_last_audited_epoch"] == 1
        assert d.paused()
        (revoked,) = [e for e in c.read_events(d, n.deployment.block) if e.name == "RootRevoked"]
        assert _block_time(n, revoked.block_number) < pending.valid_at
    finally:
        proc.terminate()
        proc.wait(20)
    text = log.read_text()
    assert "revoked root" in text and key_hex[2:] not in text and key_hex[2:].lower() not in text


def _metrics_or_none(port: int) -> dict[str, float] | None:
    try:
        return _metrics(port)
    except httpx.HTTPError:
        return None

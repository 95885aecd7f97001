"""`settlement serve` with all four components on anvil and SQLite (issue 16 item 4): each
child starts; a receipt is ingested through the API, an epoch closed by the scheduler, a root
proposed by the submitter and audited by the watchtower; the funding-margin gauge equals
balance - (allocated - claimed); a killed child is restarted; SIGTERM stops everything; and
every log line is one JSON object with the same fields."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from eth_account import Account
from support.anvil import Anvil, find_anvil
from support.deploy import ROLES, deploy_with_keys

from settlement.adapters import chain as c
from settlement.adapters.db.epochs import EpochStore
from settlement.adapters.db.store import open_store
from settlement.client import SettlementClient
from settlement.config import Settings
from settlement.domain.merkle import MerkleTree
from settlement.domain.receipts import Params
from settlement.services.submit import epoch_dump_path
from settlement.sim.generate import SimConfig, generate
from settlement.sim.post import post, upload_registries

pytestmark = pytest.mark.slow  # anvil, four child processes, real epochs

ANVIL = find_anvil()
EPOCH = 300
GRACE = 10
EMISSION = 1000 * 10**18
ADMIN_TOKEN = "t" * 40
FIELDS = ["time", "level", "component", "logger", "message"]


def _free_ports(n: int) -> int:
    """A base port with `n` free ports from it."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + n > 65535:
            continue
        try:
            with contextlib.ExitStack() as stack:
                for p in range(base, base + n):
                    sock = stack.enter_context(socket.socket())
                    sock.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
    raise RuntimeError("no run of free ports")


TAIL: list[object] = []  # the running test's Log, for failure messages


def _wait(what: str, check: object, timeout: float = 120.0, every: float = 0.25) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            got = check()  # type: ignore[operator]
            if got:
                return got
        time.sleep(every)
    tail = TAIL[-1].tail() if TAIL else ""  # type: ignore[attr-defined]
    raise AssertionError(f"timed out waiting for {what}; serve's log ends:\n{tail}")


def _metric(port: int, name: str, **labels: str) -> float | None:
    """The value of sample `name` with `labels` on 127.0.0.1:port/metrics (None: absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


class Log:
    def __init__(self, path: Path) -> None:
        self.path = path

    def lines(self) -> list[str]:
        return self.path.read_text().splitlines() if self.path.exists() else []

    def events(self) -> list[dict[str, str]]:
        return [json.loads(line) for line in self.lines()]

    def started(self) -> dict[str, list[int]]:
        """component -> pids it was started with, in order."""
        out: dict[str, list[int]] = {}
        for line in self.lines():
            with contextlib.suppress(ValueError):
                e = json.loads(line)
                m = e["message"]
                if e["logger"] == "settlement.serve" and m.startswith("started "):
                    name, pid = m.removeprefix("started ").split(" (pid ")
                    out.setdefault(name, []).append(int(pid.rstrip(")")))
        return out

    def tail(self) -> str:
        return "\n".join(self.lines()[-60:])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


@pytest.fixture
def anvil() -> Iterator[Anvil]:
    if ANVIL is None:
        pytest.skip("anvil (node_modules) is not installed")
    # A block a second, as on a live chain: acceptRoot waits for a block past validAt.
    with Anvil(ANVIL, args=["--block-time", "1"]) as node:
        yield node


def test_serve_runs_supervises_and_stops_all_four(anvil: Anvil, tmp_path: Path) -> None:
    chain = c.connect(rpc_url=anvil.url, poll_interval=0.02)
    secrets = {n: Account.create() for n in ROLES}
    keys, deployment = deploy_with_keys(
        chain, challenge_period=5, mint=10 * EMISSION, fund=4 * EMISSION, accounts=secrets
    )
    c.save_deployment(deployment, tmp_path / "deployment.json")
    # Epochs of 5 minutes; epoch 1 ends, with its grace, 150 s from now. Sessions start in
    # its first 20 s and last at most 100 s (W2E_MAX_SESSION_AGE 700), so every receipt is
    # past now, in epoch 1, and reaches the API well before the scheduler closes epoch 1.
    genesis = int(time.time()) + 150 - EPOCH - GRACE
    port, metrics = _free_ports(1), _free_ports(3)
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "W2E_DATABASE_URL": f"sqlite:///{tmp_path}/serve.db",
        "W2E_DATA_DIR": str(tmp_path / "epochs"),
        "W2E_GENESIS": str(genesis),
        "W2E_EPOCH_SECONDS": str(EPOCH),
        "W2E_GRACE_SECONDS": str(GRACE),
        "W2E_MAX_SESSION_AGE": "700",
        "W2E_CHAIN_ID": str(chain.chain_id),
        "W2E_DISTRIBUTOR": deployment.distributor,
        "W2E_RPC_URL": anvil.url,
        "W2E_DEPLOYMENT_FILE": str(tmp_path / "deployment.json"),
        "W2E_CHAIN_POLL_INTERVAL": "0.05",
        "W2E_CHALLENGE_PERIOD": "5",
        "W2E_ADMIN_TOKEN": ADMIN_TOKEN,
        "W2E_REGISTRY_MODE": "approval",
        "W2E_SCHEDULER_INTERVAL": "0.5",
        "W2E_SUBMITTER_INTERVAL": "0.5",
        "W2E_METRICS_PORT": str(metrics),
        "W2E_LOG_FORMAT": "json",
        "W2E_POSTER_KEY": "0x" + bytes(secrets["poster"].key).hex(),
        "W2E_GUARDIAN_KEY": "0x" + bytes(secrets["guardian"].key).hex(),
    }
    settings = Settings(
        **{k[4:].lower(): v for k, v in env.items() if k.startswith("W2E_") and "KEY" not in k}
    )
    cfg = SimConfig(
        seed=5,
        receipts=600,
        nodes=4,
        viewers=30,
        creators=3,
        contents=8,
        chain_id=chain.chain_id,
        distributor=bytes.fromhex(deployment.distributor[2:]),
        start=genesis,
        window=20,
        params=Params.from_settings(settings),
        workers=1,
    )
    sim = generate(cfg, tmp_path / "sim")

    log = Log(tmp_path / "serve.log")
    TAIL.append(log)
    out = log.path.open("wb")
    argv = [sys.executable, "-m", "settlement.cli", "serve", "--port", str(port), "--workers", "1"]
    serve = subprocess.Popen(argv, env=env, cwd=tmp_path, stdout=out, stderr=out)
    out.close()
    url = f"http://127.0.0.1:{port}"
    try:
        started = _wait(
            "four children", lambda: len(log.started()) == 4 and log.started(), timeout=60
        )
        assert set(started) == {"api", "scheduler", "submitter", "watchtower"}, log.tail()  # type: ignore[arg-type]
        first = {name: pids[0] for name, pids in log.started().items()}
        assert all(_alive(pid) for pid in first.values()), log.tail()

        # A receipt ingested: the registries, then the receipts, through the API.
        _wait("the API", lambda: httpx.get(url + "/readyz", timeout=2).status_code == 200)
        upload_registries(url, sim.out_dir / "registries.json", ADMIN_TOKEN)
        with SettlementClient(url) as client:
            counts = post(sim.receipts_path, client)
        assert counts.get("accepted", 0) > 0, counts
        assert (_metric(port, "w2e_receipts_total", verdict="accepted") or 0) > 0

        # Epoch 1 closed by the scheduler, its root proposed and accepted by the submitter,
        # that proposal audited by the watchtower.
        distributor = c.Distributor(chain, deployment.distributor)
        # The receipts came before the close:
        _wait("scheduler metrics", lambda: _metric(metrics, "w2e_last_closed_epoch") == 0)
        _wait("epoch 1 closed", lambda: _metric(metrics, "w2e_last_closed_epoch") == 1, timeout=240)
        _wait("a root accepted", lambda: distributor.current_epoch() >= 1, timeout=180)
        _wait(
            "the watchtower's audit",
            lambda: (_metric(metrics + 2, "w2e_watchtower_roots_audited_total") or 0) >= 1,
            timeout=180,
        )
        assert _metric(metrics + 2, "w2e_watchtower_roots_failed_total") == 0, log.tail()

        # Its verdict kept in the store, shown by the explorer on epoch 1's root (issue 16).
        def audit_of_epoch_1() -> object:
            listed = httpx.get(url + "/v1/epochs", timeout=5).json()
            return next(e for e in listed if e["epoch"] == 1)["audit"]

        audit = _wait("the verdict on the explorer", audit_of_epoch_1, timeout=60)
        assert audit["ok"] is True and audit["source"] == "watchtower", audit  # type: ignore[index]
        page = httpx.get(url + "/epochs/1", timeout=5).text
        assert "Audited by the watchtower at" in page and "clean" in page, page
        assert "Not audited here" not in page

        # The funding margin: balance - (allocated by the latest close - claimed), before
        # and after a claim (the submitter indexes the Claimed event, the balance drops).
        with open_store(env["W2E_DATABASE_URL"], create=False) as store:
            stored = EpochStore(store).get(1)
        assert stored is not None and stored.cumulative_total > 0
        allocated = stored.cumulative_total
        balance = distributor.token.balance_of(distributor.address)
        assert balance == 4 * EMISSION
        _wait(
            "the funding margin gauge",
            lambda: (
                _metric(metrics + 1, "w2e_distributor_funding_margin_base_units")
                == balance - allocated
            ),
        )
        dump = epoch_dump_path(settings, stored.manifest)
        assert dump is not None
        account, amount = MerkleTree.load(Path(dump).read_bytes()).values[0]
        body = httpx.get(f"{url}/v1/accounts/{account}/claim", timeout=30).json()
        assert body["cumulativeAmount"] == str(amount), body
        chain.transact(keys["admin"], c.Call(body["contract"], body["calldata"], "claim"))
        after = distributor.token.balance_of(distributor.address)
        assert after == balance - amount > 0
        expected = after - (allocated - amount)
        _wait(
            "the funding margin gauge after a claim",
            lambda: _metric(metrics + 1, "w2e_distributor_funding_margin_base_units") == expected,
        )
        assert expected == balance - allocated  # a claim moves tokens, not the margin
        carried = _metric(metrics + 1, "w2e_distributor_next_epoch_pools_base_units")
        assert carried is not None and carried >= EMISSION

        # A killed child is restarted, with a new pid; the others keep theirs.
        os.kill(first["scheduler"], signal.SIGKILL)
        again = _wait(
            "the scheduler restarted", lambda: len(log.started().get("scheduler", [])) == 2
        )
        new = log.started()["scheduler"][1]
        assert again and new != first["scheduler"] and _alive(new)
        assert all(_alive(first[n]) for n in ("api", "submitter", "watchtower"))
        assert any(
            e["level"] == "WARNING" and e["message"].startswith("scheduler exited with signal 9")
            for e in log.events()
        ), log.tail()

        # SIGTERM to serve alone: it stops every child and exits 0.
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(60) == 0, log.tail()
        pids = [pid for ps in log.started().values() for pid in ps]
        _wait("every child gone", lambda: not any(_alive(p) for p in pids), timeout=10)
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.wait()
        with contextlib.suppress(Exception):
            for ps in log.started().values():
                for pid in ps:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)

    # Every line is one JSON event with the same fields, in order; no line twice.
    lines = log.lines()
    assert lines
    for line in lines:
        event = json.loads(line)
        assert list(event)[:5] == FIELDS, line
    components = {json.loads(line)["component"] for line in lines}
    assert {"serve", "scheduler", "submitter", "watchtower"} <= components, components
    messages = [(e["component"], e["message"]) for e in map(json.loads, lines)]
    proposing = [m for m in messages if m[0] == "submitter" and m[1].startswith("proposing root")]
    assert len(proposing) == len(set(proposing)) >= 1, proposing


def test_the_scheduler_of_a_fresh_store_closes_from_the_pinned_genesis(tmp_path: Path) -> None:
    """No W2E_GENESIS, no deployment record: serve pins the store's genesis (now, rounded down
    to an epoch) and its scheduler child closes from it, so nothing is due yet. A scheduler
    that read the class default (2026-01-01) would start closing thousands of empty epochs."""
    from settlement.adapters.db.pinned import pinned

    db = tmp_path / "fresh.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("W2E_")}
    env |= {
        "W2E_DATABASE_URL": f"sqlite:///{db}",
        "W2E_DATA_DIR": str(tmp_path / "epochs"),
        "W2E_DEPLOYMENT_FILE": str(tmp_path / "none.json"),
        "W2E_METRICS_PORT": "0",
        "W2E_SCHEDULER_INTERVAL": "1",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "settlement.cli", "serve", "--no-api", "--scheduler"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        out = ""
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(1)
            if db.exists():
                with open_store(f"sqlite:///{db}") as store:
                    if pinned(store, "genesis") is not None:
                        break
        time.sleep(6)  # a few scheduler ticks
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    with open_store(f"sqlite:///{db}") as store:
        genesis = pinned(store, "genesis")
        assert genesis is not None, out
        assert genesis > 1_767_225_600 and time.time() - genesis < 3600, out
        assert EpochStore(store).last_closed() == 0, out
    assert "catching up" not in out, out

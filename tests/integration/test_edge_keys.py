"""The public edge against forged keys and lasting admin decisions (issue 15, items 2 and 4):
API keys that mean something, rate limits shared through the store by every worker and
instance, trusted proxies, bounded buckets and rejection counts, sticky deactivation, the
admin log, keystore modes and registration requests stored once. On SQLite and PostgreSQL."""

from __future__ import annotations

import logging
import os
import secrets
import stat
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from coincurve import PrivateKey
from fastapi.testclient import TestClient
from storekit import (
    BACKENDS,
    NOW,
    World,
    backend_url,
    key,
    opened,
    require_pg,
    settings,
    wire,
)

from settlement.adapters.db.rejections import UNREGISTERED_NODE
from settlement.adapters.db.store import Store, open_store
from settlement.api.app import create_app
from settlement.domain.access import gcra, token_hash
from settlement.domain.receipts import Domain, address_of
from settlement.domain.registration import NodeRegistrationRequest, sign_registration, to_wire
from settlement.errors import InvalidRegistration
from settlement.services import access
from settlement.services import registry as registry_service
from settlement.services.ingest import Ingestor

TOKEN = "a" * 32
ALICE = "b" * 32
AUTH = {"Authorization": f"Bearer {TOKEN}"}
EMPTY = b'{"receipts":[]}'
SLOW = {"rate_limit": 0.001, "rate_burst": 3}  # one batch per 1,000 s after a burst of 3
ATTACKER = ("203.0.113.7", 40000)
VICTIM = ("198.51.100.9", 40001)


@contextmanager
def client_of(store: Store, peer: tuple[str, int] = ATTACKER, **overrides: Any) -> Iterator[Any]:
    s = settings(admin_token=TOKEN, **overrides)
    with TestClient(create_app(s, store), client=peer) as c:
        yield c


def codes(c: Any, n: int, headers: dict[str, str] | None = None) -> list[int]:
    return [c.post("/v1/receipts", content=EMPTY, headers=headers).status_code for _ in range(n)]


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    with opened(request.param, tmp_path) as s:
        yield s


# --- keys ------------------------------------------------------------------------------------


def test_forged_keys_still_hit_the_limit_of_the_client_address(store: Store) -> None:
    with client_of(store, **SLOW) as c:
        got = []
        for i in range(8):  # a fresh made-up key per request, some shaped like ours
            forged = ("w2e_" if i % 2 else "") + secrets.token_urlsafe(32)
            got += codes(c, 1, {"X-API-Key": forged})
    assert got == [200] * 3 + [429] * 5
    # One bucket, the address's: no made-up key became a bucket name.
    assert list(store.rate_windows()) == [f"addr:{ATTACKER[0]}"]


def test_a_victims_key_cannot_be_spent_by_others(store: Store) -> None:
    row, victim_token = access.create_key(store, "victim", 0.001, 2, who="test")
    with client_of(store, **SLOW) as attacker:
        # Whatever an attacker knows about the key (its name, its id, its hash, a near miss)
        # counts as no key: the attacker's own address pays, the victim's bucket is untouched.
        guesses = ["victim", f"key:{row.id}", token_hash(victim_token).hex(), victim_token[:-1]]
        got = [codes(attacker, 1, {"X-API-Key": g})[0] for g in guesses * 2]
        assert got == [200] * 3 + [429] * 5
    assert f"key:{row.id}" not in store.rate_windows()
    with client_of(store, VICTIM, **SLOW) as victim:
        assert codes(victim, 3, {"X-API-Key": victim_token}) == [200, 200, 429]
        # Its address's own bucket was not spent either: the key's rate applied.
        assert f"addr:{VICTIM[0]}" not in store.rate_windows()
        # Revoked: the token is no key any more (the address's burst of 3 applies).
        access.revoke_key(store, "victim", who="test")
        assert codes(victim, 4, {"X-API-Key": victim_token}) == [200, 200, 200, 429]


def test_a_key_has_its_own_rate_and_refused_answers_look_alike(store: Store) -> None:
    _, token = access.create_key(store, "fast-client", 1000.0, 50, who="test")
    with client_of(store, **SLOW) as c:
        assert codes(c, 20, {"X-API-Key": token}) == [200] * 20
        keyless = codes(c, 4)
        assert keyless == [200] * 3 + [429]
        unknown = c.post("/v1/receipts", content=EMPTY, headers={"X-API-Key": "w2e_" + "x" * 43})
        plain = c.post("/v1/receipts", content=EMPTY)
    # An unknown key gets exactly the keyless answer: nothing says which keys exist.
    assert unknown.status_code == plain.status_code == 429
    assert unknown.json() == plain.json() and "key" not in unknown.json()["message"]


def test_an_oversized_key_is_ignored_and_nothing_of_it_is_stored(store: Store) -> None:
    huge = "w2e_" + "k" * (4 * 1024 * 1024)
    with client_of(store, **SLOW) as c:
        got = codes(c, 5, {"X-API-Key": huge})
    assert got == [200] * 3 + [429] * 2  # counted as keyless, by address
    buckets = store.rate_windows()
    assert list(buckets) == [f"addr:{ATTACKER[0]}"]
    assert store.api_keys() == []


def test_limits_hold_across_two_app_instances_on_one_store(backend: str, tmp_path: Path) -> None:
    """Two instances of the service (each its own pool and Admission, as two workers or two
    hosts) share one budget: the burst is 3 in all, not 3 each."""
    with backend_url(backend, tmp_path) as url, ExitStack() as stack:
        stores = [stack.enter_context(open_store(url)) for _ in range(2)]
        clients = [stack.enter_context(client_of(s, **SLOW)) for s in stores]
        got = [codes(clients[i % 2], 1)[0] for i in range(8)]
    assert got == [200] * 3 + [429] * 5


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_limits_hold_across_two_server_processes_on_postgresql(tmp_path: Path) -> None:
    """Two `settlement serve` processes on one PostgreSQL store: forged keys and made-up
    X-Forwarded-For headers from loopback neither split the budget nor move the bucket."""
    from storekit import pg_schema
    from support.server import ServerProcess

    require_pg()
    with pg_schema() as url:
        open_store(url).close()
        env = {
            **os.environ,
            "W2E_DATABASE_URL": url,
            "W2E_RATE_LIMIT": "0.001",
            "W2E_RATE_BURST": "4",
        }
        env.pop("W2E_TRUSTED_PROXIES", None)
        logs = tmp_path / "one.log", tmp_path / "two.log"
        with ServerProcess(env, log=logs[0]) as one, ServerProcess(env, log=logs[1]) as two:
            got = []
            for i in range(10):
                server = (one, two)[i % 2]
                headers = {
                    "X-API-Key": "w2e_" + secrets.token_urlsafe(32),
                    "X-Forwarded-For": f"198.18.{i}.{i + 1}",
                }
                r = httpx.post(f"{server.url}/v1/receipts", content=EMPTY, headers=headers)
                got.append(r.status_code)
        with open_store(url) as s:
            buckets = list(s.rate_windows())
    assert got == [200] * 4 + [429] * 6
    assert buckets == ["addr:127.0.0.1"]


# --- client addresses ------------------------------------------------------------------------


def test_x_forwarded_for_counts_only_from_a_listed_proxy(store: Store) -> None:
    xff = {"X-Forwarded-For": "192.0.2.55, 10.1.2.3"}
    # Not listed (the default is an empty list): the header is ignored, even from loopback.
    with client_of(store, ("127.0.0.1", 1), **SLOW) as c:
        codes(c, 1, xff)
    with client_of(store, ("10.1.1.1", 1), **SLOW) as c:
        codes(c, 1, xff)
    assert set(store.rate_windows()) == {"addr:127.0.0.1", "addr:10.1.1.1"}
    # Listed: the first untrusted hop from the right is the client; the proxies pay nothing.
    store.prune_rate_windows(2**62)
    with client_of(store, ("10.1.1.1", 1), trusted_proxies=["10.0.0.0/8"], **SLOW) as c:
        assert codes(c, 4, xff) == [200, 200, 200, 429]
        assert codes(c, 1, {"X-Forwarded-For": "192.0.2.56"}) == [200]
    with client_of(store, ATTACKER, trusted_proxies=["10.0.0.0/8"], **SLOW) as c:
        codes(c, 1, {"X-Forwarded-For": "192.0.2.57"})  # not from a proxy: ignored
    assert set(store.rate_windows()) == {
        "addr:192.0.2.55",
        "addr:192.0.2.56",
        f"addr:{ATTACKER[0]}",
    }


def test_address_buckets_are_pruned_once_full_again(store: Store) -> None:
    s = settings(rate_limit=10.0, rate_burst=2)
    admission = access.Admission(store, s)
    t = time.time()
    for i in range(300):
        admission.admit(None, f"addr:192.0.2.{i % 250}/{i}", t)
    assert len(store.rate_windows()) == 300
    # A minute on, every one of those buckets is full again: the next request prunes them.
    admission.admit(None, "addr:198.51.100.1", t + access.PRUNE_EVERY + 1)
    assert list(store.rate_windows()) == ["addr:198.51.100.1"]


def test_the_stores_gcra_is_the_domains(store: Store) -> None:
    import random

    rnd = random.Random(15)
    tat: int | None = None
    now = 10**15
    for _ in range(300):
        now += rnd.choice([0, 0, 1, 200, 999, 1000, 1001, 5000])
        period, burst = 1000, rnd.choice([1, 3])
        want = gcra(tat, now, period, burst)
        got = store.take_rate(None, "addr:gcra", period, burst, now)
        assert (got.allowed, got.tat) == (want.allowed, want.tat), (tat, now, burst)
        tat = got.tat


# --- bounded rejection counts ----------------------------------------------------------------


def test_a_flood_of_made_up_nodes_and_times_adds_no_rejection_rows(store: Store) -> None:
    world = World()
    world.register(store)
    ingestor = Ingestor(store, settings())
    items = []
    for i in range(300):
        # A random node (signed by the viewer, as an attacker can) or a random issuedAt
        # outside the time window: each used to make a rejection-count row of its own.
        node = secrets.token_bytes(20)
        r = world.delivery(key(f"s{i}"), 10, 1, NOW - 50, node=node)
        items.append(wire(r)[0])
        far = world.delivery(key(f"t{i}"), 10, 1, NOW + 10**6 + i * 7919 * 3600)
        items.append(wire(far)[0])
        fake = dict(wire(r)[0], signature="0x" + "11" * 64 + "1b")  # well-formed, wrong
        items.append(fake)
    for start in range(0, len(items), 300):
        ingestor.ingest(items[start : start + 300], NOW)
    # Two rows for 900 rejections: the made-up nodes in one, the made-up times in epoch 0.
    assert store.rejection_counts() == {
        ("UNKNOWN_NODE", UNREGISTERED_NODE, 10): 600,
        ("ISSUED_IN_FUTURE", world.node, 0): 300,
    }


# --- sticky deactivation and the admin log ---------------------------------------------------


def _signed(key_: bytes, label: str, issued_at: int) -> dict[str, Any]:
    domain = Domain.from_hex(31337, settings().distributor)
    request = NodeRegistrationRequest(address_of(key_), label, issued_at)
    return to_wire(sign_registration(request, domain, key_))


def _active(c: Any, node: str) -> bool | None:
    for n in c.get("/v1/admin/nodes", headers=AUTH).json():
        if n["address"] == node:
            return bool(n["active"])
    return None


def test_deactivation_by_an_admin_sticks_in_open_mode(store: Store) -> None:
    node_key = PrivateKey().secret
    now = int(time.time())
    with client_of(store, registry_mode="open", rate_limit=0) as c:
        first = _signed(node_key, "edge", now - 10)
        assert c.post("/v1/nodes/registrations", json=first).json()["status"] == "approved"
        node = first["node"]
        assert _active(c, node) is True
        assert c.post(f"/v1/admin/nodes/{node}/deactivate", headers=AUTH).status_code == 200
        # The node signs a fresh request: stored, but pending; the node stays inactive.
        again = c.post("/v1/nodes/registrations", json=_signed(node_key, "edge", now - 5))
        assert again.status_code == 201 and again.json()["status"] == "pending"
        assert _active(c, node) is False
        assert not store.registry_snapshot().nodes[bytes.fromhex(node[2:])][1]
        # Only an admin lifts it: approving the request (or activating the node).
        r = c.post(f"/v1/admin/registrations/{again.json()['id']}/approve", headers=AUTH)
        assert r.status_code == 200 and _active(c, node) is True
        # Lifted: its next request in open mode is approved at once again.
        assert c.post(f"/v1/admin/nodes/{node}/deactivate", headers=AUTH).status_code == 200
        assert c.post(f"/v1/admin/nodes/{node}/activate", headers=AUTH).status_code == 200
        later = c.post("/v1/nodes/registrations", json=_signed(node_key, "edge", now - 1))
        assert later.json()["status"] == "approved"


def test_a_node_registered_inactive_by_an_admin_is_held_too(store: Store) -> None:
    node_key = PrivateKey().secret
    node = address_of(node_key)
    registry_service.register_node(store, node, "edge", active=False, who="alice")
    s = settings(registry_mode="open")
    wire_ = _signed(node_key, "edge", NOW - 5)
    reg = registry_service.request_node_registration(store, s, wire_, NOW)
    assert reg.status == "pending" and store.node_held(node)
    assert store.registry_snapshot().nodes[node] == ("edge", False)


def test_every_admin_change_is_logged_with_the_tokens_name(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    viewer = "0x" + "43" * 20
    node = "0x" + "44" * 20
    alice = {"Authorization": f"Bearer {ALICE}"}
    caplog.set_level(logging.INFO, logger="settlement.admin")
    with client_of(store, admin_tokens={"alice": ALICE}) as c:
        assert c.post("/v1/admin/viewers", json={"address": viewer}, headers=alice).is_success
        assert c.post(
            "/v1/admin/nodes", json={"address": node, "label": "n"}, headers=AUTH
        ).is_success
        assert c.post(f"/v1/admin/nodes/{node}/deactivate", headers=alice).is_success
        assert c.delete(f"/v1/admin/viewers/{viewer}", headers=AUTH).status_code == 204
        # Refused and failed changes are not logged as changes.
        assert c.post("/v1/admin/viewers", json={"address": viewer}).status_code == 401
        assert c.delete(f"/v1/admin/viewers/{viewer}", headers=AUTH).status_code == 404
    log = [(e.who, e.action, e.detail) for e in store.admin_log()]
    assert log == [
        ("alice", "viewer.add", viewer),
        ("admin", "node.put", f"{node} label='n' active=True"),
        ("alice", "node.deactivate", node),
        ("admin", "viewer.remove", viewer),
    ]
    lines = [r.getMessage() for r in caplog.records if r.name == "settlement.admin"]
    assert lines == [f"admin change by {w}: {a} {d}" for w, a, d in log]
    assert all(ALICE not in line and TOKEN not in line for line in lines)


def test_the_keys_cli_shows_a_token_once_and_logs_who(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from settlement.cli.main import app

    url = f"sqlite:///{tmp_path}/cli.db"
    runner = CliRunner()
    env = {"W2E_DATABASE_URL": url}
    made = runner.invoke(
        app, ["keys", "create", "partner-1", "--rate", "5", "--burst", "10"], env=env
    )
    assert made.exit_code == 0, made.output
    token = made.stdout.strip().splitlines()[-1]
    assert token.startswith("w2e_") and len(token) == 47
    listed = runner.invoke(app, ["keys", "list"], env=env)
    assert "partner-1" in listed.stdout and token not in listed.stdout
    assert runner.invoke(app, ["keys", "create", "partner-1"], env=env).exit_code == 2
    assert runner.invoke(app, ["keys", "revoke", "partner-1"], env=env).exit_code == 0
    assert runner.invoke(app, ["keys", "revoke", "partner-1"], env=env).exit_code == 2
    with open_store(url) as s:
        (row,) = s.api_keys()
        assert row.revoked_at is not None and row.burst == 10 and row.period_us == 200_000
        log = [(e.who.split(":")[0], e.action) for e in s.admin_log()]
    assert log == [("cli", "key.create"), ("cli", "key.revoke")]
    shown = runner.invoke(app, ["admin-log"], env=env)
    assert "key.revoke" in shown.stdout and token not in shown.stdout


# --- keystores -------------------------------------------------------------------------------


def test_keystores_are_0600_on_every_write_and_tightened_on_load(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from settlement.adapters.keys import Key, load_keystore, save_keystore

    key_ = Key.generate("poster")
    path = tmp_path / "poster.json"
    old = os.umask(0)
    try:
        save_keystore(key_, path, "pw", kdf="pbkdf2", iterations=2)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        # An existing file with loose permissions is rewritten 0600, not kept as it was.
        path.chmod(0o644)
        save_keystore(key_, path, "pw", kdf="pbkdf2", iterations=2)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    finally:
        os.umask(old)
    # One written earlier (or copied in) with loose permissions: loading tightens and warns.
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="settlement.adapters.keys"):
        assert load_keystore(path, "pw", "poster").address == key_.address
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert any("mode 644" in r.getMessage() for r in caplog.records)
    assert not list(tmp_path.glob(".poster.json.*"))  # no temporary file left


# --- registration requests under concurrency -------------------------------------------------


def test_identical_registration_requests_sent_at_once_are_stored_once(
    backend: str, tmp_path: Path
) -> None:
    s = settings(registry_mode="approval")
    with backend_url(backend, tmp_path) as url:
        stores = [open_store(url, pool_size=1) for _ in range(8)]
        try:
            for round_ in range(5):
                node_key = PrivateKey().secret
                wire_ = _signed(node_key, f"race-{round_}", NOW - 5)
                barrier = threading.Barrier(len(stores))
                outcomes: list[str] = []

                def send(
                    st: Store,
                    w: dict[str, Any] = wire_,
                    b: Any = barrier,
                    outcomes: list[str] = outcomes,
                ) -> None:
                    b.wait()
                    try:
                        reg, created = registry_service.file_node_registration(st, s, w, NOW)
                        outcomes.append(f"{'stored' if created else 'found'} {reg.id}")
                    except InvalidRegistration:
                        outcomes.append("refused")

                threads = [threading.Thread(target=send, args=(st,)) for st in stores]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                node = address_of(node_key)
                rows = [r for r in stores[0].registrations() if r.node == node]
                # Stored once; every other copy is answered with that same pending request.
                assert len(rows) == 1 and rows[0].status == "pending"
                assert sorted(outcomes) == [f"found {rows[0].id}"] * 7 + [f"stored {rows[0].id}"]
        finally:
            for st in stores:
                st.close()


def test_rate_windows_are_unlogged_on_postgresql(tmp_path: Path) -> None:
    """No WAL per admission statement (docs/operations.md says so): the table is UNLOGGED."""
    with opened("postgresql", tmp_path) as s, s.engine.connect() as conn:
        kinds = dict(
            conn.exec_driver_sql(
                "SELECT relname, relpersistence FROM pg_class "
                "WHERE relname IN ('rate_window', 'api_key') AND relkind = 'r' "
                "AND relnamespace = current_schema()::regnamespace"
            ).fetchall()
        )
    assert kinds == {"rate_window": "u", "api_key": "p"}


def test_0007_keeps_one_copy_of_requests_stored_twice_by_the_old_race(
    backend: str, tmp_path: Path
) -> None:
    import sqlalchemy as sa
    from alembic import command

    from settlement.adapters.db.store import _engine
    from settlement.adapters.db.tables import alembic_config, enc

    row = "INSERT INTO node_registration (node, label, issued_at, signature, status, requested_at) "
    row += "VALUES (:n, :l, :i, :s, 'pending', :r)"
    copies = [
        {"n": b"\x01" * 20, "l": "a", "i": enc(5), "s": b"\x02" * 65, "r": enc(6)},
        {"n": b"\x01" * 20, "l": "a", "i": enc(5), "s": b"\x02" * 65, "r": enc(6)},
        {"n": b"\x01" * 20, "l": "a", "i": enc(7), "s": b"\x03" * 65, "r": enc(8)},
    ]
    with backend_url(backend, tmp_path) as url:
        engine, _ = _engine(url, 1, "FULL")
        try:
            with engine.begin() as conn:
                command.upgrade(alembic_config(conn), "0006")
                conn.execute(sa.text(row), copies)
            with engine.begin() as conn:
                command.upgrade(alembic_config(conn), "0007")
        finally:
            engine.dispose()
        with open_store(url) as s:
            kept = [(r.id, r.issued_at) for r in s.registrations()]
    assert kept == [(1, 5), (3, 7)]

"""A node operator registering over HTTP (issue 16 item 1), on SQLite and PostgreSQL: sending
again files nothing (201 once, then 200 with the same request), a label change is a new
request, a signature that is not the node's under the service's domain names that domain, and
the SDK's NodeKey / ServiceClient sign and send what the service takes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from coincurve import PrivateKey
from fastapi.testclient import TestClient
from storekit import BACKENDS, DISTRIBUTOR, opened, settings

from settlement.adapters.db.store import Store
from settlement.api.app import create_app
from settlement.client.nodes import NodeKey, ServiceClient
from settlement.client.signer import KeyLoadError
from settlement.domain.receipts import Domain
from settlement.domain.registration import to_wire
from settlement.errors import InvalidRegistration
from settlement.services import registry as registry_service

TOKEN = "a" * 32
HTTPX_CLIENT = httpx.Client  # the CLI tests route it to the app, then back
AUTH = {"Authorization": f"Bearer {TOKEN}"}
DOMAIN = Domain.from_hex(31337, DISTRIBUTOR)


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    with opened(request.param, tmp_path) as s:
        yield s


@contextmanager
def client_of(store: Store, **overrides: Any) -> Iterator[TestClient]:
    s = settings(admin_token=TOKEN, rate_limit=0, **overrides)
    with TestClient(create_app(s, store)) as c:
        yield c


def _post(c: TestClient, key: NodeKey, label: str, issued_at: int, domain: Domain = DOMAIN) -> Any:
    return c.post(
        "/v1/nodes/registrations", json=to_wire(key.registration(label, domain, issued_at))
    )


def test_sending_again_files_nothing_in_approval_mode(store: Store) -> None:
    key = NodeKey(PrivateKey().secret)
    now = int(time.time())
    with client_of(store, registry_mode="approval") as c:
        first = _post(c, key, "edge-1", now - 30)
        assert first.status_code == 201 and first.json()["status"] == "pending"
        rid = first.json()["id"]
        # The same request again, and a freshly signed one: the pending request answers.
        for issued in (now - 30, now - 20):
            again = _post(c, key, "edge-1", issued)
            assert again.status_code == 200 and again.json() == first.json()
        assert [r.id for r in store.registrations()] == [rid]
        assert c.post(f"/v1/admin/registrations/{rid}/approve", headers=AUTH).status_code == 200
        # Active under that label: the approved request answers, nothing is filed.
        approved = _post(c, key, "edge-1", now - 10)
        assert approved.status_code == 200
        assert (approved.json()["id"], approved.json()["status"]) == (rid, "approved")
        assert len(store.registrations()) == 1
        # A new label is a change: a new request, pending in approval mode; the node keeps
        # its old label meanwhile.
        renamed = _post(c, key, "edge-1-fra", now - 5)
        assert renamed.status_code == 201 and renamed.json()["status"] == "pending"
        assert renamed.json()["id"] != rid
        assert store.registry_snapshot().nodes[key.address] == ("edge-1", True)


def test_an_active_node_an_admin_registered_gets_its_request_approved(store: Store) -> None:
    key = NodeKey(PrivateKey().secret)
    registry_service.register_node(store, key.address, "edge-9", who="alice")
    version = store.registry_version()
    with client_of(store, registry_mode="approval") as c:
        r = _post(c, key, "edge-9", int(time.time()) - 5)
        assert r.status_code == 201 and r.json()["status"] == "approved"
        assert r.json()["decidedAt"] == r.json()["requestedAt"]
        again = _post(c, key, "edge-9", int(time.time()) - 1)
        assert again.status_code == 200 and again.json()["id"] == r.json()["id"]
    # Nothing in the registry changed: it was active under that label already.
    assert store.registry_version() == version


def test_a_signature_under_another_domain_names_the_services_domain(store: Store) -> None:
    key = NodeKey(PrivateKey().secret)
    elsewhere = Domain.from_hex(1, "0x" + "22" * 20)
    with client_of(store, registry_mode="open") as c:
        r = _post(c, key, "edge", int(time.time()) - 5, domain=elsewhere)
        assert r.status_code == 422 and r.json()["error"] == "InvalidRegistration"
        message = r.json()["message"]
        assert f"is not the node 0x{key.address.hex()}'s under this service's domain" in message
        assert f"(chainId 31337, distributor {DISTRIBUTOR})" in message
        assert "check both the signing key" in message
        assert store.registrations() == []


def test_the_sdk_registers_with_the_services_domain_and_reads_the_node_back(
    store: Store,
) -> None:
    key = NodeKey(PrivateKey().secret)
    with client_of(store, registry_mode="open") as c:
        service = ServiceClient("http://testserver")
        service._http = c  # the app in-process: same paths, same answers
        info = service.info()
        assert (info.chain_id, info.distributor.lower()) == (31337, DISTRIBUTOR)
        answer = service.register(key, "edge-sdk")
        assert (answer.created, answer.status, answer.label) == (True, "approved", "edge-sdk")
        again = service.register(key, "edge-sdk")
        assert (again.created, again.id) == (False, answer.id)
        node = service.node(key.address_hex)
        assert node["active"] and node["label"] == "edge-sdk"
        assert node["registration"]["state"] == "approved"
        # Signed for another chain: refused with the service's reason, raised as such.
        with pytest.raises(InvalidRegistration, match="chainId 31337"):
            service.register(
                key, "edge-sdk-2", domain=Domain.from_hex(5, DISTRIBUTOR), issued_at=info.now
            )


def test_a_node_key_never_shows_its_secret(tmp_path: Path) -> None:
    secret = PrivateKey().secret
    key = NodeKey(secret)
    assert secret.hex() not in repr(key) and key.address_hex in repr(key)
    with pytest.raises(TypeError):
        import pickle

        pickle.dumps(key)
    with pytest.raises(KeyLoadError, match="not hex") as bad:
        NodeKey.from_hex("0x" + "zz" * 32)
    assert "zz" not in str(bad.value)
    with pytest.raises(KeyLoadError, match="NODE_KEY_UNSET"):
        NodeKey.from_env("NODE_KEY_UNSET", {})
    from eth_account import Account

    path = tmp_path / "node.json"
    path.write_text(
        __import__("json").dumps(Account.encrypt(secret, "pw", kdf="pbkdf2", iterations=2))
    )
    assert NodeKey.from_keystore(path, "pw").address == key.address
    with pytest.raises(KeyLoadError, match="wrong password"):
        NodeKey.from_keystore(path, "nope")


class _Shared:
    """The app's TestClient behind the CLI's ServiceClient: closing it is the test's job."""

    def __init__(self, client: TestClient) -> None:
        self.client = client

    def request(self, *args: Any, **kwargs: Any) -> Any:
        return self.client.request(*args, **kwargs)

    def close(self) -> None:
        pass


def test_the_cli_registers_once_and_shows_the_state(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from typer.testing import CliRunner

    from settlement.cli.main import app as cli

    runner = CliRunner()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("W2E_NODE_KEYSTORE_PASSWORD", "correct-horse")
    made = runner.invoke(
        cli, ["keystore", "new", "node.json", "--password-env", "W2E_NODE_KEYSTORE_PASSWORD"]
    )
    assert made.exit_code == 0, made.output
    address = made.stdout.strip()
    assert address.startswith("0x") and len(address) == 42

    register = ["nodes", "register", "--service", "http://svc.test", "--label", "edge-cli"]
    register += ["--keystore", "node.json"]
    with client_of(store, registry_mode="approval") as c:
        monkeypatch.setattr("settlement.client.nodes.httpx.Client", lambda **_: _Shared(c))
        first = runner.invoke(cli, register)
        assert first.exit_code == 0, first.output
        doc = json.loads(first.stdout)
        assert (doc["status"], doc["filed"], doc["node"]) == ("pending", True, address.lower())
        second = runner.invoke(cli, register)
        assert second.exit_code == 0, second.output
        assert json.loads(second.stdout) | {"filed": True} == doc
        assert json.loads(second.stdout)["filed"] is False
        assert "already known (nothing filed)" in second.output
        assert len(store.registrations()) == 1
        # Signed for another chain than the service's: refused, saying which domain it wants.
        wrong = runner.invoke(cli, [*register, "--chain-id", "5"])
        assert wrong.exit_code == 2
        assert f"chainId 31337, distributor {DISTRIBUTOR}" in wrong.output
        assert "Traceback" not in wrong.output
        shown = runner.invoke(cli, ["nodes", "status", address, "--service", "http://svc.test"])
        assert shown.exit_code == 0, shown.output
        assert f"node {address} (no label): not registered" in shown.output
        assert "registration request: pending" in shown.output
        # Rejected by the admin: the next request is a new one, filed and pending again.
        rid = doc["id"]
        assert c.post(f"/v1/admin/registrations/{rid}/reject", headers=AUTH).status_code == 200
        rejected = runner.invoke(cli, register)
        assert rejected.exit_code == 0, rejected.output
        again = json.loads(rejected.stdout)
        assert (again["filed"], again["status"]) == (True, "pending") and again["id"] != rid
    monkeypatch.setattr("settlement.client.nodes.httpx.Client", HTTPX_CLIENT)
    gone = runner.invoke(cli, ["nodes", "status", address, "--service", "http://127.0.0.1:9"])
    assert gone.exit_code == 3 and "does not answer" in gone.output

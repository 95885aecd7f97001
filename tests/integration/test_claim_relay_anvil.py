"""Gas-free claims on anvil (issue 16 item 1): POST /v1/claims/relay, where the service's
claimer key sends claimMany for accounts with something claimable, and `settlement claim
--gas-free` / `settlement account` / the pending message over it. The relayer pays the gas,
the tokens go to the accounts, nothing is relayed for an account with nothing claimable."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from storekit import opened, settings, skip_module_without
from support.anvil import Anvil, find_anvil
from typer.testing import CliRunner

from settlement.adapters import chain as c
from settlement.adapters.keys import Key
from settlement.api.app import create_app
from settlement.cli.main import app as cli
from settlement.domain.merkle import MerkleTree
from settlement.services.claims import ChainContext

pytestmark = pytest.mark.slow  # starts anvil

ANVIL = find_anvil()
if ANVIL is None:
    skip_module_without("anvil (node_modules)")

DATA_HASH = "0x" + "cd" * 32
PERIOD = 3600


class _Shared:
    """The app's TestClient behind the CLI's ServiceClient: closing it is the test's job."""

    def __init__(self, client: TestClient) -> None:
        self.client = client

    def request(self, *args: Any, **kwargs: Any) -> Any:
        return self.client.request(*args, **kwargs)

    def close(self) -> None:
        pass


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    with Anvil(ANVIL) as node, opened("sqlite", tmp_path) as store:
        chain = c.connect(rpc_url=node.url)
        admin, poster, guardian, relayer = (Key.generate(n) for n in ("a", "p", "g", "r"))
        for k in (admin, poster, guardian, relayer):
            chain.set_balance(k.address, 10**20)
        values = sorted((Key.generate().address.lower(), (i + 1) * 10**18 + i) for i in range(3))
        tree = MerkleTree.of(values)
        record = c.deploy(
            chain,
            admin,
            poster=poster.address,
            guardian=guardian.address,
            challenge_period=PERIOD,
            mint=10**24,
            fund=10**24,
        )
        d = c.Distributor(chain, record.distributor)
        c.submit_proposal(poster, d, 1, tree.root, tree.cumulative_total, DATA_HASH, "")
        chain.increase_time(PERIOD)
        chain.transact(poster, d.accept_root())
        monkeypatch.setenv("TEST_RELAYER_KEY", "0x" + relayer._account.key.hex())
        s = settings(claimer_key_env="TEST_RELAYER_KEY", rate_limit=0)
        api = create_app(s, store, chain_context=ChainContext(chain, d))
        with TestClient(api) as client:
            client.app.state.claims.trees.get(tree.root, lambda: tree)  # type: ignore[attr-defined]
            monkeypatch.setattr("settlement.client.nodes.httpx.Client", lambda **_: _Shared(client))
            yield {
                "chain": chain,
                "d": d,
                "tree": tree,
                "values": values,
                "client": client,
                "poster": poster,
                "relayer": relayer,
            }


def test_the_relay_pays_accounts_with_something_claimable_and_only_them(world: Any) -> None:
    client, d, values = world["client"], world["d"], world["values"]
    chain, relayer = world["chain"], world["relayer"]
    (a, amount_a), (b, amount_b), _ = values
    stranger = "0x" + "12" * 20
    gas_before = chain.balance(relayer.address)
    r = client.post("/v1/claims/relay", json={"accounts": [a, b, stranger]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["paid"] == {a: str(amount_a), b: str(amount_b)}
    assert body["skipped"] == {stranger: "no reward in the accepted root"}
    assert len(body["transactions"]) == 1 and body["transactions"][0]["gasUsed"] > 0
    assert d.token.balance_of(a) == amount_a and d.token.balance_of(b) == amount_b
    assert chain.balance(relayer.address) < gas_before  # the relayer paid the gas
    # Nothing left: refused before anything is sent, saying why for each.
    again = client.post("/v1/claims/relay", json={"accounts": [a]})
    assert again.status_code == 409 and again.json()["error"] == "NothingToClaim"
    assert f"everything ({amount_a} base units) is already claimed" in again.json()["message"]
    assert client.post("/v1/claims/relay", json={"accounts": ["0x12"]}).status_code == 422
    assert client.post("/v1/claims/relay", json={"accounts": []}).status_code == 422
    # The account page sees the claim at once (read live for an account with a leaf).
    page = client.get(f"/v1/accounts/{a}").json()
    assert page["claimed"] == str(amount_a) and page["claimableNow"] == "0"


def test_a_pending_reward_is_named_with_its_epoch_and_time(world: Any) -> None:
    client, d, values, chain = world["client"], world["d"], world["values"], world["chain"]
    (a, amount_a), _, (cc, amount_c) = values
    assert client.post("/v1/claims/relay", json={"accounts": [a]}).status_code == 200
    more = sorted([(a, amount_a + 5 * 10**18), (cc, amount_c)])
    tree2 = MerkleTree.of(more)
    client.app.state.claims.trees.get(tree2.root, lambda: tree2)  # type: ignore[attr-defined]
    c.submit_proposal(world["poster"], d, 2, tree2.root, tree2.cumulative_total, DATA_HASH, "")
    valid_at = d.pending_root().valid_at
    r = client.post("/v1/claims/relay", json={"accounts": [a]})
    assert r.status_code == 409
    assert (
        f"{5 * 10**18} base units pending in the root of epoch 2, claimable after validAt "
        f"{valid_at}" in r.json()["message"]
    )
    page = client.get(f"/v1/accounts/{a}").json()
    assert page["pending"] == {
        "epoch": 2,
        "root": tree2.root,
        "adds": str(5 * 10**18),
        "claimableAt": valid_at,
    }

    runner = CliRunner()
    pending = runner.invoke(cli, ["claim", a, "--service", "http://relay.test", "--gas-free"])
    assert pending.exit_code == 5, pending.output
    assert f"{a}: 5 W2E ({5 * 10**18} base units) pending in the root of epoch 2" in pending.output
    assert f"(validAt {valid_at})" in pending.output and "knows no reward" not in pending.output
    # Another account still has its first-root amount: claimed gas-free by the CLI.
    paid = runner.invoke(cli, ["claim", cc, "--service", "http://relay.test", "--gas-free"])
    assert paid.exit_code == 0, paid.output
    assert f"paid {w2e_text(amount_c)} W2E ({amount_c} base units) to {cc}" in paid.output
    assert d.token.balance_of(cc) == amount_c
    shown = runner.invoke(cli, ["account", a, "--service", "http://relay.test"])
    assert shown.exit_code == 0, shown.output
    assert f"claimed {w2e_text(amount_a)} W2E ({amount_a} base units)" in shown.output
    assert f"pending 5 W2E ({5 * 10**18} base units) in the root of epoch 2" in shown.output
    # Once accepted, the pending amount is claimable.
    chain.increase_time(PERIOD)
    chain.transact(world["poster"], d.accept_root())
    done = runner.invoke(cli, ["claim", a, "--service", "http://relay.test", "--gas-free"])
    assert done.exit_code == 0, done.output
    assert d.token.balance_of(a) == amount_a + 5 * 10**18


def test_no_relayer_key_is_a_503_that_says_how_to_claim(
    world: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TEST_RELAYER_KEY")
    client = world["client"]
    client.app.state.claim_relay = None  # as a service started without the key
    r = client.post("/v1/claims/relay", json={"accounts": [world["values"][0][0]]})
    assert r.status_code == 503 and "no claimer key" in r.json()["message"]


def test_a_chain_that_is_gone_is_named_not_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from settlement.adapters.chain.local import free_port

    port = free_port()
    dump = tmp_path / "tree.json"
    dump.write_bytes(MerkleTree.of([("0x" + "11" * 20, 5)]).dump_json())
    monkeypatch.setenv("W2E_RPC_URL", f"http://user:secret@127.0.0.1:{port}/key")
    monkeypatch.setenv("W2E_CLAIMER_KEY", "0x" + "01" * 32)
    r = CliRunner().invoke(cli, ["claim", "0x" + "11" * 20, "--dump", str(dump)])
    assert r.exit_code == 3, r.output
    assert f"chain unreachable at http://127.0.0.1:{port}" in r.output
    assert "secret" not in r.output and "Traceback" not in r.output


def w2e_text(amount: int) -> str:
    whole, frac = divmod(amount, 10**18)
    return f"{whole}.{frac:018d}".rstrip("0").rstrip(".") if frac else str(whole)

"""The explorer in headless Chromium (Debian's chromium and chromium-driver, driven by Selenium
with the driver's path given: nothing downloads a browser) against a real `settlement serve`
on anvil: epochs 1 accepted and 2 pending on chain. Each page renders without a console error,
shows the JSON API's figures (parsed off the page, amounts from their base units and from the
W2E text alike), and is saved as artifacts/screenshots/NAME.png. The claim button simulates and
sends the claim through an injected EIP-1193 provider backed by anvil, and the chain then shows
the account paid; without a wallet the page offers the relayed claim command."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.anvil import ROOT, Anvil, find_anvil
from support.deploy import deploy_with_keys
from support.server import ServerProcess

from settlement.adapters import chain as c
from settlement.adapters.db.store import open_store
from settlement.config import Settings
from settlement.domain.receipts import Params
from settlement.jobs import close_due
from settlement.services.ingest import Ingestor
from settlement.services.registry import load_registries
from settlement.services.submit import Submitter
from settlement.sim.generate import SimConfig, generate, read_lines

pytestmark = pytest.mark.slow  # anvil, a served API and a browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SHOTS = ROOT / "artifacts" / "screenshots"
GENESIS = 1_767_225_600
EPOCH = 900
GRACE = 60
HOUR = 3600
EMISSION = 1000 * 10**18
# anvil's first dev account: unlocked, so eth_sendTransaction from it needs no key here.
WALLET = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"


def _missing(what: str) -> None:
    if Settings(_env_file=None).ci:
        raise RuntimeError(f"CI=true but {what} is missing: run scripts/setup")
    pytest.skip(f"{what} not installed (run scripts/setup)", allow_module_level=True)


try:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.selenium_manager import SeleniumManager
    from selenium.webdriver.support.ui import WebDriverWait
except ImportError:  # pragma: no cover - the dev extra brings it
    _missing("selenium (the dev extra)")
if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
    _missing("chromium and chromium-driver (Debian packages)")
ANVIL = find_anvil()
if ANVIL is None:
    _missing("anvil (node_modules)")


def cutoff(epoch: int) -> int:
    return GENESIS + epoch * EPOCH + GRACE


@dataclass
class Site:
    url: str
    rpc: str
    distributor: c.Distributor
    chain: c.Chain


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """Receipts of two epochs in SQLite; epoch 1's root accepted, epoch 2's pending; the API
    served over it with the chain configured."""
    tmp = tmp_path_factory.mktemp("explorer")
    with Anvil(ANVIL) as node:
        chain = c.connect(rpc_url=node.url, poll_interval=0.02)
        keys, deployment = deploy_with_keys(
            chain, challenge_period=HOUR, mint=10 * EMISSION, fund=4 * EMISSION
        )
        c.save_deployment(deployment, tmp / "deployment.json")
        env = {
            "W2E_DATABASE_URL": f"sqlite:///{tmp}/explorer.db",
            "W2E_DATA_DIR": str(tmp / "epochs"),
            "W2E_GENESIS": str(GENESIS),
            "W2E_EPOCH_SECONDS": str(EPOCH),
            "W2E_GRACE_SECONDS": str(GRACE),
            "W2E_MAX_SESSION_AGE": "1800",
            "W2E_CHAIN_ID": str(chain.chain_id),
            "W2E_DISTRIBUTOR": deployment.distributor,
            "W2E_RPC_URL": node.url,
            "W2E_DEPLOYMENT_FILE": str(tmp / "deployment.json"),
            "W2E_CHALLENGE_PERIOD": str(HOUR),
            "W2E_EMISSION": str(EMISSION),
        }
        settings = Settings(_env_file=None, **{k[4:].lower(): v for k, v in env.items()})
        cfg = SimConfig(
            seed=11,
            receipts=1200,
            nodes=5,
            viewers=40,
            creators=3,
            contents=8,
            chain_id=chain.chain_id,
            distributor=bytes.fromhex(deployment.distributor[2:]),
            start=GENESIS,
            window=2 * EPOCH - 120,
            params=Params.from_settings(settings),
            workers=1,
        )
        sim = generate(cfg, tmp / "sim")
        store = open_store(settings.database_url)
        try:
            load_registries(store, sim.out_dir / "registries.json", settings=settings)
            ingestor = Ingestor(store, settings)
            for batch in read_lines(sim.receipts_path, 1000):
                ingestor.ingest(batch, cfg.now)
            distributor = c.Distributor(chain, deployment.distributor)
            submitter = Submitter(
                store,
                settings,
                chain,
                distributor,
                keys["poster"],
                deployment_block=deployment.block,
            )
            assert [x.epoch for x in close_due(store, settings, cutoff(1))] == [1]
            assert [p.status for p in submitter.step()] == ["mined"]
            chain.increase_time(HOUR + 1)
            assert [p.status for p in submitter.step()] == ["accepted"]
            assert [x.epoch for x in close_due(store, settings, cutoff(2))] == [2]
            assert [p.status for p in submitter.step()] == ["mined"]  # pending on chain
        finally:
            store.close()
        server_env = {**os.environ, **env}
        server_env.pop("W2E_ADMIN_TOKEN", None)
        with ServerProcess(server_env, log=tmp / "serve.log") as server:
            yield Site(server.url, node.url, distributor, chain)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    options.add_argument("--window-size=1280,1400")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    with pytest.MonkeyPatch.context() as patch:
        # The driver's path is given: Selenium Manager (which may download one) must not run.
        patch.setattr(SeleniumManager, "binary_paths", _no_selenium_manager)
        driver = webdriver.Chrome(
            service=Service(executable_path=str(CHROMEDRIVER)), options=options
        )
    try:
        yield driver
    finally:
        driver.quit()


def _no_selenium_manager(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("Selenium Manager ran: pass the driver's path through Service")


def _open(driver: Any, url: str, name: str) -> None:
    driver.get_log("browser")  # drop what came before
    driver.get(url)
    WebDriverWait(driver, 10).until(
        lambda d: d.execute_script("return document.readyState") == "complete"
    )
    SHOTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(SHOTS / f"{name}.png"))
    _no_console_errors(driver, url)
    # Nothing spills sideways at 1280 px (wide tables overlapping, an unbroken hash).
    width = driver.execute_script(
        "return [document.documentElement.scrollWidth, window.innerWidth]"
    )
    assert width[0] <= width[1], (url, width)


def _no_console_errors(driver: Any, where: str) -> None:
    errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
    assert not errors, (where, errors)


def _amount(element: Any) -> int:
    """An amount on the page: its base units (data-base), checked against its W2E text."""
    base = int(element.get_attribute("data-base"))
    text = element.text.strip()
    assert text.endswith(" W2E"), text
    assert Decimal(text[: -len(" W2E")].replace(",", "")) * 10**18 == base, (text, base)
    assert element.get_attribute("title") == f"{base} base units"
    return base


def _api(site: Site, path: str, **params: Any) -> Any:
    r = httpx.get(site.url + path, params=params, timeout=30)
    assert r.status_code == 200, (path, r.text)
    return r.json()


def test_epochs_and_epoch_pages(site: Site, browser: Any) -> None:
    _open(browser, site.url + "/", "epochs")
    listed = _api(site, "/v1/epochs")
    rows = browser.find_elements(By.CSS_SELECTOR, "#epochs tbody tr")
    assert [int(r.get_attribute("data-epoch")) for r in rows] == [e["epoch"] for e in listed]
    for row, e in zip(rows, listed, strict=True):
        assert _amount(row.find_element(By.CSS_SELECTOR, ".cumulative .amount")) == int(
            e["cumulativeTotal"]
        )
    states = [r.find_element(By.CSS_SELECTOR, ".state").text for r in rows]
    assert states == ["mined", "accepted"]  # epoch 2 pending on chain, epoch 1 accepted

    _open(browser, site.url + "/epochs/1", "epoch")
    manifest = _api(site, "/v1/epochs/1")
    assert browser.find_element(By.ID, "root").text == manifest["root"]
    assert _amount(browser.find_element(By.ID, "cumulative-total")) == int(
        manifest["cumulativeTotal"]
    )
    for cls, pool in manifest["pools"].items():
        row = browser.find_element(By.CSS_SELECTOR, f'#pools tr[data-class="{cls}"]')
        for field, value in pool.items():
            assert _amount(row.find_element(By.CSS_SELECTOR, f".{field} .amount")) == int(value)
    assert browser.find_element(By.CSS_SELECTOR, "#proposals .state").text == "accepted"
    valid_at = browser.find_element(By.CSS_SELECTOR, "#proposals .valid-at")
    head = httpx.post(
        site.rpc,
        json={
            "jsonrpc": "2.0",
            "id": 1,
            "method": "eth_getBlockByNumber",
            "params": ["latest", False],
        },
        timeout=10,
    ).json()["result"]
    assert int(valid_at.get_attribute("data-unix")) <= int(head["timestamp"], 16)
    assert "Not audited here" in browser.find_element(By.ID, "audit").text
    # Every dataset link is served by the API, byte for byte what the manifest lists.
    links = browser.find_elements(By.CSS_SELECTOR, "#files a")
    assert len(links) == len(manifest["files"]) + 1
    listed_files = {f["name"]: f for f in manifest["files"]}
    for link in links[1:]:
        got = httpx.get(link.get_attribute("href"), timeout=30)
        f = listed_files[link.text]
        assert got.status_code == 200 and len(got.content) == int(f["size"])
        assert hashlib.sha256(got.content).hexdigest() == f["sha256"]


def test_node_page(site: Site, browser: Any) -> None:
    top = _api(site, "/v1/leaderboards", **{"class": "node"})["entries"][0]["address"]
    api = _api(site, f"/v1/nodes/{top}")
    _open(browser, f"{site.url}/nodes/{top}", "node")
    assert browser.find_element(By.ID, "address").text == api["address"]
    assert _amount(browser.find_element(By.ID, "earned")) == int(api["earned"])
    assert "registered" in browser.find_element(By.ID, "registered").text
    rows = browser.find_elements(By.CSS_SELECTOR, "#node-epochs tbody tr")
    assert len(rows) == len(api["epochs"]) == 2
    for row, e in zip(rows, api["epochs"], strict=True):
        assert int(row.get_attribute("data-epoch")) == e["epoch"]
        bytes_cell = row.find_element(By.CSS_SELECTOR, ".bytes")
        assert bytes_cell.get_attribute("data-bytes") == e["bytes_credited"]
        assert int(bytes_cell.text.replace(",", "")) == int(e["bytes_credited"])
        assert int(row.find_element(By.CSS_SELECTOR, ".included").text) == e["receipts_included"]
        assert _amount(row.find_element(By.CSS_SELECTOR, ".reward .amount")) == int(e["reward"])
        shown = {
            s.get_attribute("data-reason"): int(s.text.rsplit(":", 1)[1])
            for s in row.find_elements(By.CSS_SELECTOR, ".reason")
        }
        assert shown == e["rejected"]
    assert int(api["epochs"][1]["bytes_credited"]) > 0


def test_leaderboards_page(site: Site, browser: Any) -> None:
    for epoch, name in ((None, "leaderboards"), (1, "leaderboards-epoch")):
        query = "" if epoch is None else f"?epoch={epoch}"
        _open(browser, f"{site.url}/leaderboards{query}", name)
        for cls in ("node", "viewer", "creator"):
            params: dict[str, Any] = {"class": cls}
            if epoch is not None:
                params["epoch"] = epoch
            api = _api(site, "/v1/leaderboards", **params)
            board = browser.find_element(By.ID, f"board-{cls}")
            rows = board.find_elements(By.CSS_SELECTOR, "tbody tr")
            assert len(rows) == len(api["entries"]) > 0
            for row, entry in zip(rows, api["entries"], strict=True):
                assert int(row.find_element(By.CSS_SELECTOR, ".rank").text) == entry["rank"]
                assert row.find_element(By.CSS_SELECTOR, "a.addr").text == entry["address"]
                assert _amount(row.find_element(By.CSS_SELECTOR, ".earned .amount")) == int(
                    entry["amount"]
                )


def _claimant(site: Site) -> str:
    """A viewer with something to claim against the accepted root and more pending."""
    for entry in _api(site, "/v1/leaderboards", **{"class": "viewer", "limit": 50})["entries"]:
        account = _api(site, f"/v1/accounts/{entry['address']}")
        if (
            int(account["claimableNow"] or 0) > 0
            and account["pending"]
            and int(account["pending"]["adds"]) > 0
        ):
            return str(entry["address"])
    raise AssertionError("no viewer with both a claimable and a pending amount")


def test_account_page_and_the_relayed_path(site: Site, browser: Any) -> None:
    address = _claimant(site)
    api = _api(site, f"/v1/accounts/{address}")
    _open(browser, f"{site.url}/accounts/{address}", "account")
    earned = browser.find_element(By.ID, "earned")
    for cls in ("node", "viewer", "creator", "total"):
        assert _amount(earned.find_element(By.CSS_SELECTOR, f".{cls} .amount")) == int(
            api["earned"][cls]
        )
    assert _amount(browser.find_element(By.ID, "claimed")) == int(api["claimed"])
    assert _amount(browser.find_element(By.ID, "claimable-now")) == int(api["claimableNow"])
    assert _amount(browser.find_element(By.ID, "pending-adds")) == int(api["pending"]["adds"])
    at = browser.find_element(By.ID, "pending-at")
    assert int(at.get_attribute("data-unix")) == api["pending"]["claimableAt"]
    assert _amount(browser.find_element(By.ID, "leaf")) == int(api["leaf"])
    assert browser.find_element(By.ID, "proof").text.split() == api["proof"]
    by_epoch = browser.find_elements(By.CSS_SELECTOR, "#by-epoch tbody tr")
    allocations = {
        e: {
            r["class"]: int(r["amount"])
            for r in _api(site, f"/v1/epochs/{e}/allocations", limit=10000)
            if r["account"] == address.lower()
        }
        for e in (1, 2)
    }
    for row in by_epoch:
        epoch = int(row.get_attribute("data-epoch"))
        for cls in ("node", "viewer", "creator"):
            shown = _amount(row.find_element(By.CSS_SELECTOR, f".{cls} .amount"))
            assert shown == allocations[epoch].get(cls, 0)
    # Every stored receipt is in a closed epoch: the estimate is of epoch 3, and says so.
    assert "epoch 3" in browser.find_element(By.ID, "estimate").text
    # No wallet in this browser: the click offers the relayed claim, the exact command.
    browser.find_element(By.ID, "claim-button").click()
    relay = browser.find_element(By.ID, "claim-relay")
    WebDriverWait(browser, 10).until(lambda d: relay.is_displayed())
    assert browser.find_element(By.ID, "relay-command").text == (
        f"settlement claim --relay --service {site.url} {address}"
    )
    _no_console_errors(browser, "relay path")


PROVIDER = """
window.ethereum = {
  isTestProvider: true,
  request: async function ({ method, params }) {
    if (method === "eth_requestAccounts" || method === "eth_accounts") return [%(wallet)s];
    const r = await fetch(%(rpc)s, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: method, params: params || [] }),
    });
    const body = await r.json();
    if (body.error) { const e = new Error(body.error.message); e.code = body.error.code; throw e; }
    return body.result;
  },
};
"""


def test_claim_through_an_injected_wallet(site: Site, browser: Any) -> None:
    address = _claimant(site)
    claim = _api(site, f"/v1/accounts/{address}/claim")
    claimable = int(claim["claimable"])
    token = site.distributor.token
    before_balance = token.balance_of(address)
    before_claimed = site.distributor.claimed(address)
    assert claimable > 0 and before_claimed == int(claim["claimed"])
    script = PROVIDER % {"wallet": json.dumps(WALLET), "rpc": json.dumps(site.rpc)}
    added = browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": script})
    try:
        _claim(site, browser, address, claim, claimable, before_balance, before_claimed, token)
    finally:  # later pages are wallet-less again
        browser.execute_cdp_cmd(
            "Page.removeScriptToEvaluateOnNewDocument", {"identifier": added["identifier"]}
        )


def _claim(
    site: Site,
    browser: Any,
    address: str,
    claim: dict[str, Any],
    claimable: int,
    before_balance: int,
    before_claimed: int,
    token: Any,
) -> None:
    _open(browser, f"{site.url}/accounts/{address}", "claim")
    assert browser.execute_script("return window.ethereum.isTestProvider") is True
    browser.find_element(By.ID, "claim-button").click()
    status = browser.find_element(By.ID, "claim-status")
    WebDriverWait(browser, 60).until(lambda d: status.get_attribute("class") in ("ok", "error"))
    assert status.get_attribute("class") == "ok", status.text
    assert status.text.startswith("Claimed ")
    assert status.get_attribute("data-claimed") == str(claimable)
    # The eth_call simulation ran first and its result stays on the page.
    simulation = browser.find_element(By.ID, "claim-simulation")
    assert simulation.get_attribute("class") == "ok"
    assert simulation.get_attribute("data-pays") == str(claimable)
    tx = status.get_attribute("data-tx")
    SHOTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(SHOTS / "claim-done.png"))
    _no_console_errors(browser, "claim")
    # On chain: the account was paid exactly what the page said, by the wallet's transaction.
    assert (
        site.distributor.claimed(address)
        == before_claimed + claimable
        == int(claim["cumulativeAmount"])
    )
    assert token.balance_of(address) == before_balance + claimable
    receipt = httpx.post(
        site.rpc,
        json={"jsonrpc": "2.0", "id": 1, "method": "eth_getTransactionReceipt", "params": [tx]},
        timeout=10,
    ).json()["result"]
    assert receipt["status"] == "0x1" and receipt["from"].lower() == WALLET.lower()
    assert receipt["to"].lower() == claim["contract"].lower()
    # Claimed in full: a second click simulates nothing to pay and sends nothing.
    browser.find_element(By.ID, "claim-button").click()
    WebDriverWait(browser, 30).until(
        lambda d: "Nothing to claim" in status.text or "revert" in status.text
    )

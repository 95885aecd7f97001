// The claim button: ready calldata from GET /v1/accounts/{address}/claim, simulated with eth_call
// and then sent with eth_sendTransaction through an injected EIP-1193 wallet (window.ethereum);
// without one, the relayed path (`settlement claim --relay`) is shown instead.
"use strict";

(function () {
  const box = document.getElementById("claim");
  if (!box) return;
  const button = document.getElementById("claim-button");
  const status = document.getElementById("claim-status");
  const calldataBox = document.getElementById("claim-calldata");
  const relayBox = document.getElementById("claim-relay");
  const simulation = document.getElementById("claim-simulation");
  const address = box.dataset.address;

  function say(text, kind) {
    status.textContent = text;
    status.className = kind || "";
  }

  function w2e(base) {
    // Exact: base units (decimal string) as W2E with 18 decimals, trailing zeros dropped.
    const s = BigInt(base).toString().padStart(19, "0");
    const whole = s.slice(0, -18).replace(/\B(?=(\d{3})+(?!\d))/g, ",");
    const frac = s.slice(-18).replace(/0+$/, "");
    return frac ? whole + "." + frac : whole;
  }

  async function claimInfo() {
    const r = await fetch("/v1/accounts/" + address + "/claim", { headers: { Accept: "application/json" } });
    const body = await r.json();
    if (!r.ok) throw new Error(body.message || ("the service answered " + r.status));
    return body;
  }

  async function waitForReceipt(eth, hash) {
    for (let i = 0; i < 600; i++) {
      const receipt = await eth.request({ method: "eth_getTransactionReceipt", params: [hash] });
      if (receipt) return receipt;
      await new Promise((done) => setTimeout(done, 500));
    }
    throw new Error("no receipt for " + hash + " after 5 minutes");
  }

  async function claimWithWallet(eth) {
    say("Fetching the claim…");
    const info = await claimInfo();
    calldataBox.textContent = "to " + info.contract + "\ndata " + info.calldata;
    calldataBox.hidden = false;
    if (BigInt(info.claimable) === 0n) {
      say("Nothing to claim: everything up to the accepted root is claimed.", "ok");
      return;
    }
    const accounts = await eth.request({ method: "eth_requestAccounts", params: [] });
    if (!accounts || !accounts.length) throw new Error("the wallet gave no account");
    const from = accounts[0];
    const chainId = parseInt(await eth.request({ method: "eth_chainId", params: [] }), 16);
    if (chainId !== info.chainId) {
      throw new Error("the wallet is on chain " + chainId + "; switch it to chain " + info.chainId);
    }
    const tx = { from: from, to: info.contract, data: info.calldata };
    say("Simulating the claim of " + w2e(info.claimable) + " W2E…");
    try {
      await eth.request({ method: "eth_call", params: [tx, "latest"] });
    } catch (error) {
      simulation.textContent = "Simulation: reverts (" + (error.message || error) + ")";
      simulation.className = "error";
      throw new Error("the simulation reverts: nothing was sent");
    }
    simulation.textContent = "Simulation: OK, the claim pays " + w2e(info.claimable) + " W2E to " + address + ".";
    simulation.className = "ok";
    simulation.dataset.pays = info.claimable;
    say("Confirm the claim in your wallet…");
    const hash = await eth.request({ method: "eth_sendTransaction", params: [tx] });
    say("Sent " + hash + "; waiting for it to be mined…");
    const receipt = await waitForReceipt(eth, hash);
    if (receipt.status !== "0x1") throw new Error("transaction " + hash + " reverted");
    status.dataset.tx = hash;
    status.dataset.claimed = info.claimable;
    say("Claimed " + w2e(info.claimable) + " W2E in transaction " + hash + ".", "ok");
  }

  button.addEventListener("click", async function () {
    const eth = window.ethereum;
    if (!eth || typeof eth.request !== "function") {
      relayBox.hidden = false;
      say("No wallet found in this browser: use the relayed claim below.");
      return;
    }
    button.disabled = true;
    try {
      await claimWithWallet(eth);
    } catch (error) {
      say(error.message || String(error), "error");
    } finally {
      button.disabled = false;
    }
  });
})();

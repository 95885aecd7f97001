"""Measures RewardDistributor gas on anvil and writes docs/gas.md (run via scripts/gas-report).

Figures are transaction gasUsed from receipts (base cost and calldata included: what a
claimer pays), next to a Uniswap-MerkleDistributor-logic baseline on the same chain.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from web3 import Web3

try:  # several times faster than eth_hash for the 2^20-leaf trees; optional
    from sha3 import keccak_256 as _keccak_ctor

    def keccak(data: bytes) -> bytes:
        return _keccak_ctor(data).digest()

except ImportError:  # pragma: no cover - depends on the environment
    from eth_hash.auto import keccak

ROOT = Path(__file__).resolve().parent.parent
ANVIL = ROOT / "node_modules" / ".bin" / "anvil"
OUT = ROOT / "out"
DOC = ROOT / "docs" / "gas.md"

DEPTHS = (1, 10, 20)
CHALLENGE_PERIOD = 3600
DATA_URI = "ipfs://bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi"
GAS_LIMIT = 3_000_000

# Targets at depth 20 (issue 3, item 7).
REPEAT_RATIO_MAX = 1.03
FIRST_CLAIM_MAX = 97_500
EXTRA_IN_BATCH_MAX = 35_000
PROPOSE_MAX = 100_000


def word(n: int) -> bytes:
    return n.to_bytes(32, "big")


def address_at(tag: bytes, i: int) -> str:
    return Web3.to_checksum_address(keccak(tag + word(i))[12:])


def amount_at(tag: bytes, i: int) -> int:
    # 1 to ~1,000 W2E with a realistic number of non-zero bytes in calldata.
    return int.from_bytes(keccak(b"amount" + tag + word(i))[:8], "big") % 10**21 + 10**18


def std_leaf(account: str, amount: int) -> bytes:
    # OpenZeppelin StandardMerkleTree leaf: keccak256(bytes.concat(keccak256(abi.encode(a, v)))).
    return keccak(keccak(bytes(12) + bytes.fromhex(account[2:]) + word(amount)))


def uniswap_leaf(index: int, account: str, amount: int) -> bytes:
    # keccak256(abi.encodePacked(uint256 index, address account, uint256 amount)).
    return keccak(word(index) + bytes.fromhex(account[2:]) + word(amount))


def node(a: bytes, b: bytes) -> bytes:
    return keccak(a + b) if a < b else keccak(b + a)


class Tree:
    """Perfect binary tree with sorted-pair hashing (what OpenZeppelin MerkleProof verifies)."""

    def __init__(self, leaves: list[bytes]):
        assert len(leaves) & (len(leaves) - 1) == 0, "perfect tree: a power of two leaves"
        self.layers = [list(leaves)]
        while len(self.layers[-1]) > 1:
            prev = self.layers[-1]
            self.layers.append([node(prev[i], prev[i + 1]) for i in range(0, len(prev), 2)])

    @property
    def root(self) -> bytes:
        return self.layers[-1][0]

    def proof(self, i: int) -> list[bytes]:
        return [self.layers[level][(i >> level) ^ 1] for level in range(len(self.layers) - 1)]

    def set_leaf(self, i: int, leaf: bytes) -> None:
        self.layers[0][i] = leaf
        for level in range(1, len(self.layers)):
            i >>= 1
            below = self.layers[level - 1]
            self.layers[level][i] = node(below[2 * i], below[2 * i + 1])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def artifact(name: str, file: str | None = None) -> dict:
    data = json.loads((OUT / f"{file or name}.sol" / f"{name}.json").read_text())
    return {"abi": data["abi"], "bytecode": data["bytecode"]["object"]}


@dataclass
class Samples:
    values: list[int] = field(default_factory=list)

    def add(self, receipt) -> int:
        if receipt["status"] != 1:
            raise RuntimeError(f"transaction reverted: {receipt['transactionHash'].hex()}")
        self.values.append(receipt["gasUsed"])
        return receipt["gasUsed"]

    @property
    def worst(self) -> int:
        return max(self.values)

    def cell(self) -> str:
        if len(set(self.values)) == 1:
            return f"{self.values[0]:,}"
        return (
            f"{round(statistics.mean(self.values)):,} ({min(self.values):,}-{max(self.values):,})"
        )


class Chain:
    def __init__(self, url: str):
        self.w3 = Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": 60}))
        accounts = self.w3.eth.accounts
        self.admin, self.relayer = accounts[0], accounts[1]

    def send(self, fn, sender: str | None = None):
        tx_hash = fn.transact({"from": sender or self.admin, "gas": GAS_LIMIT})
        receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash)
        if receipt["status"] != 1:
            raise RuntimeError(f"transaction reverted: {tx_hash.hex()}")
        return receipt

    def deploy(self, art: dict, *args):
        factory = self.w3.eth.contract(abi=art["abi"], bytecode=art["bytecode"])
        receipt = self.send(factory.constructor(*args))
        return self.w3.eth.contract(address=receipt["contractAddress"], abi=art["abi"])

    def warp(self, seconds: int) -> None:
        self.w3.provider.make_request("evm_increaseTime", [seconds])
        self.w3.provider.make_request("evm_mine", [])


def padding(tag: bytes, i: int) -> tuple[bytes, int]:
    """A padding account (raw 20 bytes) and amount; one hash each, the trees are large."""
    h = keccak(b"pad" + tag + word(i))
    return h[12:], int.from_bytes(h[:8], "big") % 10**21 + 10**18


def padded_std_tree(
    depth: int, tag: bytes, accounts: list[str], amounts: list[int]
) -> tuple[Tree, int]:
    leaves, total = [], 0
    for i in range(1 << depth):
        if i < len(accounts):
            leaves.append(std_leaf(accounts[i], amounts[i]))
            total += amounts[i]
        else:
            raw, amount = padding(tag, i)
            leaves.append(keccak(keccak(bytes(12) + raw + word(amount))))
            total += amount
    return Tree(leaves), total


def measure_distributor(chain: Chain, token, depth: int) -> dict[str, Samples]:
    """First, repeat and batched claims plus steady propose/accept for one proof depth."""
    tag = b"rd%d" % depth
    k = min(1 << depth, 8)
    accounts = [address_at(tag, j) for j in range(k)]
    base = [amount_at(tag, j) for j in range(k)]
    rd = chain.deploy(artifact("RewardDistributor"), token.address, CHALLENGE_PERIOD, chain.admin)

    tree, padding_total = padded_std_tree(depth, tag, accounts, base)
    padding_total -= sum(base)
    # Enough for three epochs of growing balances.
    funding = 3 * (padding_total + sum(base)) + 10**24
    chain.send(token.functions.mint(chain.admin, funding))
    chain.send(token.functions.approve(rd.address, funding))
    chain.send(rd.functions.fund(funding))

    out = {name: Samples() for name in ("first", "repeat", "batch1", "batchK", "propose", "accept")}

    def post(epoch: int, measure: tuple[str, ...]) -> list[int]:
        amounts = [a * epoch for a in base]
        for j, (account, amount) in enumerate(zip(accounts, amounts, strict=True)):
            tree.set_leaf(j, std_leaf(account, amount))
        total = padding_total + sum(amounts)
        data_hash = keccak(b"manifest" + tag + word(epoch))
        r = chain.send(rd.functions.proposeRoot(epoch, tree.root, total, data_hash, DATA_URI))
        chain.warp(CHALLENGE_PERIOD)
        a = chain.send(rd.functions.acceptRoot(), chain.relayer)
        if "propose" in measure:
            out["propose"].add(r)
        if "accept" in measure:
            out["accept"].add(a)
        return amounts

    def claim(j: int, amounts: list[int]):
        return chain.send(rd.functions.claim(accounts[j], amounts[j], tree.proof(j)), chain.relayer)

    def claim_many(js: list[int], amounts: list[int]):
        fn = rd.functions.claimMany(
            [accounts[j] for j in js], [amounts[j] for j in js], [tree.proof(j) for j in js]
        )
        return chain.send(fn, chain.relayer)

    # Epoch 1: the first root ever (not steady); every account claims into a fresh balance.
    amounts = post(1, measure=())
    for j in range(k):
        assert token.functions.balanceOf(accounts[j]).call() == 0
        out["first"].add(claim(j, amounts))

    # Epoch 2: steady proposal; returning accounts claim again, one by one and in a batch of
    # one. Its acceptance is not steady: it fills the empty previous-root slot.
    amounts = post(2, measure=("propose",))
    for j in range(k - 1):
        out["repeat"].add(claim(j, amounts))
    out["batch1"].add(claim_many([k - 1], amounts))

    # Epoch 3: steady proposal and acceptance; all returning accounts in one batch.
    amounts = post(3, measure=("propose", "accept"))
    out["batchK"].add(claim_many(list(range(k)), amounts))
    extra = (out["batchK"].values[0] - out["batch1"].values[0]) / (k - 1)
    out["extra"] = Samples([round(extra)])
    out["k"] = k
    for j in range(k):
        assert rd.functions.claimed(accounts[j]).call() == amounts[j]
    return out


def measure_uniswap(chain: Chain, token, depth: int) -> Samples:
    """Steady claims of the Uniswap-logic baseline: bitmap word already non-zero, recipient
    already holding tokens."""
    tag = b"uni%d" % depth
    k = min(1 << depth, 8)
    values = [(address_at(tag, i), amount_at(tag, i)) for i in range(k)]
    leaves = [uniswap_leaf(i, a, v) for i, (a, v) in enumerate(values)]
    for i in range(k, 1 << depth):
        raw, amount = padding(tag, i)
        leaves.append(keccak(word(i) + raw + word(amount)))
    tree = Tree(leaves)
    ref = chain.deploy(artifact("UniswapLogicDistributor"), token.address, tree.root)
    # More than the measured claims need, so no claim empties the balance (a gas refund).
    chain.send(token.functions.mint(ref.address, sum(v for _, v in values) + 10**24))
    for i in range(1, k):
        chain.send(token.functions.mint(values[i][0], 10**18))

    def claim(i: int):
        account, amount = values[i]
        return chain.send(ref.functions.claim(i, account, amount, tree.proof(i)), chain.relayer)

    claim(0)  # makes the bitmap word non-zero
    samples = Samples()
    for i in range(1, k):
        samples.add(claim(i))
    return samples


def render(results: dict, uniswap: dict[int, Samples], node_info: str) -> tuple[str, bool]:
    d20 = results[20]
    uni20 = statistics.mean(uniswap[20].values)
    checks = [
        (
            "repeat claim <= 1.03x Uniswap-logic steady claim",
            d20["repeat"].worst,
            round(REPEAT_RATIO_MAX * uni20),
            f"{d20['repeat'].worst / uni20:.4f}x",
        ),
        ("first claim to a fresh holder <= 97,500", d20["first"].worst, FIRST_CLAIM_MAX, ""),
        (
            "each extra returning claim in claimMany <= 35,000",
            d20["extra"].worst,
            EXTRA_IN_BATCH_MAX,
            "",
        ),
        ("steady proposeRoot <= 100,000", d20["propose"].worst, PROPOSE_MAX, ""),
    ]
    ok = all(value <= bound for _, value, bound, _ in checks)

    def row(label: str, key: str) -> str:
        return f"| {label} | " + " | ".join(results[d][key].cell() for d in DEPTHS) + " |"

    def uni_cell(d: int) -> str:
        return uniswap[d].cell() if d in uniswap else "-"

    lines = [
        "# Gas",
        "",
        "Transaction `gasUsed` from receipts on anvil (base cost and calldata included: the",
        "figure a claimer or relayer pays). Written by `scripts/gas-report`; do not edit by hand.",
        f"Chain: {node_info}. Proofs of depth 1, 10 and 20 come from perfect trees of",
        "2, 1,024 and 1,048,576 leaves (measured accounts plus padding accounts). A figure with",
        "a range is the mean (min-max) over several accounts; proofs and amounts differ in",
        "their zero bytes, which calldata prices differently.",
        "",
        "| transaction | depth 1 | depth 10 | depth 20 |",
        "|---|---:|---:|---:|",
        row("`claim`, first claim to a fresh holder", "first"),
        row("`claim`, repeat (claimed and balance already non-zero)", "repeat"),
        row("`claimMany`, one returning account", "batch1"),
        "| `claimMany`, each extra returning account | "
        + " | ".join(results[d]["extra"].cell() for d in DEPTHS)
        + " |",
        row("`proposeRoot`, steady state (not the first root)", "propose"),
        row("`acceptRoot`, steady state", "accept"),
        "| Uniswap-logic `claim`, steady (bitmap word and balance non-zero) | "
        + " | ".join(uni_cell(d) for d in DEPTHS)
        + " |",
        "",
        "Each extra claim in `claimMany` is (batch of k - batch of 1) / (k - 1), with k = "
        + ", ".join(f"{results[d]['k']} at depth {d}" for d in DEPTHS)
        + ".",
        "The baseline is `contracts/test/reference/UniswapLogicDistributor.sol`: Uniswap's",
        "MerkleDistributor claim logic (immutable root, index bitmap, single-hash packed leaf,",
        "no pause, no root updates, one-shot amounts) with the same OpenZeppelin 5 token.",
        "",
        "## Targets (depth 20, worst sample)",
        "",
        "| target | measured | bound | result |",
        "|---|---:|---:|---|",
    ]
    for label, value, bound, note in checks:
        verdict = "met" if value <= bound else "MISSED"
        extra = f" ({note})" if note else ""
        lines.append(f"| {label} | {value:,}{extra} | {bound:,} | {verdict} |")
    lines += [
        "",
        f"Uniswap-logic steady claim at depth 20 on this chain: {uni20:,.0f} (mean); the issue",
        "measured 61,297 on anvil 1.7.1. At depth 10: "
        f"{statistics.mean(uniswap[10].values):,.0f} (issue: 53,678).",
        "",
        "Why the claim is this cheap: it reads one slot (the claimable root) and writes one",
        "(`claimed[account]`). Pausing zeroes that root and sets the accepted one aside, so the",
        "pause flag and the previous root are read only after a proof failed; solvency is",
        "checked once per root at proposal; the challenge window lives in the pending root.",
        "Acceptance leaves the pending root's words in place, so the next proposal rewrites",
        "non-zero slots.",
        "",
    ]
    return "\n".join(lines), ok


def main() -> int:
    # A SIGTERM must still run the `finally` below that stops anvil.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    port = free_port()
    anvil = subprocess.Popen(
        [str(ANVIL), "--port", str(port), "--silent", "--accounts", "2", "--balance", "1000000"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        # The npm `anvil` is a node wrapper that spawns the binary: own process group, so the
        # cleanup below stops both.
        start_new_session=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        chain = None
        for _ in range(200):
            try:
                chain = Chain(url)
                break
            except Exception:  # anvil not listening yet
                if anvil.poll() is not None:
                    raise RuntimeError("anvil exited early") from None
                time.sleep(0.05)
        if chain is None:
            raise RuntimeError("anvil did not start")
        info = chain.w3.provider.make_request("anvil_nodeInfo", []).get("result", {})
        version = chain.w3.client_version
        node_info = f"{version}, hardfork {info.get('hardFork', '?')}"

        token = chain.deploy(artifact("W2EToken"), chain.admin)
        results, uniswap = {}, {}
        for depth in DEPTHS:
            t = time.time()
            results[depth] = measure_distributor(chain, token, depth)
            uniswap[depth] = measure_uniswap(chain, token, depth)
            print(f"depth {depth}: measured in {time.time() - t:.1f}s", file=sys.stderr)

        text, ok = render(results, uniswap, node_info)
        DOC.write_text(text)
        print(text)
        if not ok:
            print("gas-report: a target was missed (see docs/gas.md)", file=sys.stderr)
        return 0 if ok else 1
    finally:
        stop(anvil)


def stop(proc: subprocess.Popen) -> None:
    """Stops the process group started for anvil (wrapper and binary), forcefully if needed."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=10)
            # The wrapper exited; make sure nothing of its group lingers.
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            break
        except subprocess.TimeoutExpired:
            continue
        break


if __name__ == "__main__":
    os.chdir(ROOT)
    sys.exit(main())

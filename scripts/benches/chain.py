"""Claims on anvil: claims per second the relayer sustains, and gas per claim from receipts.

Usage: scripts/bench chain [--quick] [--accounts N] [--batch B] [--singles S]

One anvil (automine) on a free 127.0.0.1 port gets W2EToken and RewardDistributor (dev
deployment, challenge period 0) and an accepted root over N accounts. Then, each through
settlement.adapters.chain exactly as `settlement claim` runs it (gas estimate, EIP-1559
fees, signing, receipt polling):
- single claims, one after the other (estimate, send, wait): S of them;
- the relayer: claimMany batches of B for the remaining accounts, every batch built and sent
  before waiting (consecutive nonces), which is how `settlement claim --relay` sends them.
Baseline measured in the same run: single claims on the embedded eth-tester chain.
Gas: gasUsed of each receipt (base cost and calldata included). gas_per_claim is the mean
over the single claims; gas_per_claim_in_batch is a batch's gasUsed over its claims, mean
over full batches. Every claim goes to a fresh holder (claimed and balance zero before).
Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # support.anvil

from support.anvil import Anvil  # noqa: E402

from settlement.adapters import chain as c  # noqa: E402 - after the path fix above
from settlement.adapters.keys import Key  # noqa: E402
from settlement.config import Settings  # noqa: E402
from settlement.domain.merkle import MerkleTree  # noqa: E402

DATA_HASH = "0x" + "00" * 31 + "01"


def make_tree(n: int, seed: int) -> MerkleTree:
    rnd = random.Random(seed)
    accounts: set[bytes] = set()
    while len(accounts) < n:
        accounts.add(rnd.randbytes(20))
    return MerkleTree.of(
        [("0x" + a.hex(), rnd.randrange(10**15, 10**21)) for a in sorted(accounts)]
    )


def setup(chain: c.Chain, admin: Key, tree: MerkleTree) -> c.Distributor:
    record = c.deploy(
        chain,
        admin,
        challenge_period=0,
        dev=True,
        mint=tree.cumulative_total,
        fund=tree.cumulative_total,
    )
    d = c.Distributor(chain, record.distributor)
    c.submit_proposal(admin, d, 1, tree.root, tree.cumulative_total, DATA_HASH, "bench")
    return d


def single_claims(key: Key, d: c.Distributor, infos: list[c.ClaimInfo]) -> tuple[float, list[int]]:
    gas = []
    t0 = time.perf_counter()
    for info in infos:
        result = c.send_claim(key, d, info)
        assert result.paid == {info.account: info.cumulative_amount}
        gas.append(result.gas_used)
    return time.perf_counter() - t0, gas


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer accounts and claims")
    parser.add_argument(
        "--accounts", type=int, help="leaves of the tree (default 2,200; quick 650)"
    )
    parser.add_argument("--batch", type=int, default=100, help="accounts per claimMany")
    parser.add_argument("--singles", type=int, help="single claims (default 200; quick 50)")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    singles = args.singles or (50 if args.quick else 200)
    n = args.accounts or (650 if args.quick else 2200)
    if n < singles + args.batch:
        parser.error("--accounts must be at least singles + one batch")
    tree = make_tree(n, args.seed)
    accounts = [a for a, _ in tree.values]
    print(
        f"tree of {n:,} accounts, proof depth {len(tree.proof(0))}; claimMany batches of {args.batch}"
    )

    with Anvil() as node:
        chain = c.connect(rpc_url=node.url)
        admin = Key.generate("bench-admin")
        relayer = Key.generate("bench-relayer")
        for key in (admin, relayer):
            chain.set_balance(key.address, 10**24)
        d = setup(chain, admin, tree)
        infos = c.claim_infos(d, tree, accounts)

        single_s, single_gas = single_claims(relayer, d, infos[:singles])
        single_rate = singles / single_s
        print(
            f"anvil single claims: {singles} in {single_s:.2f} s = {single_rate:.1f} claims/s, "
            f"gasUsed mean {round(sum(single_gas) / len(single_gas)):,} (min {min(single_gas):,}, max {max(single_gas):,})"
        )

        rest = infos[singles:]
        t0 = time.perf_counter()
        results = c.relay_claims(relayer, d, rest, batch_size=args.batch)
        batch_s = time.perf_counter() - t0
        claimed = sum(len(r.paid) for r in results)
        assert claimed == len(rest) and sum(r.total for r in results) == sum(
            i.cumulative_amount for i in rest
        )
        batch_rate = claimed / batch_s
        full = [r for r in results if len(r.paid) == args.batch] or results
        in_batch = [r.gas_used / len(r.paid) for r in full]
        gas_in_batch = round(sum(in_batch) / len(in_batch))
        print(
            f"anvil relayer claimMany: {claimed} claims in {len(results)} transactions, {batch_s:.2f} s "
            f"= {batch_rate:.1f} claims/s; gasUsed per claim in a batch of {args.batch}: {gas_in_batch:,}"
        )
        print(
            f"relayer vs single claims: {batch_rate / single_rate:.1f}x claims/s, "
            f"{sum(single_gas) / len(single_gas) / gas_in_batch:.2f}x less gas per claim"
        )

    # Baseline: the embedded chain (py-evm in process), single claims as above.
    embedded_n = 10 if args.quick else 30
    small = make_tree(embedded_n, args.seed + 1)
    chain = c.connect(Settings(rpc_url=None))
    admin = chain.dev_key(0)
    d = setup(chain, admin, small)
    e_s, _ = single_claims(admin, d, c.claim_infos(d, small, [a for a, _ in small.values]))
    e_rate = embedded_n / e_s
    print(
        f"baseline, embedded eth-tester chain single claims: {embedded_n} in {e_s:.2f} s = {e_rate:.1f} claims/s "
        f"-> anvil single {single_rate / e_rate:.1f}x, anvil relayer {batch_rate / e_rate:.0f}x"
    )

    result = {
        "bench": "chain",
        "claims_per_s": round(batch_rate, 1),
        "gas_per_claim": round(sum(single_gas) / len(single_gas)),
        "gas_per_claim_in_batch": gas_in_batch,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()

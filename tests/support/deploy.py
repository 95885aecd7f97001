"""A distributor deployed for a test: fresh admin, poster and guardian keys, each given gas."""

from __future__ import annotations

from eth_account import Account
from eth_account.signers.local import LocalAccount

from settlement.adapters import chain as c
from settlement.adapters.keys import Key

ROLES = ("admin", "poster", "guardian")


def deploy_with_keys(
    chain: c.Chain,
    *,
    challenge_period: int,
    mint: int,
    fund: int,
    dev: bool = False,
    accounts: dict[str, LocalAccount] | None = None,
) -> tuple[dict[str, Key], c.Deployment]:
    """Keys for `ROLES` (new unless `accounts` gives them; 10**20 wei each) and a distributor
    they run, `fund` of `mint` W2E base units funded into it."""
    accounts = accounts or {role: Account.create() for role in ROLES}
    keys = {role: Key(accounts[role], role) for role in ROLES}
    for k in keys.values():
        chain.set_balance(k.address, 10**20)
    deployment = c.deploy(
        chain,
        keys["admin"],
        poster=keys["poster"].address,
        guardian=keys["guardian"].address,
        challenge_period=challenge_period,
        dev=dev,
        mint=mint,
        fund=fund,
    )
    return keys, deployment

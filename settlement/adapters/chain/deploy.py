"""Deploying the contracts, the deployment record the service reads, and funding."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from eth_utils import to_checksum_address

from settlement.adapters.chain.contracts import (
    GUARDIAN_ROLE,
    MINTER_ROLE,
    POSTER_ROLE,
    Artifact,
    Distributor,
    Token,
    load_artifact,
)
from settlement.adapters.chain.tx import Call, Chain, Mined
from settlement.adapters.keys import Key
from settlement.errors import (
    ConfigError,
    DeploymentMissing,
)


@dataclasses.dataclass(frozen=True)
class Deployment:
    """Where the contracts live, as `settlement deploy` records it for the service."""

    chain_id: int
    block: int
    token: str
    distributor: str
    challenge_period: int
    admin: str
    poster: str
    guardian: str
    minters: tuple[str, ...]
    dev: bool
    # The epoch clock every command reads from this record (config.load_settings); absent
    # in records written before it was recorded.
    genesis: int | None = None
    epoch_seconds: int | None = None

    def to_json(self) -> str:
        doc: dict[str, Any] = {
            "chainId": self.chain_id,
            "block": self.block,
            "token": self.token,
            "distributor": self.distributor,
            "challengePeriod": self.challenge_period,
            "roles": {
                "admin": self.admin,
                "poster": self.poster,
                "guardian": self.guardian,
                "minters": list(self.minters),
            },
            "dev": self.dev,
        }
        if self.genesis is not None:
            doc["genesis"] = self.genesis
        if self.epoch_seconds is not None:
            doc["epochSeconds"] = self.epoch_seconds
        return json.dumps(doc, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Deployment:
        doc = json.loads(text)
        roles = doc["roles"]
        return cls(
            chain_id=int(doc["chainId"]),
            block=int(doc["block"]),
            token=to_checksum_address(doc["token"]),
            distributor=to_checksum_address(doc["distributor"]),
            challenge_period=int(doc["challengePeriod"]),
            admin=roles["admin"],
            poster=roles["poster"],
            guardian=roles["guardian"],
            minters=tuple(roles["minters"]),
            dev=bool(doc["dev"]),
            genesis=None if doc.get("genesis") is None else int(doc["genesis"]),
            epoch_seconds=None if doc.get("epochSeconds") is None else int(doc["epochSeconds"]),
        )


def save_deployment(deployment: Deployment, path: str | Path) -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(target.suffix + ".tmp")
    tmp.write_text(deployment.to_json())
    os.replace(tmp, target)  # readers never see half a file


def load_deployment(path: str | Path, chain: Chain | None = None) -> Deployment:
    """The recorded deployment; with `chain`, also checks it is that chain's and has code."""
    try:
        deployment = Deployment.from_json(Path(path).read_text())
    except FileNotFoundError:
        raise DeploymentMissing(
            f"no deployment record at {path}: run `settlement deploy` or set W2E_DEPLOYMENT_FILE"
        ) from None
    except (ValueError, KeyError) as error:
        raise DeploymentMissing(
            f"deployment record {path} is damaged ({error}); deploy again"
        ) from None
    if chain is not None:
        if deployment.chain_id != chain.chain_id:
            raise DeploymentMissing(
                f"deployment record {path} is for chain {deployment.chain_id}, the RPC is chain "
                f"{chain.chain_id}: point W2E_RPC_URL at the right chain or deploy again"
            )
        if not Distributor(chain, deployment.distributor).has_code():
            raise DeploymentMissing(
                f"no contract at {deployment.distributor} on chain {chain.chain_id} (a fresh dev "
                "chain?): run `settlement deploy` again"
            )
    return deployment


def deploy(
    chain: Chain,
    admin: Key,
    *,
    poster: str | None = None,
    guardian: str | None = None,
    challenge_period: int,
    dev: bool = False,
    mint: int = 0,
    fund: int = 0,
    minters: Sequence[str] = (),
    epoch_seconds: int | None = None,
    genesis: int | None = None,
) -> Deployment:
    """Deploy W2EToken and RewardDistributor from the exported artifacts.

    With `epoch_seconds` the record carries the epoch clock: `genesis` when given, else the
    distributor's deployment block's timestamp rounded down to a whole epoch (so epoch 1 is
    the one the deployment falls in, and no empty epoch lies before it).

    Outside `dev` the poster and guardian must be addresses other than the admin's, the
    admin renounces both roles after granting them, and a challenge period of 0 is refused.
    `mint` base units go to the admin and `fund` of them into the distributor (approve, then
    fund()); each of `minters` gets MINTER_ROLE on the token.
    """
    if challenge_period < 0 or challenge_period >= 2**64:
        raise ConfigError(f"challenge period {challenge_period} is outside uint64")
    if challenge_period == 0 and not dev:
        raise ConfigError(
            "a challenge period of 0 accepts every root at once, leaving no time to revoke a bad "
            "one: refused outside dev mode (set W2E_CHALLENGE_PERIOD, or W2E_DEV_MODE=true for a dev chain)"
        )
    poster = to_checksum_address(poster) if poster else None
    guardian = to_checksum_address(guardian) if guardian else None
    if not dev:
        missing = [n for n, a in (("poster", poster), ("guardian", guardian)) if a is None]
        if missing:
            raise ConfigError(
                f"no {' and '.join(missing)} key: outside dev mode poster and guardian need keys "
                "of their own (W2E_POSTER_KEY_ENV / W2E_GUARDIAN_KEY_ENV or keystores)"
            )
        if admin.address in (poster, guardian) or poster == guardian:
            raise ConfigError(
                "admin, poster and guardian must be three different keys outside dev mode: a "
                "guardian that is also the poster cannot check it"
            )
    if fund > mint:
        raise ConfigError(
            f"cannot fund {fund} with {mint} minted: mint at least as much as you fund"
        )
    poster = poster or admin.address
    guardian = guardian or admin.address

    token_art = load_artifact("W2EToken")
    dist_art = load_artifact("RewardDistributor")
    token_tx = chain.transact(admin, _creation(chain, token_art, admin.address))
    token_address = to_checksum_address(token_tx.receipt["contractAddress"])
    dist_tx = chain.transact(
        admin, _creation(chain, dist_art, token_address, challenge_period, admin.address)
    )
    distributor = Distributor(chain, dist_tx.receipt["contractAddress"])
    token = Token(chain, token_address)

    # Grant before renouncing: the admin never leaves a role without a holder.
    if poster != admin.address:
        chain.transact(admin, distributor.grant_role(POSTER_ROLE, poster))
        chain.transact(admin, distributor.renounce_role(POSTER_ROLE, admin.address))
    if guardian != admin.address:
        chain.transact(admin, distributor.grant_role(GUARDIAN_ROLE, guardian))
        chain.transact(admin, distributor.renounce_role(GUARDIAN_ROLE, admin.address))
    for minter in minters:
        chain.transact(admin, token.grant_role(MINTER_ROLE, minter))
    if mint:
        chain.transact(admin, token.mint(admin.address, mint))
    if fund:
        fund_distributor(admin, distributor, fund)

    if epoch_seconds is not None and genesis is None:
        at = int(chain.w3.eth.get_block(dist_tx.block_number)["timestamp"])
        genesis = at - at % epoch_seconds
    return Deployment(
        chain_id=chain.chain_id,
        block=dist_tx.block_number,
        genesis=genesis,
        epoch_seconds=epoch_seconds,
        token=token_address,
        distributor=distributor.address,
        challenge_period=challenge_period,
        admin=admin.address,
        poster=poster,
        guardian=guardian,
        minters=(admin.address, *(to_checksum_address(m) for m in minters)),
        dev=dev,
    )


def _creation(chain: Chain, artifact: Artifact, *args: Any) -> Call:
    """Creation code: the bytecode followed by the ABI-encoded constructor arguments."""
    ctor = next((i for i in artifact.abi if i.get("type") == "constructor"), {"inputs": []})
    encoded = chain.w3.codec.encode([i["type"] for i in ctor["inputs"]], list(args))
    return Call(None, artifact.bytecode + encoded.hex(), f"deploy {artifact.name}")


def fund_distributor(
    key: Key, distributor: Distributor, amount: int, *, mint: bool = False
) -> Mined:
    """approve + fund(amount) from `key`'s balance (minting it first with `mint`)."""
    chain, token = distributor.chain, distributor.token
    if mint:
        chain.transact(key, token.mint(key.address, amount))
    chain.transact(key, token.approve(distributor.address, amount))
    return chain.transact(key, distributor.fund(amount))

"""What a wallet needs to claim: the `GET /v1/accounts/{address}/claim` document (ClaimInfo) and
fetching it from a settlement service."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import httpx
from eth_utils import to_checksum_address

from settlement.errors import ChainError, InputError, RpcUnavailable


@dataclasses.dataclass(frozen=True)
class ClaimInfo:
    """Everything a wallet needs to claim for `account`: the body of
    `GET /v1/accounts/{address}/claim` (see `to_json`)."""

    account: str
    cumulative_amount: int
    claimed: int
    proof: tuple[str, ...]
    root: str
    distributor: str
    chain_id: int
    calldata: str

    @property
    def claimable(self) -> int:
        return max(self.cumulative_amount - self.claimed, 0)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready, integers as decimal strings (PROTOCOL's rule for amounts)."""
        return {
            "account": self.account,
            "cumulativeAmount": str(self.cumulative_amount),
            "claimed": str(self.claimed),
            "claimable": str(self.claimable),
            "proof": list(self.proof),
            "root": self.root,
            "contract": self.distributor,
            "chainId": self.chain_id,
            "calldata": self.calldata,
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> ClaimInfo:
        try:
            return cls(
                account=str(doc["account"]).lower(),
                cumulative_amount=int(doc["cumulativeAmount"]),
                claimed=int(doc["claimed"]),
                proof=tuple(doc["proof"]),
                root=doc["root"],
                distributor=to_checksum_address(doc["contract"]),
                chain_id=int(doc["chainId"]),
                calldata=doc["calldata"],
            )
        except (KeyError, TypeError, ValueError) as error:
            raise InputError(f"claim document lacks or garbles {error}") from None


def claim_info_from_service(base_url: str, account: str, *, timeout: float = 10) -> ClaimInfo:
    """GET {base_url}/v1/accounts/{account}/claim from a settlement service."""
    url = f"{base_url.rstrip('/')}/v1/accounts/{account.lower()}/claim"
    try:
        response = httpx.get(url, timeout=timeout)
    except httpx.HTTPError as error:
        raise RpcUnavailable(
            f"settlement service {base_url} does not answer ({error}); check the URL"
        ) from None
    if response.status_code == 404:
        raise InputError(f"the service knows no reward for {account}")
    if response.status_code != 200:
        raise ChainError(f"GET {url} answered {response.status_code}: {response.text[:200]}")
    return ClaimInfo.from_json(response.json())

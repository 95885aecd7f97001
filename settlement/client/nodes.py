"""Node operator side of the SDK: hold the node key, sign an EIP-712 `NodeRegistration` under
the service's domain and send it; read a node's or an account's state from a service.

The key never leaves `NodeKey`: it is not logged, repr'd or pickled. No server dependency:
httpx, coincurve and eth-account (for keystores) only.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import coincurve
import httpx
from eth_utils import to_checksum_address

from settlement.client.info import ServiceInfo
from settlement.client.signer import KeyLoadError, address_of
from settlement.domain.receipts import Domain
from settlement.domain.registration import (
    NodeRegistrationRequest,
    check_label,
    registration_digest,
    to_wire,
)
from settlement.errors import InputError, InvalidRegistration, SettlementError


class ServiceUnavailable(SettlementError):
    """The settlement service does not answer, or answers with a server error: retry later or
    check the URL."""

    exit_code = 3


class ServiceRefused(InputError):
    """The service refused the request (4xx): `error` is its error class, the message says why."""

    def __init__(self, message: str, error: str | None = None, status: int = 422) -> None:
        super().__init__(message)
        self.error = error
        self.status = status


class NodeKey:
    """A node's secp256k1 key: it signs the node's registration requests, nothing else."""

    __slots__ = ("_address", "_key")

    def __init__(self, secret: bytes) -> None:
        if len(secret) != 32:
            raise KeyLoadError(f"a node key is 32 bytes, got {len(secret)}")
        try:
            self._key = coincurve.PrivateKey(secret)
        except ValueError:
            raise KeyLoadError("the node key is not a valid secp256k1 private key") from None
        self._address = address_of(self._key)

    @classmethod
    def from_hex(cls, hex_key: str) -> NodeKey:
        text = hex_key.strip()
        body = text[2:] if text[:2] in ("0x", "0X") else text
        try:
            return cls(bytes.fromhex(body))
        except ValueError:
            # Never echo the value: it may be a key with a typo.
            raise KeyLoadError("the node key is not hex (expected 64 hex digits)") from None

    @classmethod
    def from_keystore(cls, path: str | Path, password: str | bytes) -> NodeKey:
        """From an encrypted JSON keystore (eth-account, geth, clef; `settlement nodes
        new-key` writes one)."""
        from eth_account import Account

        try:
            encrypted = Path(path).read_text()
        except OSError as exc:
            raise KeyLoadError(f"cannot read keystore {path}: {exc.strerror}") from None
        try:
            secret = bytes(Account.decrypt(encrypted, password))
        except (ValueError, KeyError, TypeError):
            raise KeyLoadError(
                f"cannot decrypt keystore {path}: wrong password or not a keystore"
            ) from None
        return cls(secret)

    @classmethod
    def from_env(cls, name: str, environ: Mapping[str, str]) -> NodeKey:
        """From the hex key in the variable `name` of `environ` (the operator's process
        passes its environment; the `settlement` command passes what its settings read)."""
        value = environ.get(name)
        if not value:
            raise KeyLoadError(f"environment variable {name} is not set (expected a hex key)")
        return cls.from_hex(value)

    @property
    def address(self) -> bytes:
        return self._address

    @property
    def address_hex(self) -> str:
        return to_checksum_address(self._address)

    def registration(
        self, label: str, domain: Domain, issued_at: int | None = None
    ) -> NodeRegistrationRequest:
        """A `NodeRegistration(node, label, issuedAt)` signed by this key under `domain`."""
        request = NodeRegistrationRequest(
            self._address,
            check_label(label),
            int(time.time()) if issued_at is None else issued_at,
        )
        rsv = self._key.sign_recoverable(registration_digest(request, domain), hasher=None)
        return NodeRegistrationRequest(
            request.node, request.label, request.issued_at, rsv[:64] + bytes((rsv[64] + 27,))
        )

    def __repr__(self) -> str:
        return f"NodeKey({self.address_hex}, secret redacted)"

    __str__ = __repr__

    def __reduce__(self) -> Any:
        raise TypeError("a NodeKey holds a private key and cannot be pickled")

    def __copy__(self) -> Any:
        raise TypeError("a NodeKey holds a private key and cannot be copied")

    def __deepcopy__(self, memo: Any) -> Any:
        raise TypeError("a NodeKey holds a private key and cannot be copied")


@dataclass(frozen=True)
class RegistrationAnswer:
    """The service's answer to a registration request: `created` False when it returned the
    node's existing request instead of filing one."""

    created: bool
    id: int
    node: str
    label: str
    issued_at: int
    status: str  # pending | approved | rejected
    requested_at: int
    decided_at: int | None

    @classmethod
    def from_json(cls, doc: Mapping[str, Any], created: bool) -> RegistrationAnswer:
        try:
            return cls(
                created,
                int(doc["id"]),
                str(doc["node"]),
                str(doc["label"]),
                int(doc["issuedAt"]),
                str(doc["status"]),
                int(doc["requestedAt"]),
                None if doc.get("decidedAt") is None else int(doc["decidedAt"]),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise ServiceUnavailable(f"registration answer lacks or garbles {error}") from None


class ServiceClient:
    """The public read and registration endpoints of one settlement service (blocking)."""

    def __init__(self, base_url: str, *, timeout: float = 10.0, transport: Any = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, transport=transport)

    def __enter__(self) -> ServiceClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as error:
            raise ServiceUnavailable(
                f"settlement service {self.base_url} does not answer ({type(error).__name__}: "
                f"{error}); check the URL and that it runs"
            ) from None
        if response.status_code >= 500:
            raise ServiceUnavailable(
                f"{method} {self.base_url}{path} answered {response.status_code}: "
                f"{_message(response)}"
            )
        if response.status_code >= 400:
            raise ServiceRefused(
                f"{method} {path} refused ({response.status_code} {_error(response)}): "
                f"{_message(response)}",
                _error(response),
                response.status_code,
            )
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._call(method, path, **kwargs)
        try:
            return response.json()
        except ValueError:
            raise ServiceUnavailable(f"{method} {path} answered no JSON") from None

    def info(self) -> ServiceInfo:
        """GET /v1/info: the signing domain, receipt parameters, epochs and the service's
        clock (the SDK's ServiceInfo, as `SettlementClient.info()` gives it)."""
        return ServiceInfo.from_json(self._json("GET", "/v1/info"), time.time())

    def register(
        self,
        key: NodeKey,
        label: str,
        *,
        domain: Domain | None = None,
        issued_at: int | None = None,
    ) -> RegistrationAnswer:
        """Sign a registration for `key` under `domain` (default: the service's, from
        /v1/info, with its clock as issuedAt) and send it. Sending again is safe: a pending
        request, or the approved one of an active node, comes back with `created` False.

        Raises InvalidRegistration with the service's reason when it refuses the request."""
        if domain is None or issued_at is None:
            info = self.info()
            domain = info.domain if domain is None else domain
            issued_at = info.now if issued_at is None else issued_at
        wire = to_wire(key.registration(label, domain, issued_at))
        try:
            response = self._call("POST", "/v1/nodes/registrations", json=wire)
        except ServiceRefused as refused:
            if refused.error == "InvalidRegistration" or refused.status == 422:
                raise InvalidRegistration(str(refused).split(": ", 1)[-1]) from None
            raise
        return RegistrationAnswer.from_json(response.json(), response.status_code == 201)

    def node(self, address: str, limit: int = 50) -> dict[str, Any]:
        """GET /v1/nodes/{address}: registration, per closed epoch (the last `limit`, newest
        first) bytes credited, receipts included and rejected by reason, reward; `earned` in
        base units."""
        return dict(self._json("GET", f"/v1/nodes/{quote(address)}", params={"limit": limit}))

    def account(self, address: str) -> dict[str, Any]:
        """GET /v1/accounts/{address}: earned by class, claimed, claimable now, pending."""
        return dict(self._json("GET", f"/v1/accounts/{quote(address)}"))

    def rewards(self, address: str) -> dict[str, Any]:
        """GET /v1/accounts/{address}/rewards: allocations by class per closed epoch, and the
        claim state (claimed, claimable now, pending and when)."""
        return dict(self._json("GET", f"/v1/accounts/{quote(address)}/rewards"))

    def relay_claims(self, accounts: list[str]) -> dict[str, Any]:
        """POST /v1/claims/relay: the service's relayer claims for `accounts` and pays the gas."""
        return dict(self._json("POST", "/v1/claims/relay", json={"accounts": accounts}))


def _error(response: httpx.Response) -> str:
    try:
        return str(response.json().get("error", "error"))
    except (ValueError, AttributeError):
        return "error"


def _message(response: httpx.Response) -> str:
    try:
        doc = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(doc, Mapping):
        return str(doc.get("message") or doc.get("detail") or doc)[:500]
    return str(doc)[:500]

"""Annotated dependencies: what a route needs, taken from the app's state once per request."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated, Any

import anyio
from fastapi import Depends, Header, Request

from settlement.api.limits import InflightLimit, RateLimiter
from settlement.config import Settings
from settlement.errors import Unauthorized
from settlement.services.epochs import TreeCache


@dataclass
class ApiState:
    """Everything the routes share in one worker; built by the app's lifespan."""

    settings: Settings
    store: Any
    ingestor: Any
    limiter: RateLimiter
    inflight: InflightLimit
    thread_limiter: anyio.CapacityLimiter  # threads for ingest: as many as batches admitted
    trees: TreeCache  # published trees by root: the epochs routes' and the claims service's


def _state(request: Request) -> ApiState:
    return request.app.state.api


def _settings(request: Request) -> Settings:
    return request.app.state.api.settings


def _store(request: Request) -> Any:
    return request.app.state.api.store


def _trees(request: Request) -> TreeCache:
    return request.app.state.api.trees


def client_key(
    request: Request,
    x_api_key: Annotated[
        str | None,
        Header(description="optional client key: rate limits apply per key instead of per address"),
    ] = None,
) -> str:
    """Who a request counts against for rate limits: its API key, else its address."""
    if x_api_key:
        return "key:" + x_api_key
    client = request.client
    return "addr:" + (client.host if client else "unknown")


def require_admin(
    request: Request,
    authorization: Annotated[
        str | None, Header(description="Bearer <admin token> (W2E_ADMIN_TOKEN)")
    ] = None,
) -> None:
    """Pass only with `Authorization: Bearer <W2E_ADMIN_TOKEN>`; refuse all when none is set."""
    token = request.app.state.api.settings.admin_token
    if token is None:
        raise Unauthorized("admin endpoints are disabled: set W2E_ADMIN_TOKEN on the server")
    scheme, _, given = (authorization or "").partition(" ")
    expected = token.get_secret_value().encode()
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
        raise Unauthorized("send the admin token as `Authorization: Bearer <token>`")


StateDep = Annotated[ApiState, Depends(_state)]
SettingsDep = Annotated[Settings, Depends(_settings)]
StoreDep = Annotated[Any, Depends(_store)]
TreesDep = Annotated[TreeCache, Depends(_trees)]
ClientKeyDep = Annotated[str, Depends(client_key)]
AdminDep = Annotated[None, Depends(require_admin)]

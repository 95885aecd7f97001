"""Annotated dependencies: what a route needs, taken from the app's state once per request."""

from __future__ import annotations

import hmac
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

import anyio
from fastapi import Depends, Header, Request

from settlement.api import metrics
from settlement.api.limits import InflightLimit
from settlement.config import Settings
from settlement.errors import RateLimited, Unauthorized
from settlement.services.access import Admission
from settlement.services.epochs import TreeCache


@dataclass
class ApiState:
    """Everything the routes share in one worker; built by the app's lifespan."""

    settings: Settings
    store: Any
    ingestor: Any
    admission: Admission  # rate limits shared by every worker and instance (in the store)
    inflight: InflightLimit
    thread_limiter: anyio.CapacityLimiter  # threads for ingest: as many as batches admitted
    trees: TreeCache  # published trees by root: the epochs routes' and the claims service's


T = TypeVar("T")
_ONCE_LOCK = threading.Lock()


def app_once(request: Request, name: str, make: Callable[[], T]) -> T:
    """The app's `name` object, made by `make` on first use (once, whichever worker thread
    asks first) and kept on `app.state`: the explorer's caches, the claim relay."""
    state = request.app.state
    with _ONCE_LOCK:
        made: T | None = getattr(state, name, None)
        if made is None:
            made = make()
            setattr(state, name, made)
    return made


def _state(request: Request) -> ApiState:
    return request.app.state.api


def _settings(request: Request) -> Settings:
    return request.app.state.api.settings


def _store(request: Request) -> Any:
    return request.app.state.api.store


def _trees(request: Request) -> TreeCache:
    return request.app.state.api.trees


def _admit(route: str) -> Callable[..., None]:
    def admit(
        request: Request,
        x_api_key: Annotated[
            str | None,
            Header(
                description="optional API key (`settlement keys create`): its own rate instead "
                "of the client address's; an unknown or revoked key counts as none"
            ),
        ] = None,
    ) -> None:
        """Count the request against its API key's or its address's rate (429 when over).

        A plain `def`: FastAPI runs it in its threadpool, so the store's round trip does
        not hold the event loop; it runs before the route reads the body.
        """
        admission: Admission = request.app.state.api.admission
        peer = request.client.host if request.client else None
        address = admission.client(peer, request.headers.get("x-forwarded-for"))
        try:
            admission.admit(x_api_key, address, time.time())
        except RateLimited as error:
            metrics.RATE_LIMITED.labels(route, error.bucket_kind).inc()
            if route == "receipts":
                metrics.BATCHES.labels("429").inc()
            raise

    return admit


def require_admin(
    request: Request,
    authorization: Annotated[
        str | None,
        Header(description="Bearer <admin token> (W2E_ADMIN_TOKEN or one of W2E_ADMIN_TOKENS)"),
    ] = None,
) -> str:
    """The name of the admin token sent as `Authorization: Bearer <token>` (W2E_ADMIN_TOKEN is
    `admin`); refuse all when none is set. Every token is compared, in constant time each."""
    tokens = request.app.state.api.settings.named_admin_tokens()
    if not tokens:
        raise Unauthorized(
            "admin endpoints are disabled: set W2E_ADMIN_TOKEN or W2E_ADMIN_TOKENS on the server"
        )
    scheme, _, given = (authorization or "").partition(" ")
    sent = given.strip().encode()
    found = None
    for name, token in sorted(tokens.items()):
        if hmac.compare_digest(sent, token.get_secret_value().encode()):
            found = name
    if scheme.lower() != "bearer" or found is None:
        raise Unauthorized("send an admin token as `Authorization: Bearer <token>`")
    return found


StateDep = Annotated[ApiState, Depends(_state)]
SettingsDep = Annotated[Settings, Depends(_settings)]
StoreDep = Annotated[Any, Depends(_store)]
TreesDep = Annotated[TreeCache, Depends(_trees)]
AdmitDep = Annotated[None, Depends(_admit("receipts"))]
AdmitRegistrationDep = Annotated[None, Depends(_admit("registrations"))]
AdminDep = Annotated[str, Depends(require_admin)]  # the admin token's name: who, in the log

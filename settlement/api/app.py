"""The FastAPI application: factory, lifespan (store, ingestor, tree cache, claims) and the one
error mapping."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from settlement import __version__
from settlement.api.deps import ApiState
from settlement.api.limits import InflightLimit, RateLimiter
from settlement.api.metrics import TimedStore
from settlement.api.routes import health, receipts, registry
from settlement.config import Settings, load_settings
from settlement.errors import Busy, SettlementError, redact

if TYPE_CHECKING:
    from settlement.services.claims import ChainContext


def create_app(
    settings: Settings,
    store: Any = None,
    *,
    create_store: bool = True,
    chain_context: ChainContext | None = None,
) -> FastAPI:
    """The API over `store`, or over a store opened from settings.database_url at start-up.

    A store passed in stays open after shutdown (its owner closes it); one opened here is
    closed here, and its tables are created first unless create_store is False.
    Claims are answered from `chain_context` when given (an in-process chain), else from
    W2E_RPC_URL, connected on first use.
    """
    from settlement.adapters.db.store import open_store
    from settlement.services.claims import Claims
    from settlement.services.epochs import TreeCache
    from settlement.services.ingest import Ingestor

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = store is None
        the_store = (
            open_store(
                settings.database_url,
                create=create_store,
                pool_size=settings.db_pool_size,
                sqlite_synchronous=settings.sqlite_synchronous,
            )
            if owned
            else store
        )
        # One tree cache per app: the epochs routes and the claims service load a root's
        # tree (seconds at a million leaves) once between them.
        trees = TreeCache()
        try:
            app.state.api = ApiState(
                settings=settings,
                store=the_store,
                ingestor=Ingestor(TimedStore(the_store), settings),
                limiter=RateLimiter(settings.rate_limit, settings.rate_burst),
                inflight=InflightLimit(settings.max_inflight_batches),
                thread_limiter=anyio.CapacityLimiter(settings.max_inflight_batches),
                trees=trees,
            )
            # The claims routes take it as a dependency (api.routes.claims).
            app.state.claims = Claims(settings, chain_context, trees)
            yield
        finally:
            if owned:
                the_store.close()

    app = FastAPI(
        title="W2E settlement",
        version=__version__,
        summary="Signed watch-to-earn receipts in, verdicts out; registries for the operator.",
        lifespan=lifespan,
    )
    app.include_router(receipts.router)
    app.include_router(registry.router)
    app.include_router(health.router)
    from settlement.api.routes import epochs  # epochs, trees, allocations, accounts

    app.include_router(epochs.router)
    from settlement.api.routes import claims  # GET /v1/accounts/{address}/claim

    app.include_router(claims.router)
    from settlement.api.routes import data  # GET/HEAD /v1/data/...: the published files

    app.include_router(data.router)
    app.add_exception_handler(SettlementError, _settlement_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    return app


async def _settlement_error(request: Request, error: Exception) -> JSONResponse:
    """The one place a SettlementError becomes HTTP: its class says the status."""
    assert isinstance(error, SettlementError)
    headers = None
    if isinstance(error, Busy):
        headers = {"Retry-After": str(error.retry_after)}
    elif error.http_status == 503:  # the store is down: worth a retry, not at once
        headers = {"Retry-After": "5"}
    # Whatever raised it, a URL in the message (W2E_RPC_URL, W2E_DATABASE_URL) goes out as
    # scheme://host:port only: anonymous clients read these bodies.
    return JSONResponse(
        {"error": type(error).__name__, "message": redact(str(error))},
        status_code=error.http_status,
        headers=headers,
    )


async def _validation_error(request: Request, error: Exception) -> JSONResponse:
    """FastAPI's own 422 (admin and registration bodies) in the same shape as ours."""
    assert isinstance(error, RequestValidationError)
    problems = [
        f"{'.'.join(str(p) for p in e['loc'][1:]) or 'body'}: {e['msg']}" for e in error.errors()
    ]
    return JSONResponse(
        {"error": "InputError", "message": "; ".join(problems[:5])}, status_code=422
    )


def app_from_env() -> FastAPI:
    """uvicorn factory for `settlement serve`: each worker reads the same W2E_* settings.

    serve created the tables before starting the workers, so they do not race to.
    """
    return create_app(load_settings(), create_store=False)

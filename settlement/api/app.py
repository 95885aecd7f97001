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
from settlement.api.body import BodyLimits
from settlement.api.deps import ApiState
from settlement.api.limits import InflightLimit
from settlement.api.metrics import TimedStore
from settlement.api.responses import error_response
from settlement.api.routes import health, receipts, registry
from settlement.config import Settings, load_settings
from settlement.errors import SettlementError

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
    from settlement.services.access import Admission
    from settlement.services.claims import Claims
    from settlement.services.epochs import TreeCache
    from settlement.services.genesis import pin_genesis
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
            pinned = pin_genesis(settings, the_store)  # when no genesis was configured
            app.state.api = ApiState(
                settings=pinned,
                store=the_store,
                ingestor=Ingestor(TimedStore(the_store), pinned),
                admission=Admission(the_store, pinned),
                inflight=InflightLimit(pinned.max_inflight_batches),
                thread_limiter=anyio.CapacityLimiter(pinned.max_inflight_batches),
                trees=trees,
            )
            # The claims routes take it as a dependency (api.routes.claims).
            app.state.claims = Claims(pinned, chain_context, trees)
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
    from settlement.api.routes import info  # GET /v1/info: signing domain, parameters, clock

    app.include_router(info.router)
    from settlement.web.routes import install  # the explorer: pages at /, /v1/nodes, ...

    install(app)
    # Outermost of ours: a body is read whole, within its limits and deadline, before any
    # route, dependency (admin token, rate limit, in-flight slot) or JSON parser sees it.
    app.add_middleware(BodyLimits, settings=settings)
    app.add_exception_handler(SettlementError, _settlement_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    return app


async def _settlement_error(request: Request, error: Exception) -> JSONResponse:
    """The one place a SettlementError raised by a route becomes HTTP: its class says the status."""
    assert isinstance(error, SettlementError)
    return error_response(error)


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

    serve created the tables before starting the workers, so they do not race to. The
    unsafe-settings check runs here too, for uvicorn started without serve.
    """
    from settlement.services.safety import refuse_unsafe

    settings = load_settings()
    refuse_unsafe(settings, "the API")
    return create_app(settings, create_store=False)

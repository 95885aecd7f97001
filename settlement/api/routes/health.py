"""Liveness, readiness and metrics: what an orchestrator and a scraper poll."""

from __future__ import annotations

import anyio
from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from settlement.api import metrics
from settlement.api.deps import StateDep
from settlement.errors import StoreError, redact

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Readiness: the store answers a query",
    responses={503: {"description": "the store cannot be reached"}},
)
async def readyz(state: StateDep) -> Response:
    try:
        await anyio.to_thread.run_sync(state.store.registry_version)
    except StoreError as error:
        return JSONResponse(
            {"status": "unavailable", "message": redact(str(error))}, status_code=503
        )
    return JSONResponse({"status": "ready"})


@router.get("/metrics", summary="Prometheus metrics (text format)")
async def prometheus(state: StateDep) -> Response:
    data, content_type = metrics.exposition(state.settings.metrics_dir)
    return Response(data, media_type=content_type)

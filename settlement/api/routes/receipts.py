"""POST /v1/receipts: a batch of wire receipts in, one verdict per receipt out, after commit."""

from __future__ import annotations

import time
from typing import Any

import anyio
import orjson
from fastapi import APIRouter, Request, Response

from settlement.api import metrics
from settlement.api.deps import AdmitDep, StateDep
from settlement.api.schemas import ERROR_RESPONSES, IngestOut, ReceiptBatch
from settlement.api.wire import parse_batch
from settlement.errors import SettlementError

router = APIRouter(tags=["receipts"])

_BODY_DOC = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": ReceiptBatch.model_json_schema()}},
    }
}


@router.post(
    "/v1/receipts",
    response_model=IngestOut,
    responses={k: ERROR_RESPONSES[k] for k in (408, 413, 422, 429, 503)},
    openapi_extra=_BODY_DOC,
    summary="Ingest a batch of signed receipts",
)
async def post_receipts(request: Request, state: StateDep, _: AdmitDep) -> Response:
    """Judge every receipt of the batch (PROTOCOL section 3) and store what is kept.

    A 200 answer is sent only after the batch is committed: resending a batch whose answer
    was lost is safe (its receipts come back `duplicate`). Limits: W2E_MAX_BODY_BYTES
    (413), W2E_BODY_TIMEOUT (408), W2E_MAX_JSON_DEPTH and W2E_MAX_JSON_ELEMENTS (422),
    W2E_MAX_BATCH receipts (413), the API key's rate or W2E_RATE_LIMIT batches/s per client
    address, across all workers (429), W2E_MAX_INFLIGHT_BATCHES per worker (503). 429 and
    503 carry Retry-After.
    """
    started = time.perf_counter()
    try:
        # Already in memory: api/body.py read it whole, within W2E_MAX_BODY_BYTES and
        # W2E_BODY_TIMEOUT, before this route ran, so a slow client never holds a slot.
        body = await request.body()
        with state.inflight.slot():
            metrics.INFLIGHT.inc()
            try:
                # Parse, verify, commit and encode off the event loop, one hop there and back.
                answer = await anyio.to_thread.run_sync(
                    _ingest_body, state, body, int(time.time()), limiter=state.thread_limiter
                )
            finally:
                metrics.INFLIGHT.dec()
    except SettlementError as error:
        metrics.BATCHES.labels(str(error.http_status)).inc()
        raise
    metrics.BATCHES.labels("200").inc()
    metrics.BATCH_SECONDS.observe(time.perf_counter() - started)
    return Response(answer, media_type="application/json")


def _ingest_body(state: Any, body: bytes, now: int) -> bytes:
    items = parse_batch(body, state.settings.max_batch)
    started = time.perf_counter()
    result = state.ingestor.ingest(items, now)
    metrics.INGEST_SECONDS.observe(time.perf_counter() - started)
    metrics.count_verdicts(result.items)
    return orjson.dumps({"results": result.items, "summary": result.summary})

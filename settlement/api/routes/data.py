"""The published dataset files, byte for byte, read-only: W2E_DATA_BASE_URI points here
(BASE = http://HOST:PORT/v1/data), so a third party audits over HTTP exactly as from a folder.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Path, Response
from fastapi.responses import FileResponse

from settlement.api.deps import SettingsDep
from settlement.api.schemas import ErrorOut
from settlement.services import published

router = APIRouter(prefix="/v1/data", tags=["dataset"])


_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {"content": {"application/json": {}, "application/x-ndjson": {}}},
    304: {"description": "If-None-Match matched: the copy the client has is this file"},
    404: {"model": ErrorOut, "description": "no published file at this path"},
}


@router.head(
    "/{relative:path}",
    summary="Headers of a published dataset file (size, ETag), without its bytes",
    response_class=FileResponse,
    responses=_RESPONSES,
    operation_id="head_data_file",
)
@router.get(
    "/{relative:path}",
    summary="A published dataset file (epoch-NNNNNNNN/manifest.json or a file it names)",
    response_class=FileResponse,
    responses=_RESPONSES,
    operation_id="get_data_file",
)
def get_file(
    settings: SettingsDep,
    relative: Annotated[str, Path(description="path below W2E_DATA_DIR, as in a dataURI")],
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    found = published.published_file(settings, relative)
    headers = {"ETag": found.etag, "Cache-Control": published.CACHE_CONTROL}
    if if_none_match is not None and (
        if_none_match.strip() == "*"
        or found.etag in (t.strip().removeprefix("W/") for t in if_none_match.split(","))
    ):
        return Response(status_code=304, headers=headers)
    # FileResponse streams the file in chunks, sets Content-Length from the stat, answers
    # HEAD without a body and serves Range requests.
    return FileResponse(
        found.path, stat_result=found.stat, media_type=found.media_type, headers=headers
    )

"""GET /v1/leaderboards: top earners of a class, in one closed epoch or over all of them."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request

from settlement.api.deps import StoreDep, app_once
from settlement.api.explorer_schemas import LeaderboardOut
from settlement.api.routes.epochs import EPOCH_MAX
from settlement.api.schemas import ErrorOut
from settlement.services import explorer

router = APIRouter(prefix="/v1", tags=["explorer"])


def leaderboard_cache(request: Request) -> explorer.LeaderboardCache:
    """The app's leaderboard cache, made on first use."""
    return app_once(request, "explorer_leaderboards", explorer.LeaderboardCache)


@router.get(
    "/leaderboards",
    summary="Top earners of a class (node, viewer, creator), per closed epoch or cumulative",
    response_model_by_alias=True,
    responses={
        404: {"model": ErrorOut, "description": "the epoch is not closed"},
        422: {"model": ErrorOut, "description": "class, epoch or limit out of range"},
    },
)
def get_leaderboard(
    request: Request,
    store: StoreDep,
    cls: Annotated[Literal["node", "viewer", "creator"], Query(alias="class")] = "node",
    epoch: Annotated[
        int | None, Query(ge=1, le=EPOCH_MAX, description="one closed epoch; omit: all of them")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=explorer.MAX_LIMIT, description="rows")] = 10,
) -> LeaderboardOut:
    board = explorer.leaderboard(store, cls, epoch, limit, leaderboard_cache(request))
    return LeaderboardOut.model_validate(board.to_json())

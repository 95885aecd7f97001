"""The explorer's pages and its JSON API, installed on the app by `install`."""

from __future__ import annotations

from fastapi import FastAPI


def install(app: FastAPI) -> None:
    """The explorer's JSON routes (/v1/nodes, /v1/leaderboards)."""
    from settlement.api.routes import leaderboards, nodes

    app.include_router(nodes.router)
    app.include_router(leaderboards.router)

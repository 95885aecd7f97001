"""The explorer's pages (server-rendered Jinja2, a little plain JavaScript, no build step) and
its JSON API, installed on the app by `install`.

Pages read the same services as the JSON routes, so a figure on a page is the API's figure.
Store calls block: the page routes are plain `def` (FastAPI's threadpool)."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from settlement.api.deps import SettingsDep, StoreDep, TreesDep, app_once
from settlement.api.routes.epochs import EPOCH_MAX
from settlement.api.routes.leaderboards import leaderboard_cache
from settlement.api.routes.nodes import delivery_cache
from settlement.domain.rewards import CLASSES
from settlement.errors import NotFound, SettlementError
from settlement.services import epochs as epochs_service
from settlement.services import explorer, explorer_estimate

HERE = Path(__file__).resolve().parent
templates = Jinja2Templates(directory=str(HERE / "templates"))
templates.env.filters["w2e"] = explorer.format_w2e
templates.env.filters["checksum"] = explorer.checksum


def _utc(seconds: int | None) -> str:
    if seconds is None:
        return "-"
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


templates.env.filters["utc"] = _utc

router = APIRouter(include_in_schema=False)
EpochQuery = Annotated[int | None, Query(ge=1, le=EPOCH_MAX)]


def _page(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
    return templates.TemplateResponse(request, name, context, status_code=status)


def _error(request: Request, error: SettlementError) -> HTMLResponse:
    return _page(
        request,
        "error.html",
        status=error.http_status,
        kind=type(error).__name__,
        message=str(error),
    )


def _estimates(request: Request) -> explorer_estimate.EstimateCache:
    """The app's estimate of the next close, made on first use."""
    return app_once(request, "explorer_estimates", explorer_estimate.EstimateCache)


def _lookup(request: Request, address: str | None, what: str, action: str) -> Response:
    """The lookup form; with an address, a redirect to its page (only ever to one of ours)."""
    if not address:
        return _page(request, "lookup.html", what=what, action=action)
    try:
        parsed = explorer.parse_address(address)
    except SettlementError as error:
        return _error(request, error)
    return RedirectResponse(f"{action}/{explorer.checksum(parsed)}", status_code=303)


@router.get("/", response_class=HTMLResponse)
def epochs_page(
    request: Request,
    store: StoreDep,
    settings: SettingsDep,
    before: EpochQuery = None,
) -> HTMLResponse:
    summaries = explorer.epoch_summaries(store, settings, limit=50, before=before)
    older = summaries[-1].epoch if len(summaries) == 50 else None
    return _page(request, "epochs.html", epochs=summaries, older=older)


@router.get("/epochs/{epoch}", response_class=HTMLResponse)
def epoch_page(request: Request, epoch: int, store: StoreDep, settings: SettingsDep) -> Response:
    if not 1 <= epoch <= EPOCH_MAX:
        return _error(request, NotFound(f"epoch {epoch} is not closed"))
    try:
        summary = explorer.epoch_summary(store, settings, epoch)
    except SettlementError as error:
        return _error(request, error)
    return _page(request, "epoch.html", e=summary, classes=CLASSES)


@router.get("/accounts", response_class=HTMLResponse)
def account_lookup(request: Request, address: str | None = None) -> Response:
    return _lookup(request, address, "account", "/accounts")


@router.get("/accounts/{address}", response_class=HTMLResponse)
def account_page(
    request: Request, address: str, store: StoreDep, settings: SettingsDep, trees: TreesDep
) -> Response:
    try:
        account = explorer.parse_address(address)
        view = epochs_service.account(store, settings, account, trees)
        history = explorer.account_history(store, account)
    except SettlementError as error:
        return _error(request, error)
    chain = chain_error = None
    claims = request.app.state.claims
    try:
        claims.context()  # first: Claims.account reads a chain that does not answer as none
        chain = claims.account(store, account)
    except SettlementError as error:  # no chain, or the RPC is down: the page still renders
        if settings.rpc_url:
            chain_error = str(error)
    estimate = explorer_estimate.open_epoch_estimate(
        store, settings, account, cache=_estimates(request)
    )
    base = str(request.base_url).rstrip("/")
    return _page(
        request,
        "account.html",
        address=explorer.checksum(account),
        view=view,
        history=history,
        chain=chain,
        chain_error=chain_error,
        estimate=estimate,
        classes=CLASSES,
        relay_command=f"settlement claim --relay --service {base} {explorer.checksum(account)}",
    )


@router.get("/nodes", response_class=HTMLResponse)
def node_lookup(request: Request, address: str | None = None) -> Response:
    return _lookup(request, address, "node", "/nodes")


@router.get("/nodes/{address}", response_class=HTMLResponse)
def node_page(request: Request, address: str, store: StoreDep) -> Response:
    try:
        node = explorer.parse_address(address)
        view = explorer.node_view(store, node, 50, None, delivery_cache(request))
    except SettlementError as error:
        return _error(request, error)
    return _page(request, "node.html", node=view, address=explorer.checksum(node))


@router.get("/leaderboards", response_class=HTMLResponse)
def leaderboards_page(
    request: Request, store: StoreDep, epoch: EpochQuery = None, limit: int = 10
) -> Response:
    limit = min(max(limit, 1), explorer.MAX_LIMIT)
    try:
        cache = leaderboard_cache(request)
        boards = [explorer.leaderboard(store, cls, epoch, limit, cache) for cls in CLASSES]
    except SettlementError as error:
        return _error(request, error)
    closed = explorer.closed_epoch_numbers(store)
    return _page(request, "leaderboards.html", boards=boards, epoch=epoch, closed=closed)


def install(app: FastAPI) -> None:
    """The explorer's JSON routes (/v1/nodes, /v1/leaderboards), its pages and static files."""
    from settlement.api.routes import leaderboards, nodes

    app.include_router(nodes.router)
    app.include_router(leaderboards.router)
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

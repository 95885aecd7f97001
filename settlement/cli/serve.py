"""`settlement serve`: the HTTP API under uvicorn."""

from __future__ import annotations

from typing import Annotated, Any

import typer


def serve(
    host: Annotated[str | None, typer.Option(help="bind address (default: W2E_HOST)")] = None,
    port: Annotated[int | None, typer.Option(help="TCP port (default: W2E_PORT)")] = None,
    workers: Annotated[
        int | None,
        typer.Option(min=1, help="uvicorn processes (default: W2E_WORKERS, else one per core)"),
    ] = None,
) -> None:
    """Run the HTTP API with uvicorn: POST /v1/receipts, /v1/admin/*, /metrics, /docs.

    Settings come from W2E_* variables (W2E_DATABASE_URL, W2E_ADMIN_TOKEN, ...). With
    several workers their metrics are pooled in PROMETHEUS_MULTIPROC_DIR (a fresh
    temporary directory unless set). Exit 2 on invalid settings.
    """
    import os
    import pathlib
    import shutil
    import tempfile

    import uvicorn

    from settlement.adapters.db.store import open_store
    from settlement.config import export_for_workers, load_settings
    from settlement.errors import SettlementError
    from settlement.services.genesis import pin_genesis
    from settlement.services.safety import refuse_unsafe

    try:
        settings = load_settings()
        refuse_unsafe(settings, "settlement serve")
        # Create the tables once here, so that the workers do not race to.
        with open_store(settings.database_url, create=True) as store:  # genesis: once, here
            pin_genesis(settings, store, say=lambda m: typer.echo(m, err=True))
    except SettlementError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(error.exit_code) from None
    n = workers or settings.workers or os.cpu_count() or 1
    made = None
    if settings.metrics_dir:
        # Files of an earlier run would add its counts to this one's.
        for stale in pathlib.Path(settings.metrics_dir).glob("*.db"):
            stale.unlink()
    elif n > 1:
        made = tempfile.mkdtemp(prefix="w2e-metrics-")
        export_for_workers(made)
    bind_host, bind_port = host or settings.host, settings.port if port is None else port
    typer.echo(f"serving on http://{bind_host}:{bind_port} with {n} worker(s)", err=True)
    try:
        uvicorn.run(
            "settlement.api.app:app_from_env",
            factory=True,
            # uvicorn would take X-Forwarded-For from 127.0.0.1 by default and rewrite the
            # client address with it; the app reads it only from W2E_TRUSTED_PROXIES.
            proxy_headers=False,
            host=bind_host,
            port=bind_port,
            workers=n,
            log_level="warning",
            log_config=uvicorn_log_config(),
            access_log=False,
            # Bounds per worker (docs/operations.md, "Request limits and timeouts"): request
            # bodies are bounded by the app itself (api/body.py).
            http=(
                "settlement.api.server:H11WithHeadTimeout"
                if settings.http_impl == "h11"
                else settings.http_impl
            ),
            h11_max_incomplete_event_size=settings.max_head_bytes,
            limit_concurrency=settings.limit_concurrency,
            timeout_keep_alive=settings.timeout_keep_alive,
            timeout_graceful_shutdown=settings.timeout_graceful_shutdown,
            backlog=settings.backlog,
        )
    finally:
        if made:
            shutil.rmtree(made, ignore_errors=True)


def uvicorn_log_config() -> dict[str, Any]:
    """uvicorn's own logging config with the URL-redacting filter on its loggers and handlers.

    Given as config, not added to live loggers: each worker process sets up its logging
    from it anew. On the handlers too, since a logger's filters skip records propagated
    from its children.
    """
    import copy

    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["redact_urls"] = {"()": "settlement.errors.RedactUrls"}
    for section in ("handlers", "loggers"):
        for entry in config[section].values():
            entry["filters"] = [*entry.get("filters", []), "redact_urls"]
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        config["loggers"].setdefault(name, {}).setdefault("filters", ["redact_urls"])
    return config

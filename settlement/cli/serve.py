"""`settlement serve`: the API, the close scheduler, the root submitter and the watchtower,
each in a child process that serve supervises (settlement/cli/supervise.py)."""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from settlement.adapters.db.store import Store
    from settlement.config import Settings
    from settlement.services.watchtower import Proposal, Verdict

log = logging.getLogger("settlement.serve")

COMPONENTS = ("api", "scheduler", "submitter", "watchtower")
# Each metrics port is W2E_METRICS_PORT plus this (the API's metrics are on its own port).
METRICS_OFFSET = {"scheduler": 0, "submitter": 1, "watchtower": 2}

_Flag = bool | None


def serve(
    host: Annotated[str | None, typer.Option(help="bind address (default: W2E_HOST)")] = None,
    port: Annotated[int | None, typer.Option(help="TCP port (default: W2E_PORT)")] = None,
    workers: Annotated[
        int | None,
        typer.Option(min=1, help="uvicorn processes (default: W2E_WORKERS, else one per core)"),
    ] = None,
    api: Annotated[_Flag, typer.Option("--api/--no-api", help="the HTTP API (uvicorn)")] = None,
    scheduler: Annotated[
        _Flag, typer.Option("--scheduler/--no-scheduler", help="the epoch close scheduler")
    ] = None,
    submitter: Annotated[
        _Flag,
        typer.Option(
            "--submitter/--no-submitter",
            help="the root submitter (needs W2E_RPC_URL, the deployment record, the poster key)",
        ),
    ] = None,
    watchtower: Annotated[
        _Flag,
        typer.Option(
            "--watchtower/--no-watchtower",
            help="the watchtower (needs W2E_RPC_URL and the deployment record; by default "
            "only with the guardian key)",
        ),
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            help="scheduler metrics on this port, submitter +1, watchtower +2; 0: none "
            "(default: W2E_METRICS_PORT, 9464)"
        ),
    ] = None,
    log_format: Annotated[
        str | None,
        typer.Option(
            "--log-format", metavar="text|json", help="log lines (default: W2E_LOG_FORMAT, text)"
        ),
    ] = None,
) -> None:
    """Run the API, the close scheduler, the root submitter and the watchtower, each in a
    child process restarted with backoff when it dies; SIGTERM or Ctrl-C stops them all.

    Without flags, every component whose chain and keys are configured runs, and each one
    that is not is skipped with one log line saying why. A component asked for with its flag
    (--submitter) that cannot run is refused: exit 2. --no-X leaves X out. Settings come from
    W2E_* variables (W2E_DATABASE_URL, W2E_ADMIN_TOKEN, W2E_RPC_URL, ...). Logs: one line per
    event, W2E_LOG_FORMAT=text|json. Exit 2 on invalid settings or keys.
    """
    import shutil
    import tempfile

    from settlement.cli.options import OPTIONS, setup_command_logging
    from settlement.cli.options import log_format as current_format
    from settlement.cli.supervise import Child, Supervisor
    from settlement.config import child_environment, load_settings
    from settlement.errors import ConfigError, SettlementError

    if log_format is not None:
        if log_format not in ("text", "json"):
            raise typer.BadParameter("use text or json", param_hint="--log-format")
        OPTIONS.log_format = log_format
    setup_command_logging(logging.INFO, component="serve")
    fmt = current_format()
    asked = {"api": api, "scheduler": scheduler, "submitter": submitter, "watchtower": watchtower}
    made = None
    try:
        settings = load_settings()
        from settlement.services.safety import refuse_unsafe

        refuse_unsafe(settings, "settlement serve")
        chosen = choose(settings, asked)
        if not chosen:
            raise ConfigError("nothing to run: every component is off or skipped (see above)")
        if {"api", "scheduler", "submitter"} & set(chosen):
            from settlement.adapters.db.store import open_store
            from settlement.services.genesis import pin_genesis

            # Create the tables and pin the genesis once here, so that the children and
            # workers do not race to.
            with open_store(settings.database_url, create=True) as store:
                pin_genesis(settings, store, say=log.info)
        n = workers or settings.workers or _cores()
        metrics_dir = settings.metrics_dir
        if metrics_dir:
            import pathlib

            # Files of an earlier run would add its counts to this one's.
            for stale in pathlib.Path(metrics_dir).glob("*.db"):
                stale.unlink()
        elif n > 1 and "api" in chosen:
            metrics_dir = made = tempfile.mkdtemp(prefix="w2e-metrics-")
        base = settings.metrics_port if metrics_port is None else metrics_port
        children = []
        for name in chosen:
            argv = [sys.executable, "-m", "settlement.cli", "serve-child", name]
            env: dict[str, str | None] = {"W2E_LOG_FORMAT": fmt, "PROMETHEUS_MULTIPROC_DIR": None}
            if name == "api":
                bind_host, bind_port = (
                    host or settings.host,
                    settings.port if port is None else port,
                )
                argv += ["--host", bind_host, "--port", str(bind_port), "--workers", str(n)]
                env["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir  # the API's workers only
                log.info("api on http://%s:%d with %d worker(s)", bind_host, bind_port, n)
            elif base:
                argv += ["--metrics-port", str(base + METRICS_OFFSET[name])]
                log.info(
                    "%s metrics on http://%s:%d/metrics",
                    name,
                    settings.metrics_host,
                    base + METRICS_OFFSET[name],
                )
            children.append(Child(name, argv, child_environment(env)))
        supervisor = Supervisor(children, stop_timeout=settings.timeout_graceful_shutdown + 5)
        code = supervisor.run()
    except SettlementError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(error.exit_code) from None
    finally:
        if made:
            shutil.rmtree(made, ignore_errors=True)
    log.info("serve stopped")
    if code:
        raise typer.Exit(code)


def _cores() -> int:
    import os

    return os.cpu_count() or 1


def choose(settings: Settings, asked: dict[str, bool | None]) -> list[str]:
    """The components to run: those asked for (refused with a ConfigError when one cannot
    run), and by default those that can (each one skipped logged once, with the reason)."""
    from settlement.errors import ConfigError

    chosen = []
    for name in COMPONENTS:
        flag = asked.get(name)
        if flag is False:
            continue
        why = why_not(settings, name, explicit=flag is True)
        if why is None:
            chosen.append(name)
        elif flag is True:
            raise ConfigError(f"--{name}: cannot run: {why}")
        else:
            log.info("%s skipped: %s", name, why)
    return chosen


def why_not(settings: Settings, name: str, *, explicit: bool = False) -> str | None:
    """Why component `name` cannot run with these settings (None: it can). The checks read
    settings and files only: no chain call, no key decrypted."""
    import pathlib

    if name in ("api", "scheduler"):
        return None
    if settings.rpc_url is None:
        return "W2E_RPC_URL is unset (the embedded chain has no deployment to follow)"
    if not pathlib.Path(settings.deployment_file).is_file():
        return f"no deployment record at W2E_DEPLOYMENT_FILE={settings.deployment_file} (settlement deploy)"
    role = "poster" if name == "submitter" else "guardian"
    keystore = getattr(settings, f"{role}_keystore")
    password_env = getattr(settings, f"{role}_password_env")
    if keystore and settings.secret_from_env(password_env) is None:
        return (
            f"the {role} keystore {keystore} needs its password in the variable {password_env} "
            "(a child process cannot prompt)"
        )
    has_key = keystore or settings.secret_from_env(getattr(settings, f"{role}_key_env"))
    if not has_key and (name == "submitter" or not explicit):
        upper = role.upper()
        what = "" if name == "submitter" else " (--watchtower runs it alert-only, without one)"
        return f"no {role} key: set W2E_{upper}_KEYSTORE or the variable W2E_{upper}_KEY_ENV names{what}"
    return None


def serve_child(
    component: Annotated[str, typer.Argument(help="api, scheduler, submitter or watchtower")],
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8000,
    workers: Annotated[int, typer.Option()] = 1,
    metrics_port: Annotated[int | None, typer.Option()] = None,
) -> None:
    """One component of `settlement serve`, in the foreground (serve starts these)."""
    from settlement.cli.options import setup_command_logging

    if component not in COMPONENTS:
        raise typer.BadParameter(f"one of {', '.join(COMPONENTS)}", param_hint="COMPONENT")
    setup_command_logging(logging.INFO, component=component)
    if component == "api":
        run_api(host, port, workers)
    elif component == "watchtower":
        from settlement.cli.watch import run_watch
        from settlement.config import load_settings

        run_watch(
            rpc=None,
            distributor=None,
            data=None,
            from_block=None,
            interval=load_settings().submitter_interval,
            metrics_port=metrics_port or None,
            metrics_host=load_settings().metrics_host,
            pause_on_failure=False,
            recorder=StoreRecorder(load_settings().database_url),
        )
    else:
        from settlement.cli.serve_jobs import run_job

        run_job(component, metrics_port or None)


class StoreRecorder:
    """The watchtower's verdicts into W2E_DATABASE_URL's `audit_verdict` table, where the
    explorer's epoch page reads them. Here, not in cli.watch: `settlement audit` (which runs
    cli.watch) reaches no store (tests/unit/test_architecture.py). The store is opened at the
    first verdict, so a database down at start does not stop the watchtower; what fails is
    raised to the watchtower, which logs it and goes on."""

    def __init__(self, url: str, source: str = "watchtower") -> None:
        self.url = url
        self.source = source
        self.store: Store | None = None

    def __call__(self, p: Proposal, verdict: Verdict) -> None:
        import time

        from settlement.adapters.db.store import open_store
        from settlement.adapters.db.verdicts import StoredVerdict, record_verdict

        if self.store is None:
            self.store = open_store(self.url, create=True, pool_size=1)
        record_verdict(
            self.store,
            StoredVerdict(
                epoch=p.epoch,
                kind="correction" if p.correction else "epoch",
                root=p.root,
                ok=verdict.ok,
                mismatches=verdict.count,
                first_mismatch=verdict.first,
                audited_at=int(time.time()),
                source=self.source,
            ),
        )


def run_api(host: str, port: int, workers: int) -> None:
    """uvicorn with the app factory, its bounds and our log lines, in this process."""
    import uvicorn

    from settlement.cli.options import log_format
    from settlement.config import load_settings

    settings = load_settings()
    uvicorn.run(
        "settlement.api.app:app_from_env",
        factory=True,
        # uvicorn would take X-Forwarded-For from 127.0.0.1 by default and rewrite the
        # client address with it; the app reads it only from W2E_TRUSTED_PROXIES.
        proxy_headers=False,
        host=host,
        port=port,
        workers=workers,
        log_level="warning",
        log_config=uvicorn_log_config(log_format()),
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


def uvicorn_log_config(fmt: str = "text") -> dict[str, Any]:
    """uvicorn's logging as a config (each worker process sets its logging up from it anew):
    its own loggers and the root logger through settlement.logs' one-line format, with the
    URL-redacting filter on the handler and the loggers."""
    from settlement.logs import dict_config

    return dict_config(fmt, component="api")

"""The submitter as a process runs it: `run_step`, one tick of the job with backoff while the
chain's RPC is down, and `open_submitter`, a Submitter wired from Settings (store, chain,
deployment record, poster key) for `settlement submit`, `settlement correct` and `serve`."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator

from prometheus_client import Gauge

from settlement.adapters.db import submitter as sdb
from settlement.config import Settings
from settlement.errors import ChainError, ConfigError, RpcUnavailable
from settlement.services.submit import Submitter

# The submitter's logger: its lines read as they did before this module was split out.
log = logging.getLogger("settlement.services.submit")

RPC_DOWN = Gauge(
    "w2e_submitter_rpc_unavailable_seconds",
    "Seconds the chain's JSON-RPC has been unreachable by the submitter (0: reachable); it "
    "retries with backoff (RPC_BACKOFF_MAX at most) and reconciles before sending anything",
)
RPC_BACKOFF_BASE = 0.5  # seconds before the first retry of a tick that found the RPC down
RPC_BACKOFF_MAX = 8.0  # doubling up to this: an outage's end is noticed within 8 s


def run_step(submitter: Submitter) -> list[sdb.Proposal]:
    """One tick for a job: an unreachable RPC is logged, shown by the gauge
    w2e_submitter_rpc_unavailable_seconds and retried with exponential backoff."""
    now = time.monotonic()
    if submitter.rpc_down_since is not None:
        RPC_DOWN.set(now - submitter.rpc_down_since)
        if now < submitter.retry_at:
            return []  # backing off: the node is down
    try:
        rows = submitter.step()
    except RpcUnavailable as error:
        submitter.reconciled = False  # the node may have restarted: reconcile again
        submitter.rpc_failures += 1
        if submitter.rpc_down_since is None:
            submitter.rpc_down_since = now
        delay = min(RPC_BACKOFF_MAX, RPC_BACKOFF_BASE * 2 ** (submitter.rpc_failures - 1))
        submitter.retry_at = time.monotonic() + delay
        RPC_DOWN.set(time.monotonic() - submitter.rpc_down_since)
        log.warning("ALERT: submitter: %s; retrying in %.1f s", error, delay)
        return []
    except ChainError as error:
        submitter.reconciled = False
        log.error("submitter: %s", error)
        return []
    if submitter.rpc_down_since is not None:
        log.info("submitter: the RPC answers again after %d failed tick(s)", submitter.rpc_failures)
    submitter.rpc_down_since, submitter.rpc_failures, submitter.retry_at = None, 0, 0.0
    RPC_DOWN.set(0)
    return rows


@contextlib.contextmanager
def open_submitter(
    settings: Settings, *, say: Callable[[str], None] | None = None
) -> Iterator[Submitter]:
    """A Submitter over W2E_DATABASE_URL, W2E_RPC_URL, the deployment record and the poster
    key (W2E_POSTER_KEYSTORE or the variable W2E_POSTER_KEY_ENV names)."""
    from settlement.adapters.chain import Distributor, connect, load_deployment
    from settlement.adapters.db.store import open_store
    from settlement.adapters.keys import load_key

    chain = connect(settings)
    if chain.embedded:
        raise ConfigError(
            "W2E_RPC_URL is unset: the embedded chain lives in one process and has no "
            "deployment; point W2E_RPC_URL at a node (or run `settlement demo`)"
        )
    deployment = load_deployment(settings.deployment_file, chain)
    key = load_key(settings, "poster")
    store = open_store(settings.database_url, sqlite_synchronous=settings.sqlite_synchronous)
    try:
        yield Submitter(
            store,
            settings,
            chain,
            Distributor(chain, deployment.distributor),
            key,
            deployment_block=deployment.block,
            say=say,
        )
    finally:
        store.close()

"""A Watchtower built from the settings, for the CLI (`settlement audit --watch`)."""

from __future__ import annotations

from collections.abc import Callable

from settlement.adapters.chain import GUARDIAN_ROLE, Distributor
from settlement.config import Settings
from settlement.errors import ConfigError, DeploymentMissing
from settlement.services.watchtower.audits import FullAudit, chained, manifest_audit
from settlement.services.watchtower.metrics import WatchMetrics
from settlement.services.watchtower.proposals import PendingAudit, VerdictRecorder
from settlement.services.watchtower.tower import Watchtower


def open_watchtower(
    settings: Settings,
    audit: PendingAudit | None = None,
    *,
    data: str | None = None,
    rpc_url: str | None = None,
    distributor: str | None = None,
    from_block: int | None = None,
    pause_on_failure: bool = False,
    metrics: WatchMetrics | None = None,
    say: Callable[[str], None] | None = None,
    recorder: VerdictRecorder | None = None,
) -> Watchtower:
    """A Watchtower over `rpc_url` (default W2E_RPC_URL) and `distributor` (default: the
    deployment record's), from `from_block` (default: the deployment's block, else 0), with
    the guardian key when one is configured (W2E_GUARDIAN_KEYSTORE or the variable
    W2E_GUARDIAN_KEY_ENV names); without one it audits and alerts but cannot revoke.
    `audit` defaults to the manifest check then the full audit, of the files at each
    proposal's dataURI or under `data` (a folder or an http(s) base). `recorder` keeps each
    verdict (serve's watchtower: the store's audit_verdict table)."""
    from settlement.adapters.chain import connect, load_deployment
    from settlement.adapters.keys import load_optional_key

    chain = connect(settings, rpc_url=rpc_url)
    if chain.embedded:
        raise ConfigError(
            "no RPC: the watchtower follows a live chain; give --rpc URL or set W2E_RPC_URL"
        )
    deployment = None
    if distributor is None or from_block is None:
        try:
            deployment = load_deployment(settings.deployment_file, chain)
        except DeploymentMissing:
            if distributor is None:
                raise
    address = distributor or (deployment.distributor if deployment else "")
    start = from_block if from_block is not None else (deployment.block if deployment else 0)
    d = Distributor(chain, address)
    if not d.has_code():
        raise ConfigError(
            f"no contract at {address} on chain {chain.chain_id}: check --distributor"
        )
    guardian = load_optional_key(settings, "guardian")
    tower = Watchtower(
        d,
        audit or chained(manifest_audit(), FullAudit(d, from_block=start, data=data)),
        from_block=start,
        guardian=guardian,
        pause_on_failure=pause_on_failure,
        metrics=metrics,
        say=say,
        recorder=recorder,
    )
    if guardian is None and pause_on_failure:
        raise ConfigError(
            "--pause-on-failure needs the guardian key: set W2E_GUARDIAN_KEYSTORE or the "
            "variable W2E_GUARDIAN_KEY_ENV names"
        )
    if guardian is None:
        tower.say(
            "no guardian key: failed roots are reported (metric w2e_watchtower_alert), not revoked"
        )
    elif not d.has_role(GUARDIAN_ROLE, guardian.address):
        raise ConfigError(
            f"the guardian key ({guardian.address}) does not hold GUARDIAN_ROLE on {address}: "
            "it could not revoke; check W2E_GUARDIAN_KEYSTORE / W2E_GUARDIAN_KEY_ENV"
        )
    return tower

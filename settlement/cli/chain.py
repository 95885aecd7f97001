"""`settlement deploy`: the contracts (`settlement claim` is in cli/claim.py)."""

from __future__ import annotations

from typing import Annotated

import typer

from settlement.cli.common import w2e


def deploy(
    challenge_period: Annotated[
        int | None,
        typer.Option(min=0, help="seconds (default: W2E_CHALLENGE_PERIOD); 0 only with --dev"),
    ] = None,
    dev: Annotated[
        bool,
        typer.Option(
            "--dev", help="dev chain: one key may hold every role (default: W2E_DEV_MODE)"
        ),
    ] = False,
    poster: Annotated[
        str | None, typer.Option(help="poster address (default: the configured poster key's)")
    ] = None,
    guardian: Annotated[
        str | None, typer.Option(help="guardian address (default: the configured guardian key's)")
    ] = None,
    minter: Annotated[
        list[str] | None, typer.Option(help="also grant MINTER_ROLE to this address (repeatable)")
    ] = None,
    mint: Annotated[str, typer.Option(help="W2E base units minted to the admin")] = "0",
    fund: Annotated[
        str, typer.Option(help="of those, base units funded into the distributor")
    ] = "0",
    out: Annotated[
        str | None, typer.Option(help="deployment record (default: W2E_DEPLOYMENT_FILE)")
    ] = None,
) -> None:
    """Deploy W2EToken and RewardDistributor, hand out roles, mint and fund, and record the
    addresses (JSON: chainId, block, token, distributor, challengePeriod, roles).

    Chain: W2E_RPC_URL (the embedded chain when unset, only with --dev: it lives only in
    this process). Keys: admin from W2E_ADMIN_KEYSTORE or the variable W2E_ADMIN_KEY_ENV
    names; poster and guardian get their roles and the admin renounces them. The record also
    carries the epoch clock every command then reads: W2E_EPOCH_SECONDS and the genesis
    (W2E_GENESIS if set, else the deployment block's time rounded down to a whole epoch).
    Exit 2 on bad settings or keys, 3 on chain errors (unreachable RPC, a key without funds).
    """

    from settlement.adapters import chain as chainlib
    from settlement.adapters.keys import load_key, load_optional_key
    from settlement.config import load_settings
    from settlement.errors import ConfigError, InputError, SettlementError

    try:
        settings = load_settings(deployment=False)  # this command writes the record
        try:
            minted, funded = int(mint), int(fund)
        except ValueError:
            raise InputError(
                "--mint and --fund take integers of base units (1 W2E = 10**18)"
            ) from None
        dev = dev or settings.dev_mode
        chain = chainlib.connect(settings)
        if chain.embedded and not dev:
            raise ConfigError(
                "W2E_RPC_URL is unset: the embedded chain ends with this process, so a "
                "deployment there serves nothing; point W2E_RPC_URL at a node (e.g. `anvil "
                "--port 8546` and W2E_RPC_URL=http://127.0.0.1:8546), or try it with --dev"
            )
        if chain.embedded:
            typer.echo(
                "warning: W2E_RPC_URL is unset: deploying on the embedded chain, which "
                "ends with this process",
                err=True,
            )
        admin = load_optional_key(settings, "admin")
        if admin is None:
            if not (dev and chain.embedded):
                admin = load_key(settings, "admin")  # raises with what to set
            else:
                admin = chain.dev_key(0)
        if poster is None:
            key = load_optional_key(settings, "poster")
            poster = key.address if key else None
        if guardian is None:
            key = load_optional_key(settings, "guardian")
            guardian = key.address if key else None
        record = chainlib.deploy(
            chain,
            admin,
            poster=poster,
            guardian=guardian,
            challenge_period=settings.challenge_period
            if challenge_period is None
            else challenge_period,
            dev=dev,
            mint=minted,
            fund=funded,
            minters=minter or (),
            epoch_seconds=settings.epoch_seconds,
            # W2E_GENESIS set: the record keeps it; else the deployment block's epoch.
            genesis=settings.genesis if "genesis" in settings.model_fields_set else None,
        )
        path = out or settings.deployment_file
        chainlib.save_deployment(record, path)
    except SettlementError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(error.exit_code) from None
    typer.echo(record.to_json(), nl=False)
    typer.echo(
        f"recorded in {path} (every command reads chain id, distributor, genesis "
        f"{record.genesis} and {record.epoch_seconds} s epochs from it); distributor funded "
        f"with {w2e(funded)} W2E",
        err=True,
    )

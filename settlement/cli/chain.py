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

    Chain: W2E_RPC_URL, or the embedded chain when unset (which lives only in this process).
    Keys: admin from W2E_ADMIN_KEYSTORE or the variable W2E_ADMIN_KEY_ENV names; poster and
    guardian get their roles and the admin renounces them. Exit 2 on bad settings or keys,
    3 on chain errors.
    """

    from settlement.adapters import chain as chainlib
    from settlement.adapters.keys import load_key, load_optional_key
    from settlement.config import load_settings
    from settlement.errors import InputError, SettlementError

    try:
        settings = load_settings()
        try:
            minted, funded = int(mint), int(fund)
        except ValueError:
            raise InputError(
                "--mint and --fund take integers of base units (1 W2E = 10**18)"
            ) from None
        dev = dev or settings.dev_mode
        chain = chainlib.connect(settings)
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
        )
        path = out or settings.deployment_file
        chainlib.save_deployment(record, path)
    except SettlementError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(error.exit_code) from None
    typer.echo(record.to_json(), nl=False)
    typer.echo(f"recorded in {path}; distributor funded with {w2e(funded)} W2E", err=True)

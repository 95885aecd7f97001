"""`settlement deploy` and `settlement claim`: the contracts and their claims."""

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


def claim(
    addresses: Annotated[
        list[str], typer.Argument(metavar="ADDRESS...", help="accounts to claim for")
    ],
    relay: Annotated[
        bool, typer.Option("--relay", help="claim for many accounts in claimMany batches")
    ] = False,
    keystore: Annotated[
        str | None,
        typer.Option(help="encrypted keystore paying the gas (default: the claimer key)"),
    ] = None,
    dump: Annotated[
        str | None, typer.Option(help="published standard-v1 tree dump to take proofs from")
    ] = None,
    service: Annotated[
        str | None, typer.Option(help="settlement service URL to fetch proofs from")
    ] = None,
    deployment: Annotated[
        str | None, typer.Option(help="deployment record (default: W2E_DEPLOYMENT_FILE)")
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(min=1, help="accounts per claimMany (default: W2E_CLAIM_BATCH_SIZE)"),
    ] = None,
) -> None:
    """Claim W2E for ADDRESS from the RewardDistributor and print what was paid.

    Proofs come from a published tree dump (--dump) or the service (--service URL). Any key
    may pay the gas (the claimer key, or --keystore with its password from
    W2E_CLAIMER_KEYSTORE_PASSWORD or a prompt); tokens always go to the account. With --relay
    every ADDRESS is claimed through claimMany; accounts with nothing left are skipped.
    Exit 1 when there is nothing to claim, 2 on bad input or keys, 3 on chain errors.
    """

    from settlement.adapters import chain as chainlib
    from settlement.adapters.keys import load_key
    from settlement.client.claims import claim_info_from_service
    from settlement.config import load_settings
    from settlement.errors import ConfigError, InputError, NothingToClaim, SettlementError

    try:
        settings = load_settings()
        if (dump is None) == (service is None):
            raise InputError("give exactly one proof source: --dump FILE or --service URL")
        if len(addresses) > 1 and not relay:
            raise InputError("several addresses need --relay (one claimMany per batch)")
        chain = chainlib.connect(settings)
        key = load_key(settings, "claimer", keystore=keystore)
        if dump is not None:
            record = chainlib.load_deployment(deployment or settings.deployment_file, chain)
            distributor = chainlib.Distributor(chain, record.distributor)
            tree = chainlib.load_tree(dump)
            infos = [chainlib.claim_info(distributor, tree, a) for a in addresses]
        else:
            infos = [claim_info_from_service(service, a) for a in addresses]
            contracts = {i.distributor for i in infos}
            if len(contracts) != 1 or infos[0].chain_id != chain.chain_id:
                raise ConfigError(
                    f"the service names contract(s) {sorted(contracts)} on chain "
                    f"{infos[0].chain_id}; W2E_RPC_URL is chain {chain.chain_id}"
                )
            distributor = chainlib.Distributor(chain, infos[0].distributor)
            infos = [chainlib.refresh_claim(distributor, i) for i in infos]
        if relay:
            results = chainlib.relay_claims(
                key, distributor, infos, batch_size=batch_size or settings.claim_batch_size
            )
            skipped = sum(1 for i in infos if i.claimable == 0)
        else:
            results = [chainlib.send_claim(key, distributor, infos[0])]
            skipped = 0
    except NothingToClaim as error:
        typer.echo(f"nothing to claim: {error}", err=True)
        raise typer.Exit(error.exit_code) from None
    except SettlementError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(error.exit_code) from None
    total = 0
    for result in results:
        for account, amount in sorted(result.paid.items()):
            typer.echo(f"paid {w2e(amount)} W2E ({amount} base units) to {account}")
        typer.echo(f"  tx {result.tx_hash} block {result.block_number} gas {result.gas_used}")
        total += result.total
    if skipped:
        typer.echo(f"skipped {skipped} account(s) with nothing left to claim")
    typer.echo(f"total paid {w2e(total)} W2E ({total} base units) in {len(results)} transaction(s)")

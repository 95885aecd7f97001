"""`settlement claim` and `settlement account`: what an account earned and claiming it, from a
published dump or a service, paid by a key of yours or, gas-free, by the service's relayer.

Amounts are printed in W2E (18 decimals, exact from integers) with base units next to them.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from settlement.cli.common import echo_json, w2e
from settlement.errors import SettlementError

if TYPE_CHECKING:
    from settlement.client.nodes import ServiceClient

EXIT_PENDING = 5  # 4 is every command's "unexpected internal error" (cli/main.py)


class ClaimPending(SettlementError):
    """The account's reward is in a proposed root that is not accepted yet: claimable after
    the root's validAt, once someone (the service's submitter) accepts it."""

    exit_code = EXIT_PENDING

    def __init__(self, message: str, valid_at: int) -> None:
        super().__init__(message)
        self.valid_at = valid_at


def amount(base_units: int) -> str:
    """`1.5 W2E (1500000000000000000 base units)`: exact, no floats."""
    return f"{w2e(base_units)} W2E ({base_units} base units)"


def utc(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def pending_message(account: str, adds: int, epoch: int, valid_at: int) -> str:
    return (
        f"{account}: {amount(adds)} pending in the root of epoch {epoch}, claimable after "
        f"{utc(valid_at)} (validAt {valid_at}) once the root is accepted"
    )


def _pending_of(doc: dict[str, Any]) -> tuple[int, int, int] | None:
    """(adds, epoch, validAt) of GET /v1/accounts/{a}'s pending part, if it adds anything."""
    pending = doc.get("pending")
    if not pending or int(pending.get("adds", 0)) <= 0:
        return None
    return int(pending["adds"]), int(pending["epoch"]), int(pending["claimableAt"])


def _check_claimable(
    client: ServiceClient, accounts: list[str], wait: bool, timeout: float
) -> list[str]:
    """The accounts with something claimable now, by the service's account pages. Without
    `wait`, raises ClaimPending when none has anything claimable but some have a pending
    amount, NothingToClaim when none has anything; with `wait`, waits (up to `timeout` s)
    until one has something claimable (an epoch closing, its root proposed, then accepted)."""
    from settlement.errors import ChainError, NothingToClaim

    deadline = time.monotonic() + timeout
    said = ""
    while True:
        ready, pending, nothing = [], [], []
        for a in accounts:
            doc = client.account(a)
            if doc.get("claimableNow") is None:
                raise ChainError(f"{client.base_url} has no chain: it cannot say what is claimable")
            if int(doc["claimableNow"]) > 0:
                ready.append(a)
            elif (p := _pending_of(doc)) is not None:
                pending.append((a, *p))
            else:
                nothing.append(a)
        if ready:
            break
        if not wait or time.monotonic() >= deadline:
            if pending:
                valid_at = min(p[3] for p in pending)
                raise ClaimPending("; ".join(pending_message(*p) for p in pending), valid_at)
            raise NothingToClaim(
                f"{', '.join(nothing)}: nothing claimable and nothing pending (already claimed, "
                "or no reward in a closed epoch yet: see `settlement account ADDRESS --service "
                "URL`)"
            )
        if pending:
            valid_at = min(p[3] for p in pending)
            say = f"waiting: pending until {utc(valid_at)}, then the root's acceptance"
            pause = max(valid_at - time.time(), 0) + 1
        else:
            say = "waiting: nothing claimable or pending yet (an epoch to close, its root to post)"
            pause = 2
        if say != said:
            typer.echo(say, err=True)
            said = say
        time.sleep(min(pause, 5, max(deadline - time.monotonic(), 0.1)))
    for p in pending:
        typer.echo(f"not yet: {pending_message(*p)}", err=True)
    return ready


def claim(
    addresses: Annotated[
        list[str], typer.Argument(metavar="ADDRESS...", help="accounts to claim for")
    ],
    relay: Annotated[
        bool, typer.Option("--relay", help="claim for many accounts in claimMany batches")
    ] = False,
    gas_free: Annotated[
        bool,
        typer.Option(
            "--gas-free",
            help="ask the service (--service) to claim with its relayer key, which pays the "
            "gas: no key, no RPC needed (POST /v1/claims/relay)",
        ),
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
    wait: Annotated[
        bool,
        typer.Option(
            "--wait",
            help="with --service: wait until something is claimable (an epoch to close, its "
            "root to be proposed and accepted)",
        ),
    ] = False,
    timeout: Annotated[float, typer.Option(min=0, help="seconds --wait waits at most")] = 600.0,
) -> None:
    """Claim W2E for ADDRESS from the RewardDistributor and print what was paid, in W2E and
    base units (1 W2E = 10**18).

    Proofs come from a published tree dump (--dump) or the service (--service URL). Any key
    may pay the gas (the claimer key, or --keystore with its password from
    W2E_CLAIMER_KEYSTORE_PASSWORD or a prompt); tokens always go to the account. With --relay
    every ADDRESS is claimed through claimMany; accounts with nothing left are skipped. With
    --gas-free the service's relayer sends the claim instead: no key and no W2E_RPC_URL.

    Exit 0 when something was paid; 1 when there is nothing to claim; 2 on bad input or keys;
    3 when the chain or the service is unreachable or a transaction fails; 5 when the reward
    is only pending: in a proposed root not accepted yet (the message says the epoch and
    when it becomes claimable). --wait waits (up to --timeout) instead.
    """
    from settlement.errors import InputError, NothingToClaim, RpcUnavailable, redact_url

    rpc = None
    try:
        if (dump is None) == (service is None):
            raise InputError("give exactly one proof source: --dump FILE or --service URL")
        if gas_free and service is None:
            raise InputError("--gas-free asks a service to relay: give --service URL")
        if len(addresses) > 1 and not (relay or gas_free):
            raise InputError("several addresses need --relay or --gas-free (one claimMany)")
        for a in addresses:
            if not (len(a) == 42 and a[:2] in ("0x", "0X")):
                raise InputError(f"{a!r:.60} is not an address: give 0x and 40 hex digits")
            try:
                bytes.fromhex(a[2:])
            except ValueError:
                raise InputError(
                    f"{a!r:.60} is not an address: give 0x and 40 hex digits"
                ) from None
        if gas_free:
            results, skipped = _gas_free(service, addresses, wait, timeout)  # type: ignore[arg-type]
        else:
            from settlement.config import load_settings

            settings = load_settings()
            rpc = settings.rpc_url
            results, skipped = _own_key(
                settings,
                addresses,
                relay,
                keystore,
                dump,
                service,
                deployment,
                batch_size,
                wait,
                timeout,
            )
    except ClaimPending as error:
        typer.echo(f"pending: {error}", err=True)
        raise typer.Exit(error.exit_code) from None
    except NothingToClaim as error:
        typer.echo(f"nothing to claim: {error}", err=True)
        raise typer.Exit(error.exit_code) from None
    except RpcUnavailable as error:
        where = redact_url(rpc) if rpc else "the embedded chain (W2E_RPC_URL is unset)"
        typer.echo(f"error: chain unreachable at {where}: {error}", err=True)
        raise typer.Exit(error.exit_code) from None
    except SettlementError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(error.exit_code) from None
    total = 0
    for tx_hash, block, gas, paid in results:
        for account, base_units in sorted(paid.items()):
            typer.echo(f"paid {amount(base_units)} to {account}")
        typer.echo(f"  tx {tx_hash} block {block} gas {gas}")
        total += sum(paid.values())
    for account, why in sorted(skipped.items()):
        typer.echo(f"skipped {account}: {why}")
    if skipped:
        typer.echo(f"skipped {len(skipped)} account(s) with nothing claimable now")
    typer.echo(f"total paid {amount(total)} in {len(results)} transaction(s)")


Paid = tuple[str, int, int, dict[str, int]]  # tx hash, block, gas used, paid per account


def _gas_free(
    service: str, addresses: list[str], wait: bool, timeout: float
) -> tuple[list[Paid], dict[str, str]]:
    from settlement.client.nodes import ServiceClient, ServiceRefused
    from settlement.errors import NothingToClaim

    with ServiceClient(service) as client:
        ready = _check_claimable(client, addresses, wait, timeout)
        try:
            doc = client.relay_claims(ready)
        except ServiceRefused as refused:
            if refused.status == 409:
                raise NothingToClaim(str(refused)) from None
            raise
    paid = {a: int(v) for a, v in doc["paid"].items()}
    results: list[Paid] = [(t["tx"], t["block"], t["gasUsed"], {}) for t in doc["transactions"]]
    if results:  # the service totals per account; shown under its first transaction
        results[0] = (*results[0][:3], paid)
    return results, dict(doc.get("skipped", {}))


def _own_key(
    settings: Any,
    addresses: list[str],
    relay: bool,
    keystore: str | None,
    dump: str | None,
    service: str | None,
    deployment: str | None,
    batch_size: int | None,
    wait: bool,
    timeout: float,
) -> tuple[list[Paid], dict[str, str]]:
    from settlement.adapters import chain as chainlib
    from settlement.adapters.keys import load_key
    from settlement.client.claims import claim_info_from_service
    from settlement.client.nodes import ServiceClient
    from settlement.errors import ChainError, ConfigError

    if service is not None:
        with ServiceClient(service) as client:
            addresses = _check_claimable(client, addresses, wait, timeout)
    chain = chainlib.connect(settings)
    key = load_key(settings, "claimer", keystore=keystore)
    if dump is not None:
        record = chainlib.load_deployment(deployment or settings.deployment_file, chain)
        distributor = chainlib.Distributor(chain, record.distributor)
        tree = chainlib.load_tree(dump)
        try:
            infos = chainlib.claim_infos(distributor, tree, addresses)
        except ChainError:
            pending = distributor.pending_root()
            if pending is None or pending.root != tree.root:
                raise
            values = dict(tree.values)
            raise ClaimPending(
                "; ".join(
                    pending_message(
                        a,
                        values.get(a.lower(), 0) - distributor.claimed(a),
                        pending.epoch,
                        pending.valid_at,
                    )
                    for a in addresses
                ),
                pending.valid_at,
            ) from None
    else:
        infos = [claim_info_from_service(service, a) for a in addresses]  # type: ignore[arg-type]
        contracts = {i.distributor for i in infos}
        if len(contracts) != 1 or infos[0].chain_id != chain.chain_id:
            raise ConfigError(
                f"the service names contract(s) {sorted(contracts)} on chain "
                f"{infos[0].chain_id}; W2E_RPC_URL is chain {chain.chain_id}"
            )
        distributor = chainlib.Distributor(chain, infos[0].distributor)
        infos = [chainlib.refresh_claim(distributor, i) for i in infos]
    skipped = {i.account: "nothing left to claim" for i in infos if i.claimable == 0}
    if relay:
        results = chainlib.relay_claims(
            key, distributor, infos, batch_size=batch_size or settings.claim_batch_size
        )
    else:
        results = [chainlib.send_claim(key, distributor, infos[0])]
    return [(r.tx_hash, r.block_number, r.gas_used, r.paid) for r in results], skipped


def account(
    address: Annotated[str, typer.Argument(help="the account: a viewer, creator or node")],
    service: Annotated[str, typer.Option(help="settlement service URL")],
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object instead")] = False,
) -> None:
    """What an account earned, by class and closed epoch; what it claimed, can claim now, and
    what is pending in a root not accepted yet, and when it becomes claimable. Amounts in W2E
    (exact, 18 decimals) and base units.

    Exit 0; 2 on a bad address; 3 when the service does not answer.
    """
    from settlement.client.nodes import ServiceClient

    try:
        with ServiceClient(service) as client:
            doc = client.account(address)
            rewards = client.rewards(address)
    except SettlementError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(error.exit_code) from None
    if as_json:
        echo_json({**doc, "epochs": rewards["epochs"]})
        return
    earned = doc["earned"]
    typer.echo(f"account {doc['account']}")
    typer.echo(
        f"earned {amount(int(earned['total']))} through epoch {doc['epoch']}: "
        + ", ".join(f"{c} {w2e(int(earned[c]))}" for c in ("node", "viewer", "creator"))
    )
    for e in rewards["epochs"]:
        parts = [f"{c} {w2e(int(e[c]))}" for c in ("node", "viewer", "creator") if int(e[c])]
        typer.echo(f"  epoch {e['epoch']}: {amount(int(e['total']))} = {' + '.join(parts)}")
    if doc.get("claimed") is None:
        typer.echo("claims: this service has no chain configured")
        return
    typer.echo(f"claimed {amount(int(doc['claimed']))}")
    claimable = int(doc["claimableNow"])
    typer.echo(f"claimable now {amount(claimable)}")
    pending = _pending_of(doc)
    if pending is not None:
        adds, epoch, valid_at = pending
        typer.echo(
            f"pending {amount(adds)} in the root of epoch {epoch}, claimable after "
            f"{utc(valid_at)} (validAt {valid_at})"
        )
    if claimable:
        typer.echo(f"claim it gas-free: settlement claim {address} --service {service} --gas-free")

"""`settlement nodes`: a node operator's commands. Register the node with a service (a signed
EIP-712 NodeRegistration, with a key from `settlement keystore new`), and see its
registration, receipts included and rejected by reason per epoch, bytes credited and
earnings."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from settlement.cli.claim import amount, utc
from settlement.cli.common import echo_json, w2e
from settlement.errors import SettlementError

if TYPE_CHECKING:
    from settlement.client.nodes import NodeKey

app = typer.Typer(
    help="Node operators: register the node, see its receipts and earnings.",
    no_args_is_help=True,
)

PASSWORD_ENV = "W2E_NODE_KEYSTORE_PASSWORD"

KeystoreOption = Annotated[
    str | None,
    typer.Option(
        help="the node key's encrypted keystore (password from --password-env, else a prompt)"
    ),
]
KeyEnvOption = Annotated[
    str | None,
    typer.Option(help="name of an environment variable holding the node key in hex instead"),
]
PasswordEnvOption = Annotated[str, typer.Option(help="variable holding the keystore's password")]


def _env(name: str) -> str | None:
    """A variable as the settings read it (the environment, else the .env file)."""
    from settlement.config import load_settings

    secret = load_settings().secret_from_env(name)
    return None if secret is None else secret.get_secret_value()


def _password(env: str, prompt: str, *, confirm: bool = False) -> str:
    import getpass

    from settlement.errors import KeyUnavailable

    value = _env(env)
    if value:
        return value
    try:
        password = getpass.getpass(prompt)
        if confirm and getpass.getpass("again: ") != password:
            raise KeyUnavailable("the two passwords differ")
    except EOFError:
        raise KeyUnavailable(f"no password: set the variable {env}") from None
    if not password:
        raise KeyUnavailable(f"an empty password: set the variable {env} or type one")
    return password


def load_node_key(keystore: str | None, key_env: str | None, password_env: str) -> NodeKey:
    from settlement.client.nodes import NodeKey
    from settlement.errors import InputError

    if (keystore is None) == (key_env is None):
        raise InputError("give the node key once: --keystore FILE or --key-env NAME")
    if keystore is not None:
        return NodeKey.from_keystore(
            keystore, _password(password_env, f"password of the node keystore {keystore}: ")
        )
    assert key_env is not None
    value = _env(key_env)
    return NodeKey.from_env(key_env, {key_env: value} if value else {})


@app.command()
def register(
    service: Annotated[str, typer.Option(help="settlement service URL")],
    label: Annotated[str, typer.Option(help="1 to 64 printable characters")] = "node",
    keystore: KeystoreOption = None,
    key_env: KeyEnvOption = None,
    password_env: PasswordEnvOption = PASSWORD_ENV,
    chain_id: Annotated[
        int | None, typer.Option(help="sign for this chain id instead of the service's")
    ] = None,
    distributor: Annotated[
        str | None, typer.Option(help="sign for this distributor instead of the service's")
    ] = None,
) -> None:
    """Sign a NodeRegistration(node, label, issuedAt) with the node key under the service's
    EIP-712 domain (chain id and distributor from GET /v1/info, issuedAt its clock) and send
    it to POST /v1/nodes/registrations; print the request's state as JSON.

    Sending again is safe: while a request is pending, or the node is active under that
    label, the service answers with the existing request and files nothing.

    Exit 0 when the request is approved or pending (after a rejection, a new request is
    filed); 2 on a bad key, label or a refused signature (the message says why, with the
    domain the service expects); 3 when the service does not answer.
    """
    from settlement.client.nodes import ServiceClient
    from settlement.domain.receipts import Domain

    try:
        key = load_node_key(keystore, key_env, password_env)
        with ServiceClient(service) as client:
            info = client.info()
            domain = info.domain
            if chain_id is not None or distributor is not None:
                domain = Domain.from_hex(
                    info.chain_id if chain_id is None else chain_id,
                    info.distributor if distributor is None else distributor,
                )
            answer = client.register(key, label, domain=domain, issued_at=info.now)
    except SettlementError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(error.exit_code) from None
    echo_json(
        {
            "id": answer.id,
            "node": answer.node,
            "label": answer.label,
            "status": answer.status,
            "filed": answer.created,
            "requestedAt": answer.requested_at,
            "decidedAt": answer.decided_at,
        }
    )
    what = "filed" if answer.created else "already known (nothing filed)"
    typer.echo(
        f"request {answer.id} for {key.address_hex} {what}: {answer.status}"
        + (
            " (an admin of the service approves or rejects it)"
            if answer.status == "pending"
            else ""
        ),
        err=True,
    )


@app.command()
def status(
    address: Annotated[str, typer.Argument(help="the node's address")],
    service: Annotated[str, typer.Option(help="settlement service URL")],
    epochs: Annotated[
        int, typer.Option(min=1, max=1000, help="closed epochs to look at, newest first")
    ] = 50,
    every: Annotated[
        bool, typer.Option("--every-epoch", help="also the epochs the node had nothing in")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="the two documents as one JSON")] = False,
) -> None:
    """A node's registration state, and per closed epoch (of the last --epochs, those it had
    anything in) its receipts included and rejected by reason, bytes credited and reward; then its earnings: earned, claimed, claimable now
    and pending (with when). Amounts in W2E (exact, 18 decimals) and base units.

    Exit 0; 2 on a bad address; 3 when the service does not answer.
    """
    from settlement.client.nodes import ServiceClient

    try:
        with ServiceClient(service) as client:
            node = client.node(address, limit=epochs)
            acct = client.account(address)
    except SettlementError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(error.exit_code) from None
    if as_json:
        echo_json({"node": node, "account": acct})
        return
    reg = node["registration"]
    state = (
        "active"
        if node["active"]
        else "registered, inactive"
        if node["registered"]
        else ("not registered")
    )
    typer.echo(f"node {node['address']} ({node['label'] or 'no label'}): {state}")
    line = f"registration request: {reg['state']}"
    if reg.get("requested_at"):
        line += f", sent {utc(reg['requested_at'])}"
    if reg.get("decided_at"):
        line += f", decided {utc(reg['decided_at'])}"
    typer.echo(line)
    shown = [
        e
        for e in node["epochs"]
        if every
        or e["receipts_included"]
        or e["rejected"]
        or int(e["bytes_credited"])
        or int(e["reward"])
    ]
    if not shown:
        typer.echo(f"  nothing in the last {len(node['epochs'])} closed epoch(s)")
    for e in shown:
        rejected = ", ".join(f"{r} {n}" for r, n in sorted(e["rejected"].items())) or "none"
        typer.echo(
            f"  epoch {e['epoch']}: {e['receipts_included']} receipt(s) included, "
            f"{int(e['bytes_credited']):,} bytes credited, reward {w2e(int(e['reward']))} W2E; "
            f"rejected: {rejected}"
        )
    totals = ", ".join(f"{r} {n}" for r, n in sorted(node["rejected_total"].items()))
    typer.echo(f"rejected in all: {totals or 'none'}")
    typer.echo(f"earned {amount(int(node['earned']))}")
    if acct.get("claimed") is None:
        typer.echo("claims: this service has no chain configured")
        return
    typer.echo(f"claimed {amount(int(acct['claimed']))}")
    typer.echo(f"claimable now {amount(int(acct['claimableNow']))}")
    pending = acct.get("pending")
    if pending and int(pending["adds"]) > 0:
        typer.echo(
            f"pending {amount(int(pending['adds']))} in the root of epoch {pending['epoch']}, "
            f"claimable after {utc(pending['claimableAt'])} (validAt {pending['claimableAt']})"
        )

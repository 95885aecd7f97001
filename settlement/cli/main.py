"""Typer entry point `settlement`: one sub-command group per use case."""

from __future__ import annotations

import contextlib
import io
import sys
from collections.abc import Iterator
from typing import Annotated

import typer

from settlement import __version__
from settlement.cli.options import ChainIdOption, DistributorOption

app = typer.Typer(
    name="settlement",
    help="W2E settlement engine: verify receipts, simulate traffic, close epochs, post roots.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # never print locals: they may hold keys
)


@app.callback()
def main() -> None:
    """W2E settlement engine."""


@app.command()
def version() -> None:
    """Print the package version."""
    typer.echo(__version__)


receipts_app = typer.Typer(
    help="Receipts of PROTOCOL section 2: check files of signed wire receipts.",
    no_args_is_help=True,
)
app.add_typer(receipts_app, name="receipts")

_VERIFY_CHUNK = 65_536  # NDJSON lines per batch: bounded memory, big enough for the pool


@receipts_app.command("verify")
def receipts_verify(
    file: Annotated[
        str,
        typer.Argument(
            metavar="FILE", help="NDJSON (one receipt a line) or a JSON array; - for stdin"
        ),
    ],
    chain_id: ChainIdOption = None,
    distributor: DistributorOption = None,
    now: Annotated[
        int | None, typer.Option(help="judge as of this unix time (default: the clock)")
    ] = None,
    genesis: Annotated[int | None, typer.Option(help="default: W2E_GENESIS")] = None,
    clock_skew: Annotated[
        int | None, typer.Option(help="seconds (default: W2E_CLOCK_SKEW)")
    ] = None,
    max_age: Annotated[int | None, typer.Option(help="seconds (default: W2E_MAX_AGE)")] = None,
    max_session_age: Annotated[
        int | None, typer.Option(help="seconds (default: W2E_MAX_SESSION_AGE)")
    ] = None,
    segment_seconds: Annotated[
        int | None, typer.Option(help="default: W2E_SEGMENT_SECONDS")
    ] = None,
    max_bitrate: Annotated[
        int | None, typer.Option(help="bits/s (default: W2E_MAX_BITRATE)")
    ] = None,
    max_lead_seconds: Annotated[
        int | None, typer.Option(min=0, help="seconds (default: W2E_MAX_LEAD_SECONDS)")
    ] = None,
    min_segment_bytes: Annotated[
        int | None, typer.Option(min=0, help="bytes (default: W2E_MIN_SEGMENT_BYTES)")
    ] = None,
    workers: Annotated[
        int | None, typer.Option(min=1, help="processes for large files (default: every core)")
    ] = None,
) -> None:
    """Verify wire receipts: one JSON verdict per receipt on stdout, a summary on stderr.

    Stdout, one line per receipt in input order: {"index": i, "verdict": "accepted" or "rejected", "reason": CODE or null, "detail": text or null}. The index counts receipts from 0; blank NDJSON lines are skipped.

    Only the stateless checks of PROTOCOL section 3 run (MALFORMED to SIGNER_MISMATCH, without registries or stored receipts).

    Stderr, last: {"summary": {"total": n, "accepted": n, "rejected": n, "reasons": {CODE: n}}}.

    Exit 0 whatever the verdicts; 2 when the file cannot be read or the options are invalid.
    """
    import dataclasses
    import itertools
    import time
    from collections import Counter

    import orjson

    from settlement.config import load_settings
    from settlement.domain.receipts import (
        Domain,
        Params,
        verify_wire_batch,
        wire_items_from_array,
    )
    from settlement.errors import SettlementError

    try:
        settings = load_settings()
        domain = Domain.from_settings(settings, chain_id, distributor)
        overrides = {
            "genesis": genesis,
            "clock_skew": clock_skew,
            "max_age": max_age,
            "max_session_age": max_session_age,
            "segment_seconds": segment_seconds,
            "max_bitrate": max_bitrate,
            "max_lead_seconds": max_lead_seconds,
            "min_segment_bytes": min_segment_bytes,
        }
        params = dataclasses.replace(
            Params.from_settings(settings), **{k: v for k, v in overrides.items() if v is not None}
        )
        at = int(time.time()) if now is None else now
        out = sys.stdout.buffer
        counts: Counter[str] = Counter()
        index = 0

        def emit(items: list) -> None:
            nonlocal index
            lines = []
            for verdict in verify_wire_batch(items, domain, params, at, workers=workers):
                if verdict.accepted:
                    counts["accepted"] += 1
                    lines.append(
                        b'{"index":%d,"verdict":"accepted","reason":null,"detail":null}\n' % index
                    )
                else:
                    counts[verdict.reason.value] += 1
                    row = {"index": index, "verdict": "rejected", "reason": verdict.reason.value}
                    row["detail"] = verdict.detail
                    lines.append(orjson.dumps(row) + b"\n")
                index += 1
            out.write(b"".join(lines))

        with _open_input(file) as stream:
            # The first non-blank line tells a JSON array from NDJSON; stdin cannot rewind.
            head: list[bytes] = []
            for line in stream:
                head.append(line)
                if line.strip():
                    break
            if b"".join(head).lstrip()[:1] == b"[":
                emit(wire_items_from_array(b"".join(head) + stream.read()))
            else:
                chunk: list[bytes] = []
                for line in itertools.chain(head, stream):
                    if line.strip():
                        chunk.append(line)
                        if len(chunk) == _VERIFY_CHUNK:
                            emit(chunk)
                            chunk = []
                emit(chunk)
        out.flush()
    except SettlementError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(error.exit_code) from None
    accepted = counts.pop("accepted", 0)
    summary = {
        "total": index,
        "accepted": accepted,
        "rejected": index - accepted,
        "reasons": dict(sorted(counts.items())),
    }
    typer.echo(orjson.dumps({"summary": summary}).decode(), err=True)


@contextlib.contextmanager
def _open_input(name: str) -> Iterator[io.BufferedReader]:
    """A receipts file (or stdin for -) opened for bytes; unreadable is an InputError."""
    from settlement.errors import InputError

    if name == "-":
        yield sys.stdin.buffer
        return
    try:
        stream = open(name, "rb")  # noqa: SIM115 - closed below, errors mapped
    except OSError as error:
        raise InputError(f"cannot read {name}: {error.strerror or error}") from None
    try:
        yield stream
    except OSError as error:
        raise InputError(f"cannot read {name}: {error.strerror or error}") from None
    finally:
        stream.close()


# --- serve: the HTTP API ------------------------------------------------------------------


@app.command()
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

    try:
        settings = load_settings()
        # Create the tables once here, so that the workers do not race to.
        open_store(settings.database_url, create=True).close()
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
            host=bind_host,
            port=bind_port,
            workers=n,
            log_level="warning",
            access_log=False,
        )
    finally:
        if made:
            shutil.rmtree(made, ignore_errors=True)


# --- chain: deploy and claim ----------------------------------------------------------------


def _w2e(amount: int) -> str:
    """Base units as an exact decimal W2E amount (18 decimals), no floats."""
    whole, frac = divmod(amount, 10**18)
    return f"{whole}.{frac:018d}".rstrip("0").rstrip(".") if frac else str(whole)


@app.command()
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
    typer.echo(f"recorded in {path}; distributor funded with {_w2e(funded)} W2E", err=True)


@app.command()
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
            infos = [chainlib.claim_info_from_service(service, a) for a in addresses]
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
            typer.echo(f"paid {_w2e(amount)} W2E ({amount} base units) to {account}")
        typer.echo(f"  tx {result.tx_hash} block {result.block_number} gas {result.gas_used}")
        total += result.total
    if skipped:
        typer.echo(f"skipped {skipped} account(s) with nothing left to claim")
    typer.echo(
        f"total paid {_w2e(total)} W2E ({total} base units) in {len(results)} transaction(s)"
    )


# --- registry: nodes, content, viewers, registration requests (straight on the store) ----

registry_app = typer.Typer(
    help="Registries of the store at W2E_DATABASE_URL: nodes, content, viewers, node requests.",
    no_args_is_help=True,
)
app.add_typer(registry_app, name="registry")
_nodes_app = typer.Typer(help="Delivery nodes (address, label, active).", no_args_is_help=True)
_content_app = typer.Typer(help="Content ids and their creators.", no_args_is_help=True)
_viewers_app = typer.Typer(
    help="The viewer allowlist (W2E_VIEWER_ALLOWLIST).", no_args_is_help=True
)
_requests_app = typer.Typer(help="Node registration requests.", no_args_is_help=True)
registry_app.add_typer(_nodes_app, name="nodes")
registry_app.add_typer(_content_app, name="content")
registry_app.add_typer(_viewers_app, name="viewers")
registry_app.add_typer(_requests_app, name="requests")


@contextlib.contextmanager
def _registry() -> Iterator[tuple[object, object]]:
    """(store, settings) for one registry command; errors become a message and an exit code."""

    from settlement.adapters.db.store import open_store
    from settlement.config import load_settings
    from settlement.errors import SettlementError

    try:
        settings = load_settings()
        with open_store(
            settings.database_url, sqlite_synchronous=settings.sqlite_synchronous
        ) as store:
            yield store, settings
    except SettlementError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(error.exit_code) from None


def _echo_json(value: object) -> None:
    import orjson

    typer.echo(orjson.dumps(value).decode())


@_nodes_app.command("add")
def registry_nodes_add(
    address: Annotated[str, typer.Argument(help="0x + 40 hex digits")],
    label: Annotated[str, typer.Option(help="1 to 64 printable characters")],
    inactive: Annotated[bool, typer.Option(help="register it inactive")] = False,
) -> None:
    """Register a node (or update its label and state)."""
    from settlement.services.ingest import register_node

    with _registry() as (store, settings):
        node = register_node(store, address, label, not inactive, settings=settings)
        _echo_json({"address": "0x" + node.hex(), "label": label, "active": not inactive})


@_nodes_app.command("list")
def registry_nodes_list() -> None:
    """One JSON line per node: address, label, active."""
    with _registry() as (store, _):
        for address, label, active in store.nodes():
            _echo_json({"address": "0x" + address.hex(), "label": label, "active": active})


@_nodes_app.command("activate")
def registry_nodes_activate(address: Annotated[str, typer.Argument()]) -> None:
    """Let a registered node earn again."""
    from settlement.services.ingest import set_node_active

    with _registry() as (store, _):
        set_node_active(store, address, True)


@_nodes_app.command("deactivate")
def registry_nodes_deactivate(address: Annotated[str, typer.Argument()]) -> None:
    """Refuse a node's new receipts (UNKNOWN_NODE); what it earned stands."""
    from settlement.services.ingest import set_node_active

    with _registry() as (store, _):
        set_node_active(store, address, False)


@_content_app.command("add")
def registry_content_add(
    content_id: Annotated[str, typer.Argument(help="0x + 64 hex digits")],
    creator: Annotated[str, typer.Argument(help="creator address, 0x + 40 hex digits")],
) -> None:
    """Register content (or change its creator)."""
    from settlement.services.ingest import add_content

    with _registry() as (store, settings):
        add_content(store, content_id, creator, settings=settings)


@_content_app.command("list")
def registry_content_list() -> None:
    """One JSON line per content id: contentId, creator."""
    with _registry() as (store, _):
        for cid, creator in sorted(store.registry_snapshot().content.items()):
            _echo_json({"contentId": "0x" + cid.hex(), "creator": "0x" + creator.hex()})


@_viewers_app.command("add")
def registry_viewers_add(address: Annotated[str, typer.Argument()]) -> None:
    """Add a viewer to the allowlist."""
    from settlement.services.ingest import add_viewer

    with _registry() as (store, settings):
        add_viewer(store, address, settings=settings)


@registry_app.command("import")
def registry_import(
    file: Annotated[str, typer.Argument(help="registries JSON, as `settlement simulate` writes")],
) -> None:
    """Import nodes, content and viewers from a file in one transaction."""
    from settlement.services.ingest import load_registries

    with _registry() as (store, settings):
        _echo_json(load_registries(store, file, settings=settings))


@_requests_app.command("list")
def registry_requests_list(
    status: Annotated[str | None, typer.Option(help="pending, approved or rejected")] = None,
) -> None:
    """One JSON line per node registration request."""
    with _registry() as (store, _):
        for reg in store.registrations(status):
            _echo_json(_registration_json(reg))


@_requests_app.command("approve")
def registry_requests_approve(request_id: Annotated[int, typer.Argument()]) -> None:
    """Approve a pending request: its node is registered, active."""
    import time

    from settlement.services.ingest import approve_node_registration

    with _registry() as (store, _):
        _echo_json(
            _registration_json(approve_node_registration(store, request_id, int(time.time())))
        )


@_requests_app.command("reject")
def registry_requests_reject(request_id: Annotated[int, typer.Argument()]) -> None:
    """Reject a pending request."""
    import time

    from settlement.services.ingest import reject_node_registration

    with _registry() as (store, _):
        _echo_json(
            _registration_json(reject_node_registration(store, request_id, int(time.time())))
        )


def _registration_json(reg: object) -> dict:
    return {
        "id": reg.id,  # type: ignore[attr-defined]
        "node": "0x" + reg.node.hex(),  # type: ignore[attr-defined]
        "label": reg.label,  # type: ignore[attr-defined]
        "issuedAt": reg.issued_at,  # type: ignore[attr-defined]
        "status": reg.status,  # type: ignore[attr-defined]
    }


from settlement.sim.generate import cli_simulate  # noqa: E402 - next to its registration

app.command("simulate")(cli_simulate)


# --- epochs: close, show, schedule; tree: build and prove from files ------------------------

epochs_app = typer.Typer(
    help="Epochs of PROTOCOL 4-6 on the store at W2E_DATABASE_URL: close, show, schedule.",
    no_args_is_help=True,
)
app.add_typer(epochs_app, name="epochs")
tree_app = typer.Typer(
    help="OpenZeppelin-compatible Merkle trees from files: build a dump, prove an account.",
    no_args_is_help=True,
)
app.add_typer(tree_app, name="tree")


def _closed_json(c: object) -> dict:
    return {
        "epoch": c.epoch,  # type: ignore[attr-defined]
        "root": c.root,  # type: ignore[attr-defined]
        "dataHash": c.data_hash,  # type: ignore[attr-defined]
        "proposes": c.proposes,  # type: ignore[attr-defined]
        "cumulativeTotal": str(c.cumulative_total),  # type: ignore[attr-defined]
        "directory": str(c.directory),  # type: ignore[attr-defined]
        "alreadyClosed": c.already_closed,  # type: ignore[attr-defined]
    }


@epochs_app.command("close")
def epochs_close(
    epoch: Annotated[
        int | None,
        typer.Option(min=1, help="close this epoch (default: every due epoch, in order)"),
    ] = None,
    now: Annotated[
        int | None, typer.Option(help="unix seconds to close at (default: the clock)")
    ] = None,
) -> None:
    """Close due epochs (or --epoch E) and print one JSON line per epoch.

    An epoch closes once its cutoff has passed and the one before is closed; closing a
    closed epoch prints its stored result. Exit 1 when --epoch E is not due yet.
    """
    import time

    from settlement.jobs import close_due
    from settlement.services.close import close_epoch

    at = int(time.time()) if now is None else now
    with _registry() as (store, settings):
        if epoch is None:
            closed = close_due(store, settings, at, wait_for_lock=True)  # type: ignore[arg-type]
            if not closed:
                typer.echo("no epoch is due", err=True)
            for c in closed:
                _echo_json(_closed_json(c))
        else:
            _echo_json(_closed_json(close_epoch(store, settings, epoch, now=at)))  # type: ignore[arg-type]


@epochs_app.command("show")
def epochs_show(epoch: Annotated[int, typer.Argument(min=1)]) -> None:
    """Print the epoch's manifest.json, byte for byte as published."""
    from settlement.services.epochs import get_epoch

    with _registry() as (store, settings):
        closed = get_epoch(store, settings, epoch)  # type: ignore[arg-type]
    sys.stdout.buffer.write(closed.manifest + b"\n")


@epochs_app.command("schedule")
def epochs_schedule() -> None:
    """Run the close scheduler in the foreground (W2E_SCHEDULER_INTERVAL) until interrupted.

    Several instances may share one PostgreSQL: an advisory lock keeps each epoch's close
    to one of them. With SQLite run exactly one.
    """
    import logging

    from settlement.jobs import CloseScheduler, run_until_interrupted

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    with _registry() as (store, settings):
        scheduler = CloseScheduler(
            store,  # type: ignore[arg-type]
            settings,  # type: ignore[arg-type]
            on_close=lambda c: _echo_json(_closed_json(c)),
        )
        run_until_interrupted(scheduler)


@tree_app.command("build")
def tree_build(
    input: Annotated[str, typer.Option("--input", help="CSV with the header address,amount")],
    out: Annotated[str, typer.Option("--out", help="where to write the standard-v1 dump")],
) -> None:
    """Build the tree of a CSV of balances, write its dump and print its root.

    Values go in ascending address order and zero amounts get no leaf (PROTOCOL 6), so the
    dump's bytes are OpenZeppelin's `JSON.stringify(StandardMerkleTree.of(values,
    ["address", "uint256"]).dump())`. Exit 2 on a malformed CSV or a repeated address.
    """
    import csv
    from pathlib import Path

    from settlement.adapters.files import write_atomic
    from settlement.domain import merkle
    from settlement.errors import InputError, SettlementError

    try:
        with _open_input(input) as stream:
            text = io.TextIOWrapper(stream, encoding="utf-8", newline="")
            rows = list(csv.reader(text))
        if not rows or [c.strip() for c in rows[0]] != ["address", "amount"]:
            raise InputError(f"{input}: the first line must be the header address,amount")
        balances: dict[str, int] = {}
        for n, row in enumerate(rows[1:], start=2):
            if not row:
                continue
            if len(row) != 2:
                raise InputError(f"{input} line {n}: expected address,amount")
            address, amount = row[0].strip().lower(), row[1].strip()
            if not amount.isdigit() or (amount != "0" and amount.startswith("0")):
                raise InputError(f"{input} line {n}: amount {amount!r} is not a decimal integer")
            if address in balances:
                raise InputError(f"{input} line {n}: address {address} appears twice")
            balances[address] = int(amount)
        tree = merkle.tree_for_balances(balances)
        if tree is None:
            raise InputError(f"{input}: no positive amount, so no tree (root {merkle.ZERO_ROOT})")
        write_atomic(Path(out).resolve(), tree.dump_json())
    except SettlementError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(error.exit_code) from None
    typer.echo(tree.root)
    typer.echo(f"{len(tree)} leaves; dump written to {out}", err=True)


@tree_app.command("prove")
def tree_prove(
    dump: Annotated[str, typer.Option("--dump", help="a standard-v1 dump")],
    account: Annotated[str, typer.Option("--account", help="0x address of the leaf")],
) -> None:
    """Print the account's leaf and proof as JSON: {account, amount, proof, root}.

    Exit 2 when the dump is invalid or holds no leaf for the account.
    """
    from settlement.domain import merkle
    from settlement.errors import SettlementError

    try:
        with _open_input(dump) as stream:
            tree = merkle.MerkleTree.load(stream.read())
        index = tree.index_of(account)
        address, amount = tree.values[index]
        proof = tree.proof(index)
    except SettlementError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(error.exit_code) from None
    _echo_json({"account": address, "amount": str(amount), "proof": proof, "root": tree.root})


# --- submitter, corrections, demo (registered next to their modules' CLI functions) ----------

from settlement.services.correct import cli_correct  # noqa: E402
from settlement.services.submit import cli_submit  # noqa: E402
from settlement.sim.demo import cli_demo  # noqa: E402

app.command("submit")(cli_submit)
app.command("correct")(cli_correct)
app.command("demo")(cli_demo)


if __name__ == "__main__":
    app()

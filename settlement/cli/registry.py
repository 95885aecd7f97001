"""`settlement registry`: nodes, content, viewers and registration requests, straight on
the store."""

from __future__ import annotations

from typing import Annotated

import typer

from settlement.cli.common import cli_who, echo_json, store_and_settings

app = typer.Typer(
    help="Registries of the store at W2E_DATABASE_URL: nodes, content, viewers, node requests.",
    no_args_is_help=True,
)
_nodes_app = typer.Typer(help="Delivery nodes (address, label, active).", no_args_is_help=True)
_content_app = typer.Typer(help="Content ids and their creators.", no_args_is_help=True)
_viewers_app = typer.Typer(
    help="The viewer allowlist (W2E_VIEWER_ALLOWLIST).", no_args_is_help=True
)
_requests_app = typer.Typer(help="Node registration requests.", no_args_is_help=True)
app.add_typer(_nodes_app, name="nodes")
app.add_typer(_content_app, name="content")
app.add_typer(_viewers_app, name="viewers")
app.add_typer(_requests_app, name="requests")


@_nodes_app.command("add")
def registry_nodes_add(
    address: Annotated[str, typer.Argument(help="0x + 40 hex digits")],
    label: Annotated[str, typer.Option(help="1 to 64 printable characters")],
    inactive: Annotated[bool, typer.Option(help="register it inactive")] = False,
) -> None:
    """Register a node (or update its label and state)."""
    from settlement.services.registry import register_node

    with store_and_settings() as (store, settings):
        node = register_node(store, address, label, not inactive, settings=settings, who=cli_who())
        echo_json({"address": "0x" + node.hex(), "label": label, "active": not inactive})


@_nodes_app.command("list")
def registry_nodes_list() -> None:
    """One JSON line per node: address, label, active."""
    with store_and_settings() as (store, _):
        for n in store.nodes():
            echo_json({"address": "0x" + n.address.hex(), "label": n.label, "active": n.active})


@_nodes_app.command("activate")
def registry_nodes_activate(address: Annotated[str, typer.Argument()]) -> None:
    """Let a registered node earn again."""
    from settlement.services.registry import set_node_active

    with store_and_settings() as (store, _):
        set_node_active(store, address, True, who=cli_who())


@_nodes_app.command("deactivate")
def registry_nodes_deactivate(address: Annotated[str, typer.Argument()]) -> None:
    """Refuse a node's new receipts (UNKNOWN_NODE); what it earned stands. It stays
    inactive until an admin activates it: its own registration requests wait as pending."""
    from settlement.services.registry import set_node_active

    with store_and_settings() as (store, _):
        set_node_active(store, address, False, who=cli_who())


@_content_app.command("add")
def registry_content_add(
    content_id: Annotated[str, typer.Argument(help="0x + 64 hex digits")],
    creator: Annotated[str, typer.Argument(help="creator address, 0x + 40 hex digits")],
) -> None:
    """Register content (or change its creator)."""
    from settlement.services.registry import add_content

    with store_and_settings() as (store, settings):
        add_content(store, content_id, creator, settings=settings, who=cli_who())


@_content_app.command("list")
def registry_content_list() -> None:
    """One JSON line per content id: contentId, creator."""
    with store_and_settings() as (store, _):
        for cid, creator in sorted(store.registry_snapshot().content.items()):
            echo_json({"contentId": "0x" + cid.hex(), "creator": "0x" + creator.hex()})


@_viewers_app.command("add")
def registry_viewers_add(address: Annotated[str, typer.Argument()]) -> None:
    """Add a viewer to the allowlist."""
    from settlement.services.registry import add_viewer

    with store_and_settings() as (store, settings):
        add_viewer(store, address, settings=settings, who=cli_who())


@app.command("import")
def registry_import(
    file: Annotated[str, typer.Argument(help="registries JSON, as `settlement simulate` writes")],
) -> None:
    """Import nodes, content and viewers from a file in one transaction."""
    from settlement.services.registry import load_registries

    with store_and_settings() as (store, settings):
        echo_json(load_registries(store, file, settings=settings, who=cli_who()))


@_requests_app.command("list")
def registry_requests_list(
    status: Annotated[str | None, typer.Option(help="pending, approved or rejected")] = None,
) -> None:
    """One JSON line per node registration request."""
    with store_and_settings() as (store, _):
        for reg in store.registrations(status):
            echo_json(_registration_json(reg))


@_requests_app.command("approve")
def registry_requests_approve(request_id: Annotated[int, typer.Argument()]) -> None:
    """Approve a pending request: its node is registered, active."""
    import time

    from settlement.services.registry import approve_node_registration

    with store_and_settings() as (store, _):
        echo_json(
            _registration_json(
                approve_node_registration(store, request_id, int(time.time()), who=cli_who())
            )
        )


@_requests_app.command("reject")
def registry_requests_reject(request_id: Annotated[int, typer.Argument()]) -> None:
    """Reject a pending request."""
    import time

    from settlement.services.registry import reject_node_registration

    with store_and_settings() as (store, _):
        echo_json(
            _registration_json(
                reject_node_registration(store, request_id, int(time.time()), who=cli_who())
            )
        )


def _registration_json(reg: object) -> dict:
    return {
        "id": reg.id,  # type: ignore[attr-defined]
        "node": "0x" + reg.node.hex(),  # type: ignore[attr-defined]
        "label": reg.label,  # type: ignore[attr-defined]
        "issuedAt": reg.issued_at,  # type: ignore[attr-defined]
        "status": reg.status,  # type: ignore[attr-defined]
    }

"""`settlement keystore`: make an encrypted key file for a player (viewer) or a node.

The key is made here, written encrypted (eth-account keystore, scrypt) with mode 0600, and
never printed: only its address is. `ReceiptSigner.from_keystore(path, password, ...)`
reads it back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    help="Encrypted key files (eth-account keystores) for players and nodes.",
    no_args_is_help=True,
)

MIN_PASSWORD_CHARS = 8


@app.command("new")
def keystore_new(
    path: Annotated[
        Path, typer.Argument(metavar="FILE", help="keystore to write, e.g. viewer.json")
    ],
    password_env: Annotated[
        str | None,
        typer.Option(
            help="environment variable holding the password (default: ask twice on the terminal)"
        ),
    ] = None,
    force: Annotated[bool, typer.Option(help="replace FILE if it exists")] = False,
) -> None:
    """Make a new random key and write it encrypted to FILE (mode 0600); print its address.

    The key itself is never printed or logged. Exit 0: written; 2: FILE exists (without
    --force), the password is missing or shorter than 8 characters, or FILE cannot be written.
    """
    from settlement.adapters.keys import Key, save_keystore
    from settlement.errors import InputError, SettlementError

    try:
        if path.exists() and not force:
            raise InputError(f"{path} exists: choose another name or pass --force to replace it")
        if password_env is not None:
            from settlement.config import load_settings

            secret = load_settings().secret_from_env(password_env)  # the environment or .env
            if secret is None:
                raise InputError(f"environment variable {password_env} is not set or empty")
            password = secret.get_secret_value()
        else:
            password = typer.prompt(
                f"password for {path}", hide_input=True, confirmation_prompt=True
            )
        if len(password) < MIN_PASSWORD_CHARS:
            raise InputError(f"the password must have at least {MIN_PASSWORD_CHARS} characters")
        key = Key.generate("viewer")
        try:
            save_keystore(key, path, password)
        except OSError as error:
            raise InputError(f"cannot write {path}: {error.strerror or error}") from None
    except SettlementError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(error.exit_code) from None
    typer.echo(key.address)

"""Signing keys for the admin, poster, guardian and claimer roles, behind a redacting wrapper.

A key comes from an encrypted eth-account keystore file or from the environment variable a
setting names; it is never logged, printed, pickled or shown by repr.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import logging
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from eth_account import Account
from eth_account.signers.local import LocalAccount

from settlement.config import Settings
from settlement.errors import KeyUnavailable

log = logging.getLogger(__name__)

Role = Literal["admin", "poster", "guardian", "claimer"]
ROLES: tuple[Role, ...] = ("admin", "poster", "guardian", "claimer")


class Key:
    """A private key that can sign and tell its address, and nothing else.

    repr/str show the address only; pickling and copying are refused so a key cannot leak
    into a process pool, a cache or a log record by accident.
    """

    __slots__ = ("_account", "address", "label")

    def __init__(self, account: LocalAccount, label: str = "key") -> None:
        self._account = account
        self.address: str = account.address
        self.label = label

    @classmethod
    def from_hex(cls, secret: str, label: str = "key") -> Key:
        try:
            return cls(Account.from_key(secret.strip()), label)
        except (ValueError, TypeError):
            # The message must not echo the value: it may be a key with a typo.
            raise KeyUnavailable(
                f"{label}: not a private key (expected 0x and 64 hex digits)"
            ) from None

    @classmethod
    def generate(cls, label: str = "key") -> Key:
        return cls(Account.create(), label)

    def sign_transaction(self, tx: dict[str, Any]) -> tuple[bytes, bytes]:
        """Sign a transaction dict; returns (raw transaction bytes, transaction hash)."""
        signed = self._account.sign_transaction(tx)
        return bytes(signed.raw_transaction), bytes(signed.hash)

    def encrypt(self, password: str, **kdf: Any) -> dict[str, Any]:
        """An eth-account keystore of this key (scrypt unless `kdf` says otherwise)."""
        return Account.encrypt(self._account.key, password, **kdf)

    def __repr__(self) -> str:
        return f"Key({self.label}, {self.address}, secret redacted)"

    __str__ = __repr__

    def __reduce__(self) -> Any:
        raise TypeError("a Key is not picklable: load it again where it is needed")

    def __copy__(self) -> Any:
        raise TypeError("a Key is not copyable")

    def __deepcopy__(self, memo: Any) -> Any:
        raise TypeError("a Key is not copyable")


def tighten(path: str | Path, label: str = "key") -> None:
    """A keystore readable by others than its owner is set to 0600, with a warning: files
    written before this check (or copied in) may be group- or world-readable."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return  # reading it reports the problem
    if mode & 0o077:
        log.warning(
            "%s: keystore %s had mode %o (readable by others than its owner); set to 600",
            label,
            path,
            mode,
        )
        try:
            os.chmod(path, 0o600)
        except OSError as error:
            raise KeyUnavailable(
                f"{label}: keystore {path} has mode {mode:o} and cannot be set to 600 "
                f"({error.strerror or error}): fix its permissions or owner"
            ) from None


def load_keystore(path: str | Path, password: str, label: str = "key") -> Key:
    tighten(path, label)
    try:
        doc = json.loads(Path(path).read_text())
    except OSError as error:
        raise KeyUnavailable(
            f"{label}: cannot read keystore {path}: {error.strerror or error}"
        ) from None
    except ValueError:
        raise KeyUnavailable(f"{label}: keystore {path} is not JSON") from None
    try:
        secret = Account.decrypt(doc, password)
    except ValueError:
        raise KeyUnavailable(
            f"{label}: cannot decrypt keystore {path}: wrong password or damaged file"
        ) from None
    return Key(Account.from_key(secret), label)


def save_keystore(key: Key, path: str | Path, password: str, **kdf: Any) -> None:
    """Write `key` encrypted to `path`, mode 0600 whatever the umask or the mode of a file it
    replaces; `kdf` as eth-account's encrypt takes it (kdf="pbkdf2", iterations=...) for
    fast test keystores. Atomic: a crash leaves the old file or the new one, never half."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    data = json.dumps(key.encrypt(password, **kdf)).encode()
    # mkstemp creates the file 0600 before a byte is written; fchmod makes sure of it.
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def load_key(
    settings: Settings,
    role: Role,
    *,
    keystore: str | None = None,
    prompt: Callable[[str], str] | None = getpass.getpass,
) -> Key:
    """The key of `role`: `keystore` (or the role's *_keystore setting) decrypted with the
    password from the role's *_password_env variable or a prompt; else the hex key in the
    variable the role's *_key_env setting names."""
    path = keystore or getattr(settings, f"{role}_keystore")
    if path:
        password_env = getattr(settings, f"{role}_password_env")
        password = settings.secret_from_env(password_env)
        if password is not None:
            return load_keystore(path, password.get_secret_value(), role)
        if prompt is None:
            raise KeyUnavailable(
                f"{role}: keystore {path} needs a password: set the variable {password_env}"
            )
        return load_keystore(path, prompt(f"password of the {role} keystore {path}: "), role)
    env = getattr(settings, f"{role}_key_env")
    secret = settings.secret_from_env(env)
    if secret is None:
        upper = role.upper()
        raise KeyUnavailable(
            f"no {role} key: set W2E_{upper}_KEYSTORE to an encrypted keystore file, or put the "
            f"hex private key in the variable {env} (its name is the setting W2E_{upper}_KEY_ENV)"
        )
    return Key.from_hex(secret.get_secret_value(), role)


def load_optional_key(settings: Settings, role: Role, **kwargs: Any) -> Key | None:
    """Like `load_key`, but None when the role has neither keystore nor variable set."""
    if (
        kwargs.get("keystore")
        or getattr(settings, f"{role}_keystore")
        or settings.secret_from_env(getattr(settings, f"{role}_key_env")) is not None
    ):
        return load_key(settings, role, **kwargs)
    return None


def key_address(settings: Settings, role: Role) -> str | None:
    """The address of the role's key, lowercase, without a prompt: its keystore decrypted
    with the password variable when set, else the address the keystore file declares, else
    derived from the hex key variable. None when the role has no key or it cannot be read
    (the command that signs with it says why)."""
    path = getattr(settings, f"{role}_keystore")
    try:
        if path:
            password = settings.secret_from_env(getattr(settings, f"{role}_password_env"))
            if password is not None:
                return load_keystore(path, password.get_secret_value(), role).address.lower()
            declared = json.loads(Path(path).read_text()).get("address")
            if isinstance(declared, str) and len(declared.removeprefix("0x")) == 40:
                return "0x" + declared.removeprefix("0x").lower()
            return None
        secret = settings.secret_from_env(getattr(settings, f"{role}_key_env"))
        return Key.from_hex(secret.get_secret_value(), role).address.lower() if secret else None
    except (KeyUnavailable, OSError, ValueError, AttributeError):
        return None

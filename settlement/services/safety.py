"""Settings that must not reach production: found here, refused at start-up by `serve`,
`submit` and `epochs schedule`, listed by `settlement config check`.

Each finding names the settings and says why; none carries a secret's value.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from settlement.adapters.keys import Role, key_address
from settlement.config import ADMIN_TOKEN_MIN_CHARS, Settings
from settlement.errors import UnsafeSettings

UINT64_MAX = 2**64 - 1


@dataclass(frozen=True)
class Finding:
    """One unsafe setting: `settings` are the W2E_* names to change, `why` the risk.

    `outside_dev` findings are refused whenever dev mode is off; the others only in
    production (W2E_ENV=production)."""

    settings: str
    why: str
    outside_dev: bool = False


def findings(
    settings: Settings, address: Callable[[Settings, Role], str | None] = key_address
) -> list[Finding]:
    """Every unsafe setting of `settings`, whatever the mode (see `refused` for what stops
    a start-up). `address` tells a role's key address (injected by tests)."""
    found: list[Finding] = []
    if settings.env == "production" and settings.dev_mode:
        found.append(
            Finding(
                "W2E_DEV_MODE, W2E_ENV",
                "dev mode allows a zero challenge period and one key for every role; it has "
                "no place in production",
            )
        )
    if settings.challenge_period == 0:
        found.append(
            Finding(
                "W2E_CHALLENGE_PERIOD",
                "is 0: a proposed root is accepted at once, with no time for the guardian to "
                "revoke a wrong one before it can be claimed",
            )
        )
    for name, token in sorted(settings.named_admin_tokens().items()):
        if len(token.get_secret_value()) < ADMIN_TOKEN_MIN_CHARS:
            found.append(
                Finding(
                    "W2E_ADMIN_TOKEN" if name == "admin" else f"W2E_ADMIN_TOKENS[{name!r}]",
                    f"is shorter than {ADMIN_TOKEN_MIN_CHARS} characters: it guards every "
                    "registry change; use a random one (e.g. `openssl rand -hex 16`)",
                    outside_dev=True,
                )
            )
    poster, guardian = address(settings, "poster"), address(settings, "guardian")
    if poster is not None and poster == guardian:
        found.append(
            Finding(
                "W2E_POSTER_KEY_ENV / W2E_POSTER_KEYSTORE, W2E_GUARDIAN_KEY_ENV / "
                "W2E_GUARDIAN_KEYSTORE",
                f"the poster and the guardian are the same account ({poster}): one stolen key "
                "both proposes a wrong root and is the only one that could revoke it",
            )
        )
    for name, value in (
        ("W2E_MAX_BYTES_PER_VIEWER", settings.max_bytes_per_viewer),
        ("W2E_MAX_WATCH_SECONDS_PER_EPOCH", settings.max_watch_seconds_per_epoch),
    ):
        if value >= UINT64_MAX:
            found.append(
                Finding(
                    name,
                    "is unbounded (2**64 - 1): one viewer identity, or a node faking one, "
                    "can draw any share of an epoch's pool; set a cap",
                )
            )
    if not settings.viewer_allowlist:
        # Issue 17, docs/threat-model.md: every per-viewer cap multiplies by the number of
        # viewer keys, and keys are free, so without the allowlist a Sybil's share of the
        # viewer, node and creator pools grows with its keys (measured: sybil_viewers,
        # node_fake_viewers, self_dealing_creator).
        open_mode = settings.registry_mode == "open"
        found.append(
            Finding(
                "W2E_REGISTRY_MODE, W2E_VIEWER_ALLOWLIST" if open_mode else "W2E_VIEWER_ALLOWLIST",
                ("open registry mode and " if open_mode else "")
                + "no viewer allowlist: anyone can invent viewer keys (Sybils) and sign receipts "
                "with them, so one party's share of the viewer pool, and through those viewers "
                "of a node's or a creator's, grows with the keys it makes (every per-viewer cap "
                "multiplies by them); list the viewers your player accounts vouch for "
                "(`settlement registry viewers`) and set W2E_VIEWER_ALLOWLIST=true",
            )
        )
    return found


def refused(settings: Settings, found: list[Finding]) -> list[Finding]:
    """The findings that stop a start-up in the current mode."""
    if settings.env == "production":
        return found
    if settings.dev_mode:
        return []
    return [f for f in found if f.outside_dev]


def refuse_unsafe(settings: Settings, command: str) -> None:
    """Raise UnsafeSettings listing each refused finding, for `command` about to start."""
    stop = refused(settings, findings(settings))
    if stop:
        mode = "production mode" if settings.env == "production" else "outside dev mode"
        lines = "\n".join(f"  - {f.settings}: {f.why}" for f in stop)
        raise UnsafeSettings(
            f"{command} refuses to start {mode} with these settings "
            f"(`settlement config check` lists them):\n{lines}"
        )

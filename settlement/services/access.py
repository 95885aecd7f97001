"""Use cases of access: API keys (create, revoke, list), the admission of a request against
the shared rate windows, and the admin log every admin change goes to."""

from __future__ import annotations

import logging
import secrets
import threading
import time
from typing import Final

from settlement.adapters.db.access import AdminEntry, AdminLogEntry, ApiKeyRow
from settlement.adapters.db.store import Store
from settlement.config import Settings
from settlement.domain import access as domain
from settlement.errors import InputError, NotFound, RateLimited

log = logging.getLogger("settlement.admin")

# Buckets whose tat is this far in the past are deleted (a full bucket is the same as no
# row); each process prunes at most once per interval, so this costs one DELETE a minute.
PRUNE_EVERY: Final = 60.0


def audit(who: str, action: str, detail: str, now: int | None = None) -> AdminEntry:
    """The admin-log entry of a change; the change's own transaction writes it. `detail`
    names what changed; it never carries a token or a key."""
    return AdminEntry(who, action, detail, int(time.time()) if now is None else now)


def logged(entry: AdminEntry) -> None:
    """The log line of a change that was made (the admin_log row is already committed)."""
    log.info("admin change by %s: %s %s", entry.who, entry.action, entry.detail)


# --- api keys -----------------------------------------------------------------------------


def create_key(
    store: Store, name: str, rate: float, burst: int, *, who: str, now: int | None = None
) -> tuple[ApiKeyRow, str]:
    """A new key and its token. Only the token's SHA-256 is stored: show the token once."""
    try:
        domain.check_name(name, "key name")
        domain.check_rate(rate, burst)
    except ValueError as error:
        raise InputError(str(error)) from None
    token = domain.KEY_PREFIX + secrets.token_urlsafe(32)
    entry = audit(who, "key.create", f"{name} rate={rate:g}/s burst={burst}", now)
    row = store.create_api_key(name, domain.token_hash(token), domain.period_us(rate), burst, entry)
    if row is None:
        raise InputError(
            f"a key named {name!r} exists (revoked keys keep their name): pick another"
        )
    logged(entry)
    return row, token


def revoke_key(store: Store, name: str, *, who: str, now: int | None = None) -> None:
    """From now on the key's token counts as no key (its client is limited by address)."""
    entry = audit(who, "key.revoke", name, now)
    if not store.revoke_api_key(name, entry):
        raise NotFound(f"no live key named {name!r}: `settlement keys list` shows them")
    logged(entry)


def keys(store: Store) -> list[ApiKeyRow]:
    return store.api_keys()


def admin_log(store: Store, limit: int = 100) -> list[AdminLogEntry]:
    return store.admin_log(limit)


# --- admission ------------------------------------------------------------------------------


class Admission:
    """Rate limits shared by every worker and instance over one store: a live API key's own
    rate, else the client address's (W2E_RATE_LIMIT, W2E_RATE_BURST). One statement a call."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.enabled = settings.rate_limit > 0
        self.period = domain.period_us(settings.rate_limit) if self.enabled else 0
        self.burst = settings.rate_burst
        self.proxies = domain.parse_networks(settings.trusted_proxies)
        self._next_prune = 0.0
        self._prune_lock = threading.Lock()

    def client(self, peer: str | None, forwarded_for: str | None) -> str:
        """The address bucket of a request from `peer` (X-Forwarded-For only via trusted proxies)."""
        return domain.client_address(peer, forwarded_for, self.proxies)

    def admit(self, api_key: str | None, address: str, now: float) -> None:
        """Count one batch or request; RateLimited (429, Retry-After) when over the rate.

        An unknown, revoked or malformed key counts as no key: the request falls to its
        address's bucket, and the answer is the same as for a keyless client (nothing tells
        which keys exist). Only a live key's own row names a key bucket.
        """
        if not self.enabled:
            return
        key = domain.usable_key(api_key)
        now_us = int(now * 1_000_000)
        taken = self.store.take_rate(
            None if key is None else domain.token_hash(key),
            address,
            self.period,
            self.burst,
            now_us,
        )
        self._maybe_prune(now, now_us)
        if not taken.allowed:
            ahead = max(taken.tat, now_us) + taken.period - now_us
            wait = domain.retry_after(ahead, taken.period, taken.burst)
            rate = 1_000_000 / taken.period
            raise RateLimited(
                f"rate limit of {rate:.4g} batches/s exceeded; retry after {wait} s",
                retry_after=wait,
                bucket_kind="key" if taken.bucket.startswith("key:") else "address",
            )

    def _maybe_prune(self, now: float, now_us: int) -> None:
        if now < self._next_prune or not self._prune_lock.acquire(blocking=False):
            return
        try:
            self._next_prune = now + PRUNE_EVERY
            self.store.prune_rate_windows(now_us)
        finally:
            self._prune_lock.release()

"""The genesis of a service that was given none: pinned by its store at the first start.

Neither W2E_GENESIS nor a deployment record (`settlement deploy`) named a genesis: rather
than a fixed date, which would make the first close catch up every epoch since then (and
carry their pools into a root the distributor cannot cover), epoch 1 starts at the first
start of this store, rounded down to a whole epoch. The store keeps it, so restarts, workers
and other instances on the same database agree.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from settlement.adapters.db.epochs import EpochStore
from settlement.adapters.db.pinned import pin_value, pinned
from settlement.adapters.db.store import Store
from settlement.config import Settings, genesis_from_store, with_genesis
from settlement.errors import ConfigError

log = logging.getLogger(__name__)

GENESIS = "genesis"


def first_genesis(now: int, epoch_seconds: int) -> int:
    """`now` rounded down to a whole epoch: the genesis a fresh store pins."""
    return now - now % epoch_seconds


def pin_genesis(
    settings: Settings,
    store: Store,
    *,
    now: int | None = None,
    say: Callable[[str], None] | None = None,
) -> Settings:
    """`settings` with the store's pinned genesis when none was configured, else as they are.

    `say` hears one line when this call pins it (the store's first start). A store that
    pinned a genesis and closed epochs from it refuses another one (ConfigError).
    """
    if not genesis_from_store(settings):
        earlier = pinned(store, GENESIS)
        if earlier is not None and earlier != settings.genesis and EpochStore(store).last_closed():
            raise ConfigError(
                f"this store closed epochs from the genesis {earlier} it pinned at its first "
                f"start, but W2E_GENESIS or the deployment record {settings.deployment_file} "
                f"now says {settings.genesis}: its epochs would change meaning. Use a fresh "
                f"database for the new deployment, or set W2E_GENESIS={earlier}"
            )
        return settings
    at = int(time.time()) if now is None else now
    genesis, pinned_now = pin_value(store, GENESIS, first_genesis(at, settings.epoch_seconds))
    if pinned_now:
        message = (
            f"genesis {genesis} pinned in the store (no W2E_GENESIS and no deployment record at "
            f"{settings.deployment_file}): epoch 1 starts there"
        )
        log.info("%s", message)
        if say is not None:
            say(message)
    return with_genesis(settings, genesis)

"""What a service says about itself (`GET /v1/info`): the EIP-712 domain receipts are signed
for, the PROTOCOL section 3 parameters they are judged by, and the service's clock."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from typing import Any

from settlement.domain.epochs import EpochClock
from settlement.domain.receipts import Domain, Params
from settlement.errors import SettlementError

INFO_PATH = "/v1/info"

_INT_FIELDS = (
    "chain_id",
    "genesis",
    "epoch_seconds",
    "grace_seconds",
    "now",
    "current_epoch",
    "clock_skew",
    "max_age",
    "max_session_age",
    "segment_seconds",
    "max_bitrate",
    "max_lead_seconds",
    "min_segment_bytes",
    "max_batch",
)


class ServiceInfoError(SettlementError):
    """The service's /v1/info answer is not what this SDK reads (older service or not one)."""


@dataclasses.dataclass(frozen=True)
class ServiceInfo:
    """The body of `GET /v1/info`, plus how far the service's clock is from this machine's.

    `domain` and `params` are what the service verifies with; `clock()` is this machine's
    clock moved to the service's (whole seconds), so receipts signed with it are neither
    ISSUED_IN_FUTURE nor TOO_OLD because of a skewed player clock.
    """

    protocol_version: str
    chain_id: int
    distributor: str  # checksummed
    genesis: int
    epoch_seconds: int
    grace_seconds: int
    now: int  # the service's clock when it answered
    current_epoch: int
    clock_skew: int
    max_age: int
    max_session_age: int
    segment_seconds: int
    max_bitrate: int
    max_lead_seconds: int
    min_segment_bytes: int
    max_batch: int
    registry_mode: str
    viewer_allowlist: bool
    clock_offset: int  # seconds the service's clock is ahead of this machine's (may be < 0)

    @classmethod
    def from_json(cls, doc: Any, received_at: float | None = None) -> ServiceInfo:
        """Read a /v1/info body; `received_at` is this machine's time when it arrived."""
        if not isinstance(doc, Mapping):
            raise ServiceInfoError(f"/v1/info answered {type(doc).__name__}, not an object")
        missing = [name for name in (*_INT_FIELDS, "distributor") if name not in doc]
        if missing:
            raise ServiceInfoError(
                f"/v1/info lacks {', '.join(missing)}: is this a W2E settlement service?"
            )
        for name in _INT_FIELDS:
            value = doc[name]
            if isinstance(value, bool) or not isinstance(value, int):
                raise ServiceInfoError(f"/v1/info field {name} is not an integer: {value!r}")
        arrived = time.time() if received_at is None else received_at
        # `now` is the service's time truncated to a second: +0.5 centres the estimate, so a
        # machine in sync gets offset 0.
        offset = round(doc["now"] + 0.5 - arrived)
        return cls(
            protocol_version=str(doc.get("protocol_version", "")),
            distributor=str(doc["distributor"]),
            registry_mode=str(doc.get("registry_mode", "")),
            viewer_allowlist=bool(doc.get("viewer_allowlist", False)),
            clock_offset=offset,
            **{name: doc[name] for name in _INT_FIELDS},
        )

    @property
    def domain(self) -> Domain:
        """The EIP-712 domain receipts for this service are signed under."""
        return Domain.from_hex(self.chain_id, self.distributor)

    @property
    def params(self) -> Params:
        """The receipt parameters (PROTOCOL section 3) this service judges receipts by."""
        return Params(
            genesis=self.genesis,
            clock_skew=self.clock_skew,
            max_age=self.max_age,
            max_session_age=self.max_session_age,
            segment_seconds=self.segment_seconds,
            max_bitrate=self.max_bitrate,
            max_lead_seconds=self.max_lead_seconds,
            min_segment_bytes=self.min_segment_bytes,
        )

    @property
    def epochs(self) -> EpochClock:
        return EpochClock(self.genesis, self.epoch_seconds, self.grace_seconds)

    def clock(self, local: Callable[[], float] = time.time) -> Callable[[], float]:
        """A clock reading the service's time: this machine's plus `clock_offset`."""
        offset = self.clock_offset
        if offset == 0:
            return local
        return lambda: local() + offset

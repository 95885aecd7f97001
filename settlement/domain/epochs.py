"""Epoch arithmetic of PROTOCOL section 4: bounds, cutoffs and the bucket of a receipt.

Pure integers: `now` and every setting come in as arguments.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class EpochClock:
    """Epoch `e >= 1` covers `[genesis + (e-1)*length, genesis + e*length)` and closes at
    `cutoff(e) = end(e) + grace`; `cutoff(0) = genesis`."""

    genesis: int
    length: int
    grace: int

    @classmethod
    def from_settings(cls, settings: Any) -> EpochClock:
        """The clock of a Settings (genesis, epoch_seconds, grace_seconds)."""
        return cls(settings.genesis, settings.epoch_seconds, settings.grace_seconds)

    def __post_init__(self) -> None:
        if self.length < 1:
            raise ValueError("epoch length must be at least 1 second")
        if self.grace < 0 or self.genesis < 0:
            raise ValueError("genesis and grace must be non-negative")

    def start(self, epoch: int) -> int:
        _check_epoch(epoch)
        return self.genesis + (epoch - 1) * self.length

    def end(self, epoch: int) -> int:
        _check_epoch(epoch)
        return self.genesis + epoch * self.length

    def cutoff(self, epoch: int) -> int:
        if epoch == 0:
            return self.genesis
        return self.end(epoch) + self.grace

    def bucket(self, issued_at: int) -> int:
        """The epoch `e >= 1` with `cutoff(e-1) <= issued_at < cutoff(e)`.

        Receipts issued before genesis are rejected as TOO_OLD before they get here.
        """
        if issued_at < self.genesis:
            raise ValueError(f"issuedAt {issued_at} is before genesis {self.genesis}")
        # cutoff(e) = genesis + e*length + grace for e >= 1; bucket 1 also takes
        # [genesis, genesis + length + grace).
        e = (issued_at - self.genesis - self.grace) // self.length + 1
        return max(e, 1)

    def last_due(self, now: int) -> int:
        """The highest epoch whose cutoff has been reached at `now` (0 when none)."""
        return max((now - self.genesis - self.grace) // self.length, 0)


def _check_epoch(epoch: int) -> None:
    if epoch < 1:
        raise ValueError(f"epochs are numbered from 1, got {epoch}")

"""The watchtower's state as Prometheus metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class WatchMetrics:
    """The watchtower's Prometheus metrics, in a registry of its own (one watchtower a
    process; tests make several)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.seen = Counter(
            "w2e_watchtower_roots_seen", "proposals (roots and corrections) seen", registry=r
        )
        self.audited = Counter(
            "w2e_watchtower_roots_audited", "pending proposals audited", registry=r
        )
        self.failed = Counter(
            "w2e_watchtower_roots_failed", "pending proposals whose audit failed", registry=r
        )
        self.revoked = Counter(
            "w2e_watchtower_roots_revoked",
            "failed proposals revoked by this watchtower",
            registry=r,
        )
        self.paused = Counter(
            "w2e_watchtower_pauses",
            "pauses sent by this watchtower (--pause-on-failure)",
            registry=r,
        )
        self.last_audited_epoch = Gauge(
            "w2e_watchtower_last_audited_epoch", "epoch of the last proposal audited", registry=r
        )
        self.last_audit_seconds = Gauge(
            "w2e_watchtower_last_audit_seconds", "seconds the last audit took", registry=r
        )
        self.window_left = Gauge(
            "w2e_watchtower_window_seconds_left",
            "seconds until the pending root's validAt (chain time; 0: none pending or past)",
            registry=r,
        )
        self.alert = Gauge(
            "w2e_watchtower_alert",
            "1 while a failed root is not stopped: no guardian key, the revoke not sent yet, "
            "or accepted (until a correction is accepted)",
            registry=r,
        )
        self.last_step = Gauge(
            "w2e_watchtower_last_step_timestamp", "unix time of the last completed tick", registry=r
        )

    def value(self, name: str) -> float:
        """A metric's current value by its exposed name (counters: NAME_total)."""
        v = self.registry.get_sample_value(name)
        return 0.0 if v is None else v

"""Posting a generated run to a settlement service: its registries, then its receipts."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from settlement.sim.generate import read_lines


def upload_registries(url: str, path: str | Path, admin_token: str) -> Any:
    """Load a registries.json into a service (POST /v1/admin/registries, one transaction)."""
    import httpx

    from settlement.client.http import SubmitError

    try:
        response = httpx.post(
            url.rstrip("/") + "/v1/admin/registries",
            content=Path(path).read_bytes(),
            headers={"authorization": f"Bearer {admin_token}", "content-type": "application/json"},
            timeout=60.0,
        )
    except httpx.TransportError as error:
        raise SubmitError(f"cannot upload registries to {url}: {error}") from None
    if response.status_code != 200:
        raise SubmitError(
            f"the service refused the registries with HTTP {response.status_code}: "
            f"{response.text[:300]}",
            status=response.status_code,
            body=response.text,
        )
    return response.json()


def post(path: str | Path, client: Any) -> dict[str, int]:
    """Send a receipts file to a service through a SettlementClient; counts by verdict label."""
    counts: Counter[str] = Counter()

    def items() -> Iterator[Any]:
        for part in read_lines(path, client.max_batch):
            yield from part

    for batch in client.submit_iter(items()):
        counts.update(v.label for v in batch.verdicts)
    return dict(sorted(counts.items()))


# --- CLI (registered in settlement/cli/main.py as `settlement simulate`) --------------------


# --- timing a run to a live service (`settlement simulate --url`) ---------------------

# Fewest seconds between the service's genesis and its now for a live run: sessions of a
# few segments and a window to start them in.
MIN_LIVE_SPAN = 120


def live_timeline(info: Any, window: int, now_margin: int) -> tuple[int, int, int]:
    """(start, window, max_session_seconds) that put every receipt of a run between the
    service's genesis and its clock, within max_age: the run's `now` is the service's now.

    `info` is the service's ServiceInfo (GET /v1/info). The window and the sessions are
    shortened when genesis is too recent or max_age too short for them.
    """
    from settlement.errors import InputError
    from settlement.sim.world import MAX_SESSION_SECONDS

    now, genesis = info.now, info.genesis
    since_genesis = now - genesis
    # A margin between the last receipt and the service's now, smaller when genesis is recent.
    margin = max(0, min(now_margin, since_genesis // 4))
    # window + longest session fit after genesis, and within max_age - skew (else TOO_OLD).
    usable = min(since_genesis - margin, info.max_age - info.clock_skew - now_margin)
    if usable < MIN_LIVE_SPAN:
        raise InputError(
            f"the service's genesis is {since_genesis} s before its clock and its max_age "
            f"{info.max_age} s: simulate --url needs at least {MIN_LIVE_SPAN} s in which "
            "receipts are neither before genesis nor TOO_OLD; wait, or simulate --out only"
        )
    session_cap = min(MAX_SESSION_SECONDS, info.max_session_age - now_margin)
    session = max(4 * info.segment_seconds, min(session_cap, usable // 2))
    window = max(1, min(window, usable - session))
    return now - window - session - margin, window, session


def compare(counts: dict[str, int], expected: dict[str, int]) -> dict[str, dict[str, int]]:
    """Labels whose count differs from the expectation: {label: {"expected", "got"}}."""
    return {
        label: {"expected": expected.get(label, 0), "got": counts.get(label, 0)}
        for label in sorted(set(counts) | set(expected))
        if counts.get(label, 0) != expected.get(label, 0)
    }

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

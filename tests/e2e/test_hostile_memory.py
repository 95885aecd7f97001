"""The memory of a real service worker (`settlement serve`, one worker, SQLite) while it
answers 10,000-item batches of garbage again and again (issue 17 item 3): every item is
MALFORMED in place, and the worker's resident set stays within a stated bound."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest
from support.garbage import garbage_batch
from support.server import ServerProcess

# Measured on the 2-core dev machine (SQLite, one worker; RSS summed over the server's
# process group): ~160 MB once warm; +10 MB after 10 more batches, +14 MB after 30, +29 MB
# after 80, the growth flattening to ~0.1 MB a batch (SQLite's page caches and the
# allocator's arenas filling; the rejection log keeps a bounded ring of samples,
# W2E_REJECTION_SAMPLE_*); peak ~200 MB. Bound: growth over 12 batches < 40 MB (about 3x the
# measured 10-13 MB) and peak < 400 MB (2x). A leak that kept the items alive would break it
# at once: one parsed garbage item is over 1 KB in CPython, 12 x 10,000 of them > 120 MB.
BATCHES = 12
GROWTH_BOUND_MB = 40
PEAK_BOUND_MB = 400


@pytest.mark.slow
def test_worker_memory_stays_bounded_under_repeated_garbage_batches(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "W2E_DATABASE_URL": f"sqlite:///{tmp_path}/mem.db",
        "W2E_DATA_DIR": str(tmp_path / "epochs"),
        "W2E_RATE_LIMIT": "0",
    }
    bodies = [garbage_batch(10_000, seed) for seed in range(4)]
    with (
        ServerProcess(env, workers=1, log=tmp_path / "server.log") as server,
        httpx.Client(base_url=server.url, timeout=60) as http,
    ):

        def send(i: int) -> None:
            r = http.post(
                "/v1/receipts",
                content=bodies[i % len(bodies)],
                headers={"content-type": "application/json"},
            )
            assert r.status_code == 200 and r.json()["summary"]["MALFORMED"] == 10_000

        for i in range(2):  # warm: imports, caches, the allocator's arenas
            send(i)
        warm = server.rss_mb()
        for i in range(BATCHES):
            send(i)
        after = server.rss_mb()
        peak = server.peak_rss_mb()
    growth = after - warm
    print(f"worker RSS warm {warm:.1f} MB, after {BATCHES} batches {after:.1f} MB, peak {peak:.1f}")
    assert growth < GROWTH_BOUND_MB, (warm, after)
    assert peak < PEAK_BOUND_MB, peak

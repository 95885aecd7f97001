"""The stateful sequences of tests/vectors/receipts.json hold on both stores.

Each sequence is fed to an empty store in order, one receipt per batch and then all of
them in one batch (the same key twice in a batch must see the earlier one), and every
step must get the verdict the vectors give it (PROTOCOL section 3, checks 5-11).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from storekit import BACKENDS, opened, settings

from settlement.services import ingest as service
from settlement.services import registry as registry_service

VECTORS = json.loads(
    (Path(__file__).resolve().parents[1] / "vectors" / "receipts.json").read_text()
)
SEQUENCES = VECTORS["sequences"]
P = VECTORS["params"]


def _settings(allowlist: bool):
    return settings(
        chain_id=VECTORS["domain"]["chainId"],
        distributor=VECTORS["domain"]["verifyingContract"],
        genesis=P["genesis"],
        clock_skew=P["clockSkew"],
        max_age=P["maxAge"],
        max_session_age=P["maxSessionAge"],
        segment_seconds=P["segmentSeconds"],
        max_bitrate=P["maxBitrate"],
        max_lead_seconds=P["maxLeadSeconds"],
        min_segment_bytes=P["minSegmentBytes"],
        epoch_seconds=VECTORS["epoch"]["epochSeconds"],
        grace_seconds=VECTORS["epoch"]["graceSeconds"],
        viewer_allowlist=allowlist,
    )


def test_the_sequences_cover_every_stateful_verdict():
    seen = {(s["verdict"], s["reason"]) for seq in SEQUENCES for s in seq["steps"]}
    for reason in ("UNKNOWN_NODE", "UNKNOWN_CONTENT", "UNKNOWN_VIEWER", "SELF_DEALING", "CONFLICT"):
        assert ("rejected", reason) in seen
    for verdict in ("accepted", "duplicate", "stale"):
        assert (verdict, None) in seen


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("one_batch", [False, True], ids=["batch-per-receipt", "one-batch"])
@pytest.mark.parametrize("sequence", SEQUENCES, ids=[s["name"] for s in SEQUENCES])
def test_every_step_gets_its_verdict(backend, one_batch, sequence, tmp_path):
    cfg = _settings(sequence["viewerAllowlist"])
    with opened(backend, tmp_path) as store:
        registry_service.load_registries(store, sequence["registries"], settings=cfg)
        ingestor = service.Ingestor(store, cfg)
        wires = [step["wire"] for step in sequence["steps"]]
        if one_batch:
            items = ingestor.ingest(wires, VECTORS["now"]).items
        else:
            items = [ingestor.ingest([w], VECTORS["now"]).items[0] for w in wires]
        got = [(i.verdict, i.reason) for i in items]
        want = [(step["verdict"], step["reason"]) for step in sequence["steps"]]
        assert got == want, [
            s["name"] for s, g, w in zip(sequence["steps"], got, want, strict=True) if g != w
        ]

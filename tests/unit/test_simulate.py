"""Simulator: reproducible bytes, honest sessions that follow the protocol, exact truth.

The stateful expectations (replay -> duplicate, equivocation -> CONFLICT, registry
reasons) are checked against a small reference model of PROTOCOL sections 3-4 written
here, receipt by receipt, so the truth file can be trusted by the ingest tests.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import replace
from pathlib import Path

import orjson
import pytest

from settlement.config import Settings
from settlement.domain.receipts import DeliveryReceipt, MalformedReceipt, Params, Reason
from settlement.domain.wire import parse_wire, verify_wire
from settlement.errors import InputError
from settlement.sim import generate as simulate
from settlement.sim import world
from settlement.sim.generate import SimResult, generate
from settlement.sim.world import BAD_KINDS, HONEST, SimConfig, parse_bad_fractions

SMALL = {"nodes": 20, "viewers": 300, "creators": 30, "contents": 200}
STATELESS_EARLY = {
    Reason.MALFORMED,
    Reason.NON_CANONICAL_SIGNATURE,
    Reason.ISSUED_IN_FUTURE,
    Reason.TOO_OLD,
    Reason.IMPLAUSIBLE,
}


def run(tmp_path: Path, name: str = "out", **kwargs) -> tuple[SimResult, list[bytes], list[str]]:
    cfg = SimConfig(**{**SMALL, "workers": 1, **kwargs})
    result = generate(cfg, tmp_path / name)
    lines = (tmp_path / name / world.RECEIPTS_FILE).read_bytes().splitlines()
    labels = (tmp_path / name / world.LABELS_FILE).read_text().splitlines()
    return result, lines, labels


def files(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


def test_same_seed_same_bytes_whatever_the_workers(tmp_path, monkeypatch):
    monkeypatch.setattr(simulate, "CHUNK_RECEIPTS", 700)  # several chunks in a small run
    bad = dict.fromkeys(BAD_KINDS, 0.01)
    run(tmp_path, "a", seed=11, receipts=2_500, bad=bad)
    run(tmp_path, "b", seed=11, receipts=2_500, bad=bad, workers=2)
    run(tmp_path, "c", seed=12, receipts=2_500, bad=bad)
    a, b, c = (files(tmp_path / n) for n in "abc")
    assert set(a) == {"labels.txt", "receipts.ndjson", "registries.json", "truth.json"}
    assert a == b
    assert a["receipts.ndjson"] != c["receipts.ndjson"]


def test_exact_counts_and_truth(tmp_path):
    bad = dict.fromkeys(BAD_KINDS, 0.01) | {"replay": 0.05, "malformed": 0.0}
    result, lines, labels = run(tmp_path, seed=3, receipts=4_321, bad=bad)
    assert len(lines) == len(labels) == result.receipts == 4_321
    counts = Counter(labels)
    expected = {k: round(f * 4_321) for k, f in bad.items() if round(f * 4_321)}
    assert {k: n for k, n in counts.items() if k != HONEST} == expected
    truth = orjson.loads((tmp_path / "out" / world.TRUTH_FILE).read_bytes())
    assert truth["receipts"] == 4_321 and truth["honest"] == counts[HONEST]
    assert {k: v["count"] for k, v in truth["kinds"].items() if v["count"]} == expected
    assert sum(truth["expected"]["verify"].values()) == 4_321
    assert sum(truth["expected"]["ingest"].values()) == 4_321


def test_sessions_mode(tmp_path):
    result, lines, labels = run(tmp_path, seed=4, sessions=40)
    assert len(lines) == result.receipts > 40
    sessions = {
        (r.viewer, r.session_id)
        for line, label in zip(lines, labels, strict=True)
        if label == HONEST
        for r in [parse_wire(line)]
    }
    assert len(sessions) == 40


def test_honest_sessions_are_cumulative_and_consistent(tmp_path):
    cfg = SimConfig(**SMALL, workers=1, seed=5, receipts=3_000, bad={})
    generate(cfg, tmp_path)
    registries = orjson.loads((tmp_path / world.REGISTRIES_FILE).read_bytes())
    nodes = {bytes.fromhex(n["address"][2:]) for n in registries["nodes"]}
    creator_of = {
        bytes.fromhex(c["contentId"][2:]): bytes.fromhex(c["creator"][2:])
        for c in registries["content"]
    }
    viewers = {bytes.fromhex(v[2:]) for v in registries["viewers"]}
    assert len(nodes) == 20 and len(creator_of) == 200
    assert set(creator_of.values()) <= viewers  # creators are listed as viewers too

    last: dict[tuple, tuple] = {}
    session_of: dict[tuple, tuple] = {}
    kinds = Counter()
    for line in (tmp_path / world.RECEIPTS_FILE).read_bytes().splitlines():
        assert verify_wire(line, cfg.domain, cfg.params, cfg.now).accepted
        r = parse_wire(line)
        assert r.viewer in viewers and r.viewer != creator_of[r.content_id]
        session = (r.viewer, r.session_id)
        assert session_of.setdefault(session, (r.content_id, r.started_at)) == (
            r.content_id,
            r.started_at,
        )
        if isinstance(r, DeliveryReceipt):
            assert r.node in nodes and r.node != r.viewer
            key, counters = (*session, r.node), (r.bytes_served, r.segments_served)
        else:
            key, counters = session, (r.watch_seconds,)
        kinds[type(r).__name__] += 1
        if key in last:
            before_issued, before = last[key]
            # Re-signed totals: every counter at least as high, one strictly higher.
            assert r.issued_at > before_issued
            assert all(a >= b for a, b in zip(counters, before, strict=True)) and counters != before
        last[key] = (r.issued_at, counters)
    assert kinds["DeliveryReceipt"] > 0 and kinds["ViewReceipt"] > 0
    # Sessions re-sign many times and some fetch from more than one node.
    assert len(last) < 3_000 / 3
    per_session = Counter(k[:2] for k in last if len(k) == 3)
    assert max(per_session.values()) > 1


def reference_ingest(lines, registries, cfg: SimConfig, settings: Settings) -> list[str]:
    """PROTOCOL sections 3-4 on one store, in arrival order: the label of each verdict."""
    nodes = {n["address"] for n in registries["nodes"] if n["active"]}
    creator_of = {c["contentId"]: c["creator"] for c in registries["content"]}
    genesis, length, grace = cfg.params.genesis, settings.epoch_seconds, settings.grace_seconds

    def bucket(issued: int) -> int:
        return 1 if issued < genesis + length + grace else (issued - genesis - grace) // length + 1

    best: dict[tuple, dict[int, tuple]] = defaultdict(dict)
    sessions: dict[tuple, tuple] = {}
    quarantined: set[tuple] = set()
    out = []
    for line in lines:
        verdict = verify_wire(line, cfg.domain, cfg.params, cfg.now)
        if not verdict.accepted and verdict.reason in STATELESS_EARLY:
            out.append(verdict.reason.value)
            continue
        r = parse_wire(line)
        node = "0x" + r.node.hex() if isinstance(r, DeliveryReceipt) else None
        viewer, content = "0x" + r.viewer.hex(), "0x" + r.content_id.hex()
        if node is not None and node not in nodes:
            out.append("UNKNOWN_NODE")
        elif content not in creator_of:
            out.append("UNKNOWN_CONTENT")
        elif viewer in (node, creator_of[content]):
            out.append("SELF_DEALING")
        elif not verdict.accepted:
            out.append(verdict.reason.value)  # SIGNER_MISMATCH
        else:
            session = (viewer, r.session_id)
            key = (*session, node)
            counters = (
                (r.bytes_served, r.segments_served) if node is not None else (r.watch_seconds,)
            )
            crossing = any(
                any(a > b for a, b in zip(counters, c, strict=True))
                and any(a < b for a, b in zip(counters, c, strict=True))
                for c in best[key].values()
            )
            seen = sessions.get(session)
            if session in quarantined or crossing or seen not in (None, (content, r.started_at)):
                quarantined.add(session)
                out.append("CONFLICT")
                continue
            here = best[key].get(bucket(r.issued_at))
            if here == counters:
                out.append("duplicate")
            elif here is not None and all(a <= b for a, b in zip(counters, here, strict=True)):
                out.append("stale")
            else:
                best[key][bucket(r.issued_at)] = counters
                sessions[session] = (content, r.started_at)
                out.append("accepted")
    return out


def test_every_receipt_gets_the_verdict_its_label_promises(tmp_path):
    bad = dict.fromkeys(BAD_KINDS, 0.02)
    result, lines, labels = run(tmp_path, seed=6, receipts=3_000, bad=bad)
    cfg = SimConfig(**SMALL, seed=6, receipts=3_000, bad=bad)
    registries = orjson.loads((tmp_path / "out" / world.REGISTRIES_FILE).read_bytes())
    got = reference_ingest(lines, registries, cfg, Settings())
    want = ["accepted" if label == HONEST else BAD_KINDS[label].reason for label in labels]
    mismatches = [
        (i, labels[i], w, g) for i, (w, g) in enumerate(zip(want, got, strict=True)) if w != g
    ]
    assert mismatches == []
    assert dict(sorted(Counter(got).items())) == result.truth["expected"]["ingest"]
    # Stateless view (`receipts verify`): the stateful kinds pass, the others are rejected.
    stateless = [
        "accepted" if v.accepted else v.reason.value
        for v in (verify_wire(line, cfg.domain, cfg.params, cfg.now) for line in lines)
    ]
    assert dict(sorted(Counter(stateless).items())) == result.truth["expected"]["verify"]


def test_malformed_lines_really_are_malformed(tmp_path):
    _, lines, labels = run(tmp_path, seed=8, receipts=1_500, bad={"malformed": 0.3, "high_s": 0.1})
    malformed = [line for line, label in zip(lines, labels, strict=True) if label == "malformed"]
    assert len(malformed) == 450
    for line in malformed:
        with pytest.raises(MalformedReceipt):
            parse_wire(line)


def test_bad_fraction_options():
    assert parse_bad_fractions([]) == dict.fromkeys(BAD_KINDS, world.DEFAULT_BAD_FRACTION)
    f = parse_bad_fractions(["0", "replay=0.1", "all=0.01", "forged=0.05"])
    assert f["forged"] == 0.05 and f["replay"] == 0.01
    for bad in (["nonsense=0.1"], ["replay=lots"]):
        with pytest.raises(InputError):
            parse_bad_fractions(bad)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"receipts": 10, "sessions": 10},
        {"receipts": 10, "bad": dict.fromkeys(BAD_KINDS, 0.05)},
        {"receipts": 10, "viewers": 0},
        {"receipts": 10, "window": 30 * 24 * 3600},
        {"receipts": 10, "start": 0},
        # above the smallest honest segment (160,000 bytes): honest players would fail row 4
        {"receipts": 10, "params": replace(Params.defaults(), min_segment_bytes=160_001)},
    ],
)
def test_impossible_configurations_are_refused(kwargs, tmp_path):
    with pytest.raises(InputError):
        generate(SimConfig(**kwargs), tmp_path)


@pytest.mark.parametrize(
    "changes",
    [
        {"max_lead_seconds": 0},  # no buffer at all: players fetch one segment ahead only
        {"max_lead_seconds": 5},
        {"min_segment_bytes": 160_000},  # exactly the smallest honest segment
    ],
)
def test_honest_players_stay_plausible_under_tighter_row_4_parameters(changes, tmp_path):
    params = replace(Params.defaults(), **changes)
    cfg = SimConfig(**{**SMALL, "workers": 1}, receipts=3_000, params=params, bad={})
    generate(cfg, tmp_path)
    lines = (tmp_path / world.RECEIPTS_FILE).read_bytes().splitlines()
    verdicts = Counter(
        "accepted" if v.accepted else v.reason.value
        for v in (verify_wire(line, cfg.domain, params, cfg.now) for line in lines)
    )
    assert verdicts == {"accepted": 3_000}

"""The watchtower's decisions on the embedded chain (py-evm), fast: a dataset it cannot read
is retried, then failed near the window's end; without a guardian key it only alerts; a
failed root accepted while it was audited is paused; revoked proposals do not count
against the one pending."""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from test_submitter_anvil import HOUR, Net, make_net

from settlement.adapters import chain as c
from settlement.domain.merkle import MerkleTree
from settlement.errors import ChainError, DataUnavailable
from settlement.services.audit import open_source
from settlement.services.published import epoch_data_uri
from settlement.services.submit import epoch_dump_path
from settlement.services.watchtower import (
    FullAudit,
    Proposal,
    Verdict,
    WatchMetrics,
    Watchtower,
    _as_proposed,
    chained,
    manifest_audit,
)


@pytest.fixture
def net(tmp_path: Path) -> Iterator[Net]:
    n = make_net(tmp_path, "", funded_epochs=5)
    try:
        yield n
    finally:
        n.store.close()


def _propose(n: Net, epoch: int, uri: str, extra: int = 0) -> str:
    """The poster proposes epoch's true tree (plus `extra` base units to an attacker)."""
    stored = n.submitter().epochs.get(epoch)
    assert stored is not None
    values = {}
    if extra:
        values[c.Key.generate("attacker").address.lower()] = extra
    dump = epoch_dump_path(n.settings, stored.manifest)
    assert dump is not None
    values.update(dict(MerkleTree.load(Path(dump).read_bytes()).values))
    tree = MerkleTree.of(sorted(values.items()))
    n.chain.transact(
        n.poster,
        n.distributor.propose_root(
            epoch, tree.root, tree.cumulative_total, "0x" + stored.data_hash.hex(), uri
        ),
    )
    return tree.root


def _tower(n: Net, audit=None, **kwargs) -> Watchtower:  # type: ignore[no-untyped-def]
    return Watchtower(
        n.distributor,
        audit or chained(manifest_audit()),
        from_block=n.deployment.block,
        metrics=WatchMetrics(),
        **kwargs,
    )


def test_unreadable_dataset_is_retried_then_failed_before_valid_at(net: Net) -> None:
    n, d = net, net.distributor
    n.close(1)
    _propose(n, 1, "http://127.0.0.1:9/epoch-00000001/manifest.json")  # nothing listens
    tower = _tower(n, guardian=n.guardian, unavailable_margin=120)
    assert tower.step() == [] and tower.step() == []  # retried, no verdict
    assert tower.metrics.value("w2e_watchtower_roots_audited_total") == 0
    assert d.pending_root() is not None
    n.chain.increase_time(HOUR - 100)  # 100 s left: inside the margin
    (action,) = tower.step()
    assert action.did == "revoked" and "dataset unavailable" in action.verdict.summary
    assert d.pending_root() is None


def test_chain_unreadable_during_the_audit_is_retried_not_revoked(net: Net) -> None:
    """The RPC failing while the full audit reads events is no verdict on the root: tried
    again while there is time, and the good root is left alone once the chain answers."""
    n, d = net, net.distributor
    n.close(1)
    _propose(n, 1, "http://127.0.0.1:9/epoch-00000001/manifest.json")
    calls = []

    def flaky(p):  # type: ignore[no-untyped-def]
        calls.append(p)
        if len(calls) <= 2:
            raise ChainError("cannot reach the RPC at http://127.0.0.1:9: connection refused")
        return Verdict(True, "ok")

    tower = _tower(n, audit=flaky, guardian=n.guardian, unavailable_margin=120)
    assert tower.step() == [] and tower.step() == []  # retried, no verdict, nothing revoked
    assert tower.metrics.value("w2e_watchtower_roots_failed_total") == 0
    assert d.pending_root() is not None
    (action,) = tower.step()
    assert action.did == "left" and action.verdict.ok
    assert d.pending_root() is not None and len(calls) == 3


def test_without_a_guardian_key_it_alerts(net: Net) -> None:
    n, d = net, net.distributor
    n.close(1)
    bad = _propose(n, 1, epoch_data_uri(n.settings, 1), extra=10**18)
    tower = _tower(n)
    (action,) = tower.step()
    assert action.did == "alert" and "no guardian key" in action.message
    assert tower.metrics.value("w2e_watchtower_alert") == 1
    assert tower.metrics.value("w2e_watchtower_roots_failed_total") == 1
    p = d.pending_root()
    assert p is not None and p.root == bad  # nobody stopped it
    assert tower.step() == [] and tower.metrics.value("w2e_watchtower_alert") == 1
    n.chain.transact(n.guardian, d.revoke_root())  # a guardian elsewhere acts on the alert
    assert tower.step() == [] and tower.metrics.value("w2e_watchtower_alert") == 0


def test_failed_root_accepted_while_audited_is_paused(net: Net) -> None:
    n, d = net, net.distributor
    n.close(1)
    bad = _propose(n, 1, epoch_data_uri(n.settings, 1), extra=10**18)

    def slow_audit(p: Proposal) -> Verdict:
        # The audit outlasts the window: someone accepts the root meanwhile.
        n.chain.increase_time(HOUR)
        n.chain.transact(n.relayer, d.accept_root())
        return Verdict(False, "root: manifest differs")

    tower = _tower(n, slow_audit, guardian=n.guardian, pause_on_failure=True)
    (action,) = tower.step()
    assert action.did == "alert" and "no longer pending" in action.message
    assert d.root() == bad and d.paused()
    assert tower.metrics.value("w2e_watchtower_pauses_total") == 1
    assert tower.metrics.value("w2e_watchtower_roots_revoked_total") == 0


def test_chain_as_proposed_drops_revoked_proposals(net: Net) -> None:
    n, d = net, net.distributor
    n.close(1)
    uri = epoch_data_uri(n.settings, 1)
    _propose(n, 1, uri, extra=5)
    n.chain.transact(n.guardian, d.revoke_root())
    _propose(n, 1, uri)
    events = c.read_events(d, n.deployment.block)
    proposals = [Proposal.of(e) for e in events if e.name == "RootProposed"]
    assert len(proposals) == 2
    kept = _as_proposed(events, proposals[1])
    assert [e.name for e in kept if e.name in ("RootProposed", "RootRevoked")] == ["RootProposed"]
    assert Proposal.of(next(e for e in kept if e.name == "RootProposed")) == proposals[1]


class _Flaky(SimpleHTTPRequestHandler):
    """Serves the manifests, and the data files as `mode[0]` says: "ok", "503" (a busy
    server), "drop" (the connection closed before any answer) or "cut" (a body cut short
    of its Content-Length): the network failing after the manifest was read."""

    def __init__(self, *args: Any, mode: list[str], **kwargs: Any) -> None:
        self.mode = mode
        super().__init__(*args, **kwargs)

    def do_GET(self) -> None:
        mode = self.mode[0]
        if self.path.endswith("/manifest.json") or mode == "ok":
            super().do_GET()
        elif mode == "503":
            self.send_error(503, "busy")
        elif mode == "drop":
            self.close_connection = True
        else:
            self.send_response(200)
            self.send_header("Content-Length", "1000000")
            self.end_headers()
            self.wfile.write(b'{"partial": ')
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_network_failing_during_the_full_audit_is_retried_not_revoked(net: Net) -> None:
    """A good root whose data files cannot be downloaded for a while (503, a dropped
    connection, a truncated body) is audited again at each tick, and left once they can."""
    n, d = net, net.distributor
    n.close(1)
    mode = ["503"]
    handler = functools.partial(_Flaky, mode=mode, directory=str(n.settings.data_dir))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        good = _propose(n, 1, f"{base}/epoch-00000001/manifest.json")
        # Not a verdict on the data: DataUnavailable, while a 404 stays "not published".
        source = open_source(base)
        with pytest.raises(DataUnavailable, match="HTTP 503"):
            source.fetch("epoch-00000001/anything.ndjson")
        mode[0] = "ok"
        assert source.fetch("epoch-00000001/anything.ndjson") is None
        full = FullAudit(d, from_block=n.deployment.block)
        tower = _tower(
            n, chained(manifest_audit(), full), guardian=n.guardian, unavailable_margin=120
        )
        for failure in ("503", "drop", "cut"):
            mode[0] = failure
            assert tower.step() == [], failure  # retried: no verdict, nothing revoked
            p = d.pending_root()
            assert p is not None and p.root == good, failure
        assert tower.metrics.value("w2e_watchtower_roots_failed_total") == 0
        assert tower.metrics.value("w2e_watchtower_roots_audited_total") == 0
        mode[0] = "ok"
        (action,) = tower.step()
        assert action.did == "left" and action.verdict.ok, action.verdict.summary
        assert tower.metrics.value("w2e_watchtower_roots_revoked_total") == 0
        p = d.pending_root()
        assert p is not None and p.root == good
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_verdicts_are_recorded_for_the_explorer(net: Net) -> None:
    """serve's watchtower keeps each completed audit in the store: clean for the true root,
    FAILED with its first mismatch for a bad one (which it still revokes)."""
    from settlement.adapters.db.verdicts import verdicts_for
    from settlement.cli.serve import StoreRecorder

    n, d = net, net.distributor
    recorder = StoreRecorder(n.settings.database_url)
    full = FullAudit(d, from_block=n.deployment.block, data=str(n.settings.data_dir))
    tower = _tower(n, chained(manifest_audit(), full), guardian=n.guardian, recorder=recorder)
    try:
        n.close(1)
        bad = _propose(n, 1, epoch_data_uri(n.settings, 1), extra=10**18)
        (action,) = tower.step()
        assert action.did == "revoked"
        good = _propose(n, 1, epoch_data_uri(n.settings, 1))
        (action,) = tower.step()
        assert action.did == "left" and action.verdict.ok, action.verdict.summary
        kept = {v.root: v for v in verdicts_for(n.store, [1])[1]}
        assert set(kept) == {bad.lower(), good.lower()}
        failed, clean = kept[bad.lower()], kept[good.lower()]
        assert not failed.ok and failed.mismatches >= 1 and failed.kind == "epoch"
        assert "root" in failed.first_mismatch and failed.source == "watchtower"
        assert clean.ok and clean.mismatches == 0 and clean.first_mismatch == ""
        assert clean.audited_at > 0 and clean.epoch == 1
    finally:
        if recorder.store is not None:
            recorder.store.close()


def test_a_store_that_fails_does_not_stop_the_watchtower(
    net: Net, caplog: pytest.LogCaptureFixture
) -> None:
    n, d = net, net.distributor
    n.close(1)
    _propose(n, 1, epoch_data_uri(n.settings, 1), extra=10**18)

    def broken(p: Proposal, verdict: Verdict) -> None:
        raise RuntimeError("database down")  # any error: logged, the tower goes on

    tower = _tower(n, guardian=n.guardian, recorder=broken)
    (action,) = tower.step()
    assert action.did == "revoked" and d.pending_root() is None
    assert any("could not record the verdict" in r.getMessage() for r in caplog.records)

"""Registries, the rejection log and retention in the store, on SQLite and PostgreSQL, through
the same service functions as ingest (PROTOCOL 3, registry and retention)."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import pytest
from storekit import (
    EPOCH,
    GENESIS,
    GRACE,
    NOW,
    World,
    ingest,
    key,
    reset,
    settings,
    verdicts,
    wire,
)

from settlement.adapters.db.registry import RegisteredNode
from settlement.adapters.db.rejections import UNREGISTERED_NODE, RejectionKey
from settlement.adapters.db.tables import TABLE_NAMES
from settlement.domain.epochs import EpochClock
from settlement.domain.receipts import (
    Domain,
    address_of,
)
from settlement.errors import NotFound, RegistryError
from settlement.services import ingest as service
from settlement.services import registry as registry_service

UINT64_MAX = 2**64 - 1
CLOCK = EpochClock(GENESIS, EPOCH, GRACE)
B1 = GENESIS + 100  # issuedAt in bucket 1
B2 = GENESIS + EPOCH + GRACE + 100  # issuedAt in bucket 2


def test_registry_gate(store, world):
    sid = key("gate")
    unknown_node = world.delivery(sid, 10, 1, B1, node=key("nobody")[:20])
    unknown_content = world.view(key("gate2"), 4, B1, content=key("nothing"))
    creator_watching = world.view(key("gate3"), 4, B1, viewer_key=world.creator_key)
    ok = world.view(key("gate4"), 4, B1)
    result = ingest(store, wire(unknown_node, unknown_content, creator_watching, ok))
    assert verdicts(result) == ["UNKNOWN_NODE", "UNKNOWN_CONTENT", "SELF_DEALING", "accepted"]
    # Registry checks come before the signature: a forged receipt for an unknown node is
    # UNKNOWN_NODE, not SIGNER_MISMATCH.
    forged = replace(unknown_node, signature=world.delivery(sid, 11, 1, B1).signature)
    assert verdicts(ingest(store, wire(forged))) == ["UNKNOWN_NODE"]
    # Inactive node, then active again: the ingestor notices each registry change.
    ingestor = service.Ingestor(store, settings())
    registry_service.set_node_active(store, world.node2, False)
    r = world.delivery(key("gate5"), 10, 1, B1, node=world.node2)
    [v] = ingestor.ingest(wire(r), NOW).items
    assert (v.reason, "inactive" in v.detail) == ("UNKNOWN_NODE", True)
    registry_service.set_node_active(store, world.node2, True)
    assert verdicts(ingestor.ingest(wire(r), NOW)) == ["accepted"]


def test_viewer_allowlist(store, world):
    r = world.view(key("allow"), 4, B1)
    assert verdicts(ingest(store, wire(r), viewer_allowlist=True)) == ["UNKNOWN_VIEWER"]
    registry_service.add_viewer(store, world.viewer)
    assert verdicts(ingest(store, wire(r), viewer_allowlist=True)) == ["accepted"]
    registry_service.remove_viewer(store, world.viewer)
    r2 = world.view(key("allow2"), 4, B1)
    assert verdicts(ingest(store, wire(r2), viewer_allowlist=True)) == ["UNKNOWN_VIEWER"]
    assert verdicts(ingest(store, wire(r2), viewer_allowlist=False)) == ["accepted"]


def test_registries_refuse_unpayable_addresses_and_unknown_entries(store):
    s = settings()
    with pytest.raises(RegistryError, match="zero address"):
        registry_service.register_node(store, bytes(20), "zero")
    with pytest.raises(RegistryError, match="RewardDistributor"):
        registry_service.add_content(store, key("c"), s.distributor, settings=s)
    with pytest.raises(RegistryError, match="label"):
        registry_service.register_node(store, key("n")[:20], " padded ")
    with pytest.raises(NotFound):
        registry_service.set_node_active(store, key("n")[:20], False)
    with pytest.raises(NotFound):
        registry_service.remove_content(store, key("c"))
    node = registry_service.register_node(store, "0x" + key("n")[:20].hex(), "n")
    assert store.nodes() == [RegisteredNode(address=node, label="n", active=True)]
    rows = {t.table: t.rows for t in store.row_counts()}
    assert rows["registry_node"] == 1 and list(rows) == list(TABLE_NAMES)


def test_rejection_log_counts_everything_and_samples_within_caps(store, world):
    cap, per_batch, max_bytes = 5, 3, 100
    opts = {
        "rejection_sample_cap": cap,
        "rejection_sample_per_batch": per_batch,
        "rejection_sample_bytes": max_bytes,
    }
    garbage = [{"kind": "delivery", "junk": "x" * 500}] * 20
    for _ in range(4):
        ingest(store, garbage, **opts)
    unknown = world.delivery(key("u"), 10, 1, B1, node=key("nobody")[:20])
    ingest(store, wire(unknown, unknown), **opts)
    counts = store.rejection_counts()
    assert counts[RejectionKey(reason="MALFORMED", node=b"", epoch=0)] == 80
    # An unregistered node is counted in one aggregate row, not a row of its own (issue 15).
    assert counts[("UNKNOWN_NODE", UNREGISTERED_NODE, 1)] == 2
    assert not any(k.node == unknown.node for k in counts)
    samples = store.rejection_samples()
    by_reason = Counter(s.reason for s in samples)
    assert by_reason == {"MALFORMED": cap, "UNKNOWN_NODE": 2}
    assert all(len(s.raw.encode()) <= max_bytes for s in samples)
    assert sorted(s.slot for s in samples if s.reason == "MALFORMED") == list(range(cap))
    # Stateful outcomes are counted too (by node and bucket), so an operator sees why.
    sid = key("logged")
    r = world.delivery(sid, 10, 1, B1)
    ingest(store, wire(r, r, world.delivery(sid, 5, 1, B1 + 1)), **opts)
    counts = store.rejection_counts()
    assert counts[("duplicate", world.node, 1)] == 1
    assert counts[("stale", world.node, 1)] == 1


def test_retention_prunes_only_sessions_no_receipt_can_reach(store, world):
    s = settings()
    old, recent, quarantined = key("old"), key("recent"), key("q")
    ingest(store, wire(world.delivery(old, 10, 1, B1)))
    ingest(store, wire(world.delivery(recent, 10, 1, B2, started=B2 - 10)))
    ingest(store, wire(world.delivery(quarantined, 10, 1, B1)))
    conflict_at = NOW
    result = ingest(store, wire(world.view(quarantined, 4, B1 + 1, content=world.content2)))
    assert verdicts(result) == ["CONFLICT"]
    expiry = GENESIS + 10 + s.max_session_age + s.max_age  # startedAt + both ages
    # Not yet expired: nothing goes, whatever is closed.
    assert service.prune_sessions(store, s, expiry, last_closed_epoch=100) == 0
    # Expired, but bucket 1 not closed: nothing goes.
    assert service.prune_sessions(store, s, expiry + 1, last_closed_epoch=0) == 0
    # Bucket 1 closed, but the conflict was stored after cutoff(1): the quarantined
    # session stays until a close after it has published the evidence.
    assert conflict_at >= CLOCK.cutoff(1)
    # Nor before a close has read them: their touches are still there.
    assert service.prune_sessions(store, s, expiry + 1, last_closed_epoch=1) == 0
    consume_touches(store, 1)  # as the close of epoch 1 does
    assert service.prune_sessions(store, s, expiry + 1, last_closed_epoch=1) == 1
    assert store.session(world.viewer, old) is None
    assert store.session(world.viewer, quarantined) is not None
    assert store.session(world.viewer, recent) is not None  # touched bucket 2
    late = 1 + (conflict_at - GENESIS) // EPOCH
    consume_touches(store, late)
    assert service.prune_sessions(store, s, expiry + 2 * EPOCH, last_closed_epoch=late) == 2
    assert store.quarantined() == []
    assert store.best_receipts() == []


def test_retention_waits_while_a_close_holds_the_close_lock(store, world):
    from settlement.adapters.db.epochs import EpochStore

    s = settings()
    old = key("old-locked")
    ingest(store, wire(world.delivery(old, 10, 1, B1)))
    consume_touches(store, 1)
    expiry = GENESIS + 10 + s.max_session_age + s.max_age
    epochs = EpochStore(store)
    with epochs.connection() as conn, epochs.close_lock(conn) as got:
        assert got
        assert service.prune_sessions(store, s, expiry + 1, last_closed_epoch=1) == 0
        assert store.session(world.viewer, old) is not None
    assert service.prune_sessions(store, s, expiry + 1, last_closed_epoch=1) == 1


def test_retention_waits_for_a_batch_in_flight_and_keeps_its_session(stores):
    """PostgreSQL: a batch of an expired session still in flight (its session locked, its
    touch not committed) makes prune wait, and once it commits the session stays for the
    close that has yet to read it."""
    import threading

    store = stores("postgresql")
    reset(store)
    world = World()
    world.register(store)
    s = settings()
    old = key("old-in-flight")
    ingest(store, wire(world.delivery(old, 10, 1, B1)))
    consume_touches(store, 1)
    expiry = GENESIS + 10 + s.max_session_age + s.max_age
    batch = store.engine.raw_connection()  # what an ingest batch does, held open
    try:
        cur = batch.cursor()
        cur.execute(
            "SELECT 1 FROM receipt_session WHERE viewer = %s AND session_id = %s FOR UPDATE",
            (world.viewer, old),
        )
        cur.execute(
            "INSERT INTO session_touch (viewer, session_id, bucket) VALUES (%s, %s, 1)",
            (world.viewer, old),
        )
        pruned: list[int] = []
        worker = threading.Thread(
            target=lambda: pruned.append(
                service.prune_sessions(store, s, expiry + 1, last_closed_epoch=1)
            )
        )
        worker.start()
        worker.join(timeout=1.0)
        assert worker.is_alive(), "prune must wait for the batch's lock"
        batch.commit()
        worker.join(timeout=30)
        assert pruned == [0]
    finally:
        batch.close()
    assert store.session(world.viewer, old) is not None
    assert len(store.best_receipts()) == 1
    consume_touches(store, 1)  # the next close reads it; then it may go
    assert service.prune_sessions(store, s, expiry + 1, last_closed_epoch=1) == 1


def consume_touches(store, epoch: int) -> None:
    """What the close of `epoch` does to session_touch (epoch_db.SetClose.write_watermarks)."""

    def fn(cur):
        cur.execute(
            "DELETE FROM session_touch WHERE bucket <= "
            + ("?" if store.dialect == "sqlite" else "%s"),
            (epoch,),
        )

    store._run(fn)


def test_node_registration_requests(store):
    from settlement.domain.registration import (
        NodeRegistrationRequest,
        sign_registration,
    )
    from settlement.domain.registration import (
        to_wire as reg_wire,
    )
    from settlement.errors import InvalidRegistration

    s = settings()
    domain = Domain.from_hex(s.chain_id, s.distributor)
    node_key = key("operator")
    node = address_of(node_key)
    req = sign_registration(NodeRegistrationRequest(node, "edge-1", NOW), domain, node_key)
    reg = registry_service.request_node_registration(store, s, reg_wire(req), NOW)
    assert reg.status == "pending" and store.nodes() == []
    reg = registry_service.approve_node_registration(store, reg.id, NOW + 1)
    assert (reg.status, reg.decided_at) == ("approved", NOW + 1)
    assert store.nodes() == [(node, "edge-1", True)]
    with pytest.raises(RegistryError, match="already approved"):
        registry_service.reject_node_registration(store, reg.id, NOW + 2)
    # Sent again while the node is active under that label: the approved request answers,
    # nothing is filed.
    again, created = registry_service.file_node_registration(store, s, reg_wire(req), NOW + 5)
    assert (again.id, again.status, created) == (reg.id, "approved", False)
    assert len(store.registrations()) == 1
    # A replayed request cannot come back to re-activate a deactivated node.
    registry_service.set_node_active(store, node, False)
    with pytest.raises(InvalidRegistration, match="later issuedAt") as refused:
        registry_service.request_node_registration(store, s, reg_wire(req), NOW + 5)
    assert f"request {reg.id}, is approved and an admin deactivated the node" in str(refused.value)
    assert store.nodes() == [(node, "edge-1", False)] and len(store.registrations()) == 1
    registry_service.set_node_active(store, node, True)
    # Open mode approves at once; a request signed by another key is refused.
    req2 = sign_registration(NodeRegistrationRequest(node, "edge-1b", NOW + 10), domain, node_key)
    reg2 = registry_service.request_node_registration(
        store, settings(registry_mode="open"), req2, NOW + 10
    )
    assert reg2.status == "approved" and store.nodes() == [(node, "edge-1b", True)]
    forged = sign_registration(NodeRegistrationRequest(node, "x", NOW + 20), domain, key("other"))
    with pytest.raises(
        InvalidRegistration, match=r"is not the node 0x[0-9a-f]{40}'s under this service's"
    ):
        registry_service.request_node_registration(store, s, forged, NOW + 20)
    stale = sign_registration(NodeRegistrationRequest(node, "x", NOW - 10**6), domain, node_key)
    with pytest.raises(InvalidRegistration, match="older"):
        registry_service.request_node_registration(store, s, stale, NOW)
    with pytest.raises(NotFound):
        registry_service.approve_node_registration(store, 999, NOW)
    assert [r.status for r in store.registrations()] == ["approved", "approved"]

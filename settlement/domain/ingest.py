"""The stateful half of PROTOCOL section 3: the registry gate (checks 5-6) and the batch
verdicts (8-11) on session state. Pure: the store loads the state and writes it back.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson

from settlement.domain.receipts import (
    ACCEPTED,
    Accepted,
    DeliveryReceipt,
    Gate,
    Reason,
    Receipt,
    Rejected,
    ViewReceipt,
)
from settlement.domain.wire import to_wire

__all__ = [
    "DUPLICATE",
    "STALE",
    "BatchState",
    "Best",
    "Decide",
    "DeliveryKey",
    "Duplicate",
    "RegistrySnapshot",
    "SessionKey",
    "SessionState",
    "Stale",
    "StatefulVerdict",
    "Survivor",
    "decide_batch",
    "evidence_json",
    "registry_gate",
]


# --- verdict values -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Duplicate:
    """Same counters as the stored best receipt of its key and bucket: nothing new."""

    accepted = False  # class attributes, as Accepted / Rejected have them
    verdict = "duplicate"


@dataclass(frozen=True, slots=True)
class Stale:
    """Counters below the stored best receipt of its key and bucket: superseded."""

    accepted = False
    verdict = "stale"


# One instance each (as receipts.ACCEPTED): the batch loop allocates nothing per verdict.
DUPLICATE: Final = Duplicate()
STALE: Final = Stale()
StatefulVerdict = Accepted | Duplicate | Stale | Rejected


# --- the state a batch decides on -----------------------------------------------------


class SessionState:
    """A locked session row as the verdict rules see and change it during one batch."""

    __slots__ = ("content_id", "dirty", "last_bucket", "new", "quarantined_at", "started_at")

    def __init__(
        self,
        content_id: bytes,
        started_at: int,
        last_bucket: int,
        quarantined_at: int | None,
        new: bool,
    ) -> None:
        self.content_id = content_id
        self.started_at = started_at
        self.last_bucket = last_bucket
        self.quarantined_at = quarantined_at
        self.new = new  # to INSERT at the end of the batch
        self.dirty = False  # to UPDATE at the end of the batch


# Best receipt of one key in one bucket: (counter1, counter2, issued_at, signature);
# delivery: (bytes_served, segments_served, ...), view: (watch_seconds, 0, ...).
# Plain tuples, not dataclasses: the store builds one per row it reads on the ingest hot
# path (>= 20,000 receipts/s on PostgreSQL) and tuples cost a third of a dataclass.
Best = tuple[int, int, int, bytes]
SessionKey = tuple[bytes, bytes]  # (viewer, session_id)
DeliveryKey = tuple[bytes, bytes, bytes]  # (viewer, session_id, node)


@dataclass(slots=True)
class BatchState:
    """Everything stored about a batch's sessions, and what the rules changed in it.

    `delivery[key][bucket]` / `view[skey][bucket]` hold the best receipts; the rules put
    the (key, bucket) pairs they changed into `delivery_dirty` / `view_dirty` and append
    quarantine evidence rows to `quarantines`.
    """

    sessions: dict[SessionKey, SessionState]
    delivery: dict[DeliveryKey, dict[int, Best]]
    view: dict[SessionKey, dict[int, Best]]
    delivery_dirty: set[tuple[DeliveryKey, int]]
    view_dirty: set[tuple[SessionKey, int]]
    quarantines: list[tuple[bytes, bytes, int, str, str | None, str]]


# (index, receipt, bucket) of a receipt that passed every stateless and registry check.
Survivor = tuple[int, Receipt, int]
# The rules: (survivors, state, now) -> one verdict per survivor, in order.
Decide = Callable[[Sequence[Survivor], BatchState, int], list[StatefulVerdict]]


def evidence_json(receipt: Receipt) -> str:
    """A receipt as quarantine evidence: its wire object as compact JSON."""
    return orjson.dumps(to_wire(receipt)).decode()


# --- verdicts 8-11 --------------------------------------------------------------------


def _stored_receipt(key: tuple[bytes, ...], session: SessionState, best: Best) -> Receipt:
    c1, c2, issued, sig = best
    if len(key) == 3:
        viewer, sid, node = key
        return DeliveryReceipt(
            sid, viewer, node, session.content_id, session.started_at, c1, c2, issued, sig
        )
    viewer, sid = key
    return ViewReceipt(sid, viewer, session.content_id, session.started_at, c1, issued, sig)


def _any_stored(state: BatchState, skey: SessionKey, session: SessionState) -> Receipt | None:
    """A stored receipt of the session (the lowest key and bucket: deterministic evidence)."""
    found: list[tuple[tuple[bytes, ...], int, Best]] = []
    for key, per_bucket in state.delivery.items():
        if key[0] == skey[0] and key[1] == skey[1]:
            found.extend((key, b, best) for b, best in per_bucket.items())
    for b, best in state.view.get(skey, {}).items():
        found.append((skey, b, best))
    if not found:
        return None
    lowest, _, best = min(found, key=lambda x: (len(x[0]) == 2, x[0], x[1]))
    return _stored_receipt(lowest, session, best)


def decide_batch(
    survivors: Sequence[Survivor], state: BatchState, now: int
) -> list[StatefulVerdict]:
    """Verdicts 8-11 of PROTOCOL section 3 for each survivor, in batch order.

    `state` holds the batch's locked sessions and their best receipts per key and bucket;
    each decision updates it, so a later receipt of the same key sees an earlier one.
    """
    out: list[StatefulVerdict] = []
    sessions = state.sessions
    for _, r, bucket in survivors:
        skey = (r.viewer, r.session_id)
        session = sessions[skey]
        if session.quarantined_at is not None:
            out.append(Rejected(Reason.CONFLICT, "the session is quarantined"))
            continue
        if type(r) is DeliveryReceipt:
            key: tuple[bytes, ...] = (r.viewer, r.session_id, r.node)
            table: dict[Any, dict[int, Best]] = state.delivery
            dirty: set[Any] = state.delivery_dirty
            c1, c2 = r.bytes_served, r.segments_served
        else:
            key = skey
            table = state.view
            dirty = state.view_dirty
            c1, c2 = r.watch_seconds, 0  # type: ignore[union-attr]  # a ViewReceipt here
        per_bucket = table.get(key)
        detail = None
        evidence: Receipt | None = None
        if r.content_id != session.content_id or r.started_at != session.started_at:
            field = "contentId" if r.content_id != session.content_id else "startedAt"
            detail = f"{field} differs from the session's stored receipts"
            evidence = _any_stored(state, skey, session)
        elif per_bucket:
            for b in sorted(per_bucket):
                s1, s2 = per_bucket[b][0], per_bucket[b][1]
                if (c1 > s1 and c2 < s2) or (c1 < s1 and c2 > s2):
                    detail = f"counters cross the stored best receipt of bucket {b}"
                    evidence = _stored_receipt(key, session, per_bucket[b])
                    break
        if detail is not None:
            session.quarantined_at = now
            session.dirty = True
            state.quarantines.append(
                (
                    r.viewer,
                    r.session_id,
                    now,
                    detail,
                    None if evidence is None else evidence_json(evidence),
                    evidence_json(r),
                )
            )
            out.append(Rejected(Reason.CONFLICT, detail))
            continue
        best = per_bucket.get(bucket) if per_bucket else None
        verdict: StatefulVerdict
        if best is None:
            verdict, store = ACCEPTED, True
        elif c1 == best[0] and c2 == best[1]:
            # Equal counters: keep the earliest issuedAt, then the lowest signature, so
            # the stored receipt never depends on arrival order.
            verdict = DUPLICATE
            store = (r.issued_at, r.signature) < (best[2], best[3])
        elif c1 >= best[0] and c2 >= best[1]:
            verdict, store = ACCEPTED, True
        else:
            verdict, store = STALE, False
        if store:
            if per_bucket is None:
                per_bucket = table[key] = {}
            per_bucket[bucket] = (c1, c2, r.issued_at, r.signature)
            dirty.add((key, bucket))
            if bucket > session.last_bucket:
                session.last_bucket = bucket
                session.dirty = True
        out.append(verdict)
    return out


# --- the registry gate (checks 5 and 6) ------------------------------------------------


@dataclass(frozen=True, slots=True)
class RegistrySnapshot:
    """The registries at one registry version, as the gate reads them."""

    version: int
    nodes: dict[bytes, tuple[str, bool]]  # address -> (label, active)
    content: dict[bytes, bytes]  # content id -> creator
    viewers: frozenset[bytes]


def registry_gate(snapshot: RegistrySnapshot, allowlist: bool) -> Gate:
    """Checks 5 (UNKNOWN_NODE, UNKNOWN_CONTENT, UNKNOWN_VIEWER) and the creator half of 6
    (SELF_DEALING) on `snapshot`, as the gate verify() runs after check 4."""
    nodes = {a: active for a, (_, active) in snapshot.nodes.items()}
    content = snapshot.content
    viewers = snapshot.viewers

    # A closure over plain dicts: it runs once per receipt, before the signature.
    def gate(viewer: bytes, node: bytes | None, content_id: bytes) -> Rejected | None:
        if node is not None:
            active = nodes.get(node)
            if not active:
                why = "not registered" if active is None else "inactive"
                return Rejected(Reason.UNKNOWN_NODE, f"node 0x{node.hex()} is {why}")
        creator = content.get(content_id)
        if creator is None:
            return Rejected(
                Reason.UNKNOWN_CONTENT, f"content 0x{content_id.hex()} is not registered"
            )
        if allowlist and viewer not in viewers:
            return Rejected(
                Reason.UNKNOWN_VIEWER, f"viewer 0x{viewer.hex()} is not in the allowlist"
            )
        if creator == viewer:
            return Rejected(Reason.SELF_DEALING, "the viewer is the content's creator")
        return None

    return gate

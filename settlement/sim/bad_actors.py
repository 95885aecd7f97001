"""Bad actors: receipts derived from a chunk's honest ones (forged, replayed, inflated,
...), each of a kind whose expected verdict the truth file states."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import coincurve
import orjson

from settlement.domain.receipts import (
    SECP256K1_N,
    UINT32_MAX,
    DeliveryReceipt,
    ViewReceipt,
)
from settlement.domain.wire import dumps_wire, to_wire
from settlement.sim.sessions import HonestChunk, HonestReceipt, signing_key, worker_state
from settlement.sim.world import BAD_KINDS


class Chunk(HonestChunk):
    """Generates one chunk: honest sessions first, then bad actors derived from them."""

    def bad_actors(self, counts: Mapping[str, int]) -> None:
        for kind in BAD_KINDS:  # fixed order: reproducible
            n = counts.get(kind, 0)
            if n <= 0:
                continue
            if kind == "self_dealing_creator":
                self._creator_sessions(n)
                continue
            pool = (
                self.honest_delivery
                if kind in ("inflated", "self_node", "unknown_node", "padded_segments")
                else self.honest
            )
            if not pool:
                continue  # nothing honest to derive from: the truth file counts what was made
            make = getattr(self, "_" + kind)
            for _ in range(n):
                make(pool[self.rng.randrange(len(pool))])

    def _forged(self, base: HonestReceipt) -> None:
        attacker = coincurve.PrivateKey(self.rng.randbytes(32))
        r = base.receipt
        line = dumps_wire(self._signed(r, attacker))
        self._emit_bad("forged", r.issued_at, base.seq, line)

    def _wrong_domain(self, base: HonestReceipt) -> None:
        domain = worker_state["wrong_domains"][self.rng.randrange(2)]
        r = base.receipt
        line = dumps_wire(self._signed(r, base.session.key, domain))
        self._emit_bad("wrong_domain", r.issued_at, base.seq, line)

    def _high_s(self, base: HonestReceipt) -> None:
        r = base.receipt
        sig = r.signature
        s = SECP256K1_N - int.from_bytes(sig[32:64], "big")
        w = to_wire(r)
        w["signature"] = "0x" + (sig[:32] + s.to_bytes(32, "big") + bytes((55 - sig[64],))).hex()
        self._emit_bad("high_s", r.issued_at, base.seq, orjson.dumps(w))

    def _malformed(self, base: HonestReceipt) -> None:
        r = base.receipt
        w = to_wire(r)
        rng = self.rng
        ints = ["startedAt", "issuedAt", "bytesServed" if "node" in w else "watchSeconds"]
        hexes = ["sessionId", "viewer", "contentId", "signature"] + (
            ["node"] if "node" in w else []
        )
        variant = rng.randrange(13)
        f = rng.choice(ints)
        h = rng.choice(hexes)
        if variant == 0:
            del w[rng.choice(list(w))]
        elif variant == 1:
            w[rng.choice(("extra", "epoch", "Viewer", "watch_seconds"))] = 1
        elif variant == 2:
            w[f] = float(w[f]) + 0.5
        elif variant == 3:
            w[f] = -1 - w[f]
        elif variant == 4:
            w[f] = rng.choice((True, False))
        elif variant == 5:
            w[f] = None
        elif variant == 6:
            w[f] = "0" + str(w[f])  # leading zero
        elif variant == 7:
            small = "segmentsServed" if "node" in w else "watchSeconds"
            w[small] = 2**32 + w[small]  # uint32 overflow
        elif variant == 12:
            w[f] = str(2**64 + rng.randrange(2**32))  # uint64 overflow, as a digit string
        elif variant == 8:
            w[h] = w[h][:-2]  # one byte short
        elif variant == 9:
            w[h] = "0x" + "zz" + w[h][4:]
        elif variant == 10:
            w[h] = w[h][2:]  # no 0x
        else:
            w["kind"] = rng.choice(("download", "views", "", "DELIVERY"))
        self._emit_bad("malformed", r.issued_at, base.seq, orjson.dumps(w))

    def _implausible(self, base: HonestReceipt) -> None:
        r = base.receipt
        rng = self.rng
        elapsed = r.issued_at - r.started_at + self.params.segment_seconds
        if rng.randrange(4) == 0:
            # Started after it was issued; issuedAt unchanged keeps it inside the time window.
            bad = _replace_started(r, r.issued_at + 1 + rng.randrange(600))
        elif type(r) is DeliveryReceipt:
            bad = DeliveryReceipt(
                r.session_id,
                r.viewer,
                r.node,
                r.content_id,
                r.started_at,
                self._limit(elapsed) + 1 + rng.randrange(1 << 24),
                r.segments_served,
                r.issued_at,
            )
        else:
            bad = ViewReceipt(
                r.session_id,
                r.viewer,
                r.content_id,
                r.started_at,
                elapsed + 1 + rng.randrange(3600),
                r.issued_at,
            )
        line = dumps_wire(self._signed(bad, base.session.key))
        self._emit_bad("implausible", r.issued_at, base.seq, line)

    def _padded_segments(self, base: HonestReceipt) -> None:
        # A viewer lifting its watch clip (min(watch, segment_seconds * segments)) with
        # segments nobody served: more than elapsed time plus the lead allows, or more than
        # its bytes can fill at min_segment_bytes each. Within max_bitrate, signed by the viewer.
        r = base.receipt
        rng = self.rng
        p = self.params
        elapsed = r.issued_at - r.started_at + p.segment_seconds
        most = min((elapsed + p.max_lead_seconds) // p.segment_seconds, UINT32_MAX)
        variant = rng.randrange(3)
        if variant == 0 and most < UINT32_MAX:
            segments = most + 1 + rng.randrange(min(UINT32_MAX - most, 1 << 16))
            amount = r.bytes_served
        elif variant == 1 and p.min_segment_bytes > 0 and r.segments_served > 0:
            segments = r.segments_served
            floor = p.min_segment_bytes * segments
            amount = floor - 1 - rng.randrange(min(floor, 1 << 20))
        else:  # PROTOCOL 8: all the segments a uint32 holds, no bytes
            segments, amount = UINT32_MAX, 0
        bad = replace(r, bytes_served=amount, segments_served=segments)
        line = dumps_wire(self._signed(bad, base.session.key))
        self._emit_bad("padded_segments", r.issued_at, base.seq, line)

    def _inflated(self, base: HonestReceipt) -> None:
        # The node raises the viewer's totals and keeps the viewer's signature.
        r = base.receipt
        w = to_wire(r)
        room = (
            self._limit(r.issued_at - r.started_at + self.params.segment_seconds) - r.bytes_served
        )
        if room > 0:
            w["bytesServed"] = (
                r.bytes_served + 1 + self.rng.randrange(min(room, r.bytes_served + 1))
            )
        else:
            w["segmentsServed"] = r.segments_served + 1
        self._emit_bad("inflated", r.issued_at, base.seq, orjson.dumps(w))

    def _self_node(self, base: HonestReceipt) -> None:
        r = base.receipt
        i = self.rng.randrange(len(self.world.nodes))
        me = self.world.nodes[i]
        receipt = DeliveryReceipt(
            self.rng.randbytes(32),
            me,
            me,
            r.content_id,
            r.started_at,
            r.bytes_served,
            r.segments_served,
            r.issued_at,
        )
        line = dumps_wire(self._signed(receipt, signing_key("node", i)))
        self._emit_bad("self_node", r.issued_at, base.seq, line)

    def _replay(self, base: HonestReceipt) -> None:
        # Right behind the original (same issuedAt, next sub-position): it meets the
        # original as its bucket's best and is a duplicate, exactly.
        self._emit_bad("replay", base.receipt.issued_at, base.seq, base.line)

    def _equivocation(self, base: HonestReceipt) -> None:
        # After every honest receipt of the session, so nothing honest meets the quarantine.
        sess = base.session
        rng = self.rng
        sess.equivocations += 1
        issued = sess.last_issued + sess.equivocations
        elapsed = issued - sess.started_at + self.params.segment_seconds
        node, best = next(iter(sess.deliveries.items()), (None, None))
        crossing = best is not None and best.segments_served > 0 and rng.randrange(2) == 0
        room = self._limit(elapsed) - best.bytes_served if best is not None else 0
        if crossing and room > 0:
            receipt: Any = DeliveryReceipt(
                sess.session_id,
                sess.viewer,
                node,
                best.content_id,
                sess.started_at,
                best.bytes_served + 1 + rng.randrange(min(room, 1 << 20)),
                best.segments_served - 1,
                issued,
            )
        else:
            other = (
                (sess.content + 1 + rng.randrange(len(self.world.contents) - 1))
                % len(self.world.contents)
                if len(self.world.contents) > 1
                else None
            )
            if other is None:
                return  # one title only: nothing to equivocate about
            watch = sess.view.watch_seconds if sess.view is not None else 0
            receipt = ViewReceipt(
                sess.session_id,
                sess.viewer,
                self.world.contents[other],
                sess.started_at,
                min(watch, elapsed),
                issued,
            )
        line = dumps_wire(self._signed(receipt, sess.key))
        self._emit_bad("equivocation", issued, sess.last_seq, line)

    def _unknown_node(self, base: HonestReceipt) -> None:
        r = base.receipt
        receipt = DeliveryReceipt(
            r.session_id,
            r.viewer,
            self.rng.randbytes(20),
            r.content_id,
            r.started_at,
            r.bytes_served,
            r.segments_served,
            r.issued_at,
        )
        line = dumps_wire(self._signed(receipt, base.session.key))
        self._emit_bad("unknown_node", r.issued_at, base.seq, line)

    def _unknown_content(self, base: HonestReceipt) -> None:
        r = base.receipt
        sid, content = self.rng.randbytes(32), self.rng.randbytes(32)
        if type(r) is DeliveryReceipt:
            receipt: Any = DeliveryReceipt(
                sid,
                r.viewer,
                r.node,
                content,
                r.started_at,
                r.bytes_served,
                r.segments_served,
                r.issued_at,
            )
        else:
            receipt = ViewReceipt(
                sid, r.viewer, content, r.started_at, r.watch_seconds, r.issued_at
            )
        line = dumps_wire(self._signed(receipt, base.session.key))
        self._emit_bad("unknown_content", r.issued_at, base.seq, line)

    def _creator_sessions(self, n: int) -> None:
        made = 0
        while made < n:
            content = self._pick_content()
            k = self.world.content_creator[content]
            made += self.session(
                signing_key("creator", k),
                self.world.creators[k],
                content,
                n - made,
                "self_dealing_creator",
            )


def _replace_started(r: Any, started: int) -> Any:
    if type(r) is DeliveryReceipt:
        return DeliveryReceipt(
            r.session_id,
            r.viewer,
            r.node,
            r.content_id,
            started,
            r.bytes_served,
            r.segments_served,
            r.issued_at,
        )
    return ViewReceipt(r.session_id, r.viewer, r.content_id, started, r.watch_seconds, r.issued_at)

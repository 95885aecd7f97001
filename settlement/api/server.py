"""uvicorn's h11 protocol with a deadline on each request head, for `settlement serve`.

uvicorn has none: its keep-alive timer stops at the first byte of the next request, and
a new connection has no timer at all, so a client that sends part of a request line and
stalls holds a connection (and a place under W2E_LIMIT_CONCURRENCY) for ever. Here a
connection that has not finished a request head within W2E_HEAD_TIMEOUT of connecting,
or of its previous answer, is closed. That covers a refused body too: after a 413 the
server discards the rest of the body, and a client trickling it is cut off the same way.
"""

from __future__ import annotations

import asyncio
from typing import Any

# uvicorn's own h11 protocol: the subclass only adds a timer around its request heads.
from uvicorn.protocols.http.h11_impl import H11Protocol

from settlement.config import load_settings

# `settlement serve` names this class to uvicorn by import path; each worker process reads
# the timeout from the same W2E_* settings on its first connection.
_head_timeout: float | None = None


def _timeout() -> float:
    global _head_timeout
    if _head_timeout is None:
        _head_timeout = load_settings().head_timeout
    return _head_timeout


class H11WithHeadTimeout(H11Protocol):
    """H11Protocol that closes a connection whose next request head is late."""

    _head_timer: asyncio.TimerHandle | None = None
    _waiting_since_cycle: Any = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # may start a pipelined request (handle_events)
        if self.cycle is None or self.cycle.response_complete:
            self._arm()

    def handle_events(self) -> None:
        super().handle_events()
        if self._head_timer is not None and self.cycle is not self._waiting_since_cycle:
            self._disarm()  # a new request's head arrived: the app's body deadline takes over

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        if self.transport.is_closing():
            return
        self._waiting_since_cycle = self.cycle
        self._head_timer = self.loop.call_later(_timeout(), self._late)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _late(self) -> None:
        self._head_timer = None
        if self.cycle is self._waiting_since_cycle and not self.transport.is_closing():
            self.transport.close()

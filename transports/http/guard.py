"""Limits on the HTTP listener's connections: a cap, a header deadline, quiet error logs.

Theory of operation
-------------------
aiohttp waits for a request's headers as long as the client cares to dribble them, and accepts
every connection the kernel hands it; 1,100 slow sockets exhaust a daemon's open files. The guard
sits between the listening socket and aiohttp's protocol: :class:`GuardedRunner` is an
``AppRunner`` whose protocol factory wraps each connection in a :class:`_GuardedProtocol`.

- **cap**: past ``max_connections`` open connections, the one idle longest (no request running,
  none for ``EVICT_IDLE`` seconds) is closed to make room (counted in ``evicted``, and in
  ``timed_out``: it closed for idling, early), so a client
  that holds many silent sockets cannot keep a health check out; with none idle that long, the
  new one is aborted at once (counted in ``refused``);
- **header deadline**: a connection must have a request running (its headers parsed) within
  ``header_timeout`` of opening, and again within ``header_timeout`` after each answer; else it
  is aborted (counted in ``timed_out``). The app's middleware (:meth:`ConnectionGuard.middleware`)
  tells the guard when a request starts and ends;
- body reads are bounded by the transport (``asyncio.timeout`` around the read);
- aiohttp's own error log goes through :class:`RateLimitFilter`: at most ``burst`` records per
  ``period``, then one line saying how many were suppressed.

With TLS the listener listens on plain TCP and the guard holds a :class:`~transports.tls_door.
TlsDoor`, so the cap is applied at accept, before the TLS handshake: a socket past it is reset
with nothing read or written (:class:`~transports.tls_door.Dropped`), and an admitted one holds
its place (``entering``) through its handshake, which must end within ``header_timeout``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Final, cast

from aiohttp import web

from gravpy.transport_kit import RateLimitFilter
from transports.tls_door import Dropped, TlsDoor

__all__ = ["EVICT_IDLE", "ConnectionGuard", "GuardedRunner", "RateLimitFilter"]

EVICT_IDLE: Final = 1.0  # seconds a connection must have been idle before a newcomer evicts it


class _GuardedProtocol(asyncio.Protocol):
    """aiohttp's protocol for one connection, behind the guard's cap and deadline."""

    def __init__(self, inner: asyncio.Protocol, guard: ConnectionGuard) -> None:
        self.inner, self.guard = inner, guard
        self.transport: asyncio.Transport | None = None
        self.admitted = False
        self.reserved = False  # its place was taken at accept, before its TLS handshake
        self.deadline: asyncio.TimerHandle | None = None
        self.idle_since = 0.0  # loop time its header deadline was last armed (no request since)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a stream transport; not always an asyncio.Transport subclass (uvloop's TCPTransport)
        self.transport = cast(asyncio.Transport, transport)
        if not self.guard.admit(self):
            self.transport.abort()
            return
        self.admitted = True
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self.admitted:
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.admitted else None

    def pause_writing(self) -> None:
        if self.admitted:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.admitted:
            self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.admitted:
            self.guard.release(self)
            self.inner.connection_lost(exc)

    def arm(self, seconds: float) -> None:
        self.disarm()
        loop = asyncio.get_running_loop()
        self.idle_since = loop.time()
        self.deadline = loop.call_later(seconds, self._expire)

    def disarm(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None

    def _expire(self) -> None:
        self.deadline = None
        self.guard.timed_out += 1
        if self.transport is not None:
            self.transport.abort()


class ConnectionGuard:
    """Counts open connections and runs each one's header deadline."""

    def __init__(
        self, max_connections: int, header_timeout: float, door: TlsDoor | None = None
    ) -> None:
        self.max_connections = max_connections
        self.header_timeout = header_timeout
        self.door = door  # with TLS: the handshakes run after the cap admitted the socket
        self.refused = 0
        self.evicted = 0  # idle connections closed to make room (counted in timed_out too)
        self.entering = 0  # admitted at accept, TLS handshake in progress
        self.timed_out = 0
        self._open: dict[asyncio.BaseTransport, _GuardedProtocol] = {}
        self._busy: dict[asyncio.BaseTransport, int] = {}

    @property
    def open(self) -> int:
        return len(self._open)

    def protocol(self, inner: asyncio.Protocol) -> asyncio.BaseProtocol:
        """What asyncio gets for an accepted socket whose aiohttp protocol is ``inner``."""
        conn = _GuardedProtocol(inner, self)
        if self.door is None:
            return conn  # admitted or refused in connection_made
        if len(self._open) + self.entering >= self.max_connections and not self._evict():
            self.refused += 1
            return Dropped()
        self.entering += 1
        conn.reserved = True
        return self.door.entrance(conn, self._not_entered)

    def _not_entered(self) -> None:
        self.entering -= 1

    def admit(self, conn: _GuardedProtocol) -> bool:
        if conn.reserved:  # TLS is up: the place taken at accept becomes an open connection
            self.entering -= 1
        elif len(self._open) >= self.max_connections and not self._evict():
            self.refused += 1
            return False
        assert conn.transport is not None
        self._open[conn.transport] = conn
        conn.arm(self.header_timeout)
        return True

    def _evict(self) -> bool:
        """Close the connection idle longest, if one has been idle ``EVICT_IDLE`` seconds (no
        request running); True if one was. Only when full: a look at each open connection."""
        cutoff = asyncio.get_running_loop().time() - EVICT_IDLE
        oldest: _GuardedProtocol | None = None
        for transport, conn in self._open.items():
            idle = conn.idle_since <= cutoff and not self._busy.get(transport)
            if idle and (oldest is None or conn.idle_since < oldest.idle_since):
                oldest = conn
        if oldest is None or oldest.transport is None:
            return False
        self.evicted += 1
        self.timed_out += 1  # (closed for idling: early, as the cap was reached)
        self.release(oldest)  # its place is free now; connection_lost follows
        oldest.transport.abort()
        return True

    def release(self, conn: _GuardedProtocol) -> None:
        conn.disarm()
        if conn.transport is not None:
            self._open.pop(conn.transport, None)
            self._busy.pop(conn.transport, None)

    @web.middleware
    async def middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """Around each request: no header deadline while it runs; a fresh one after it."""
        transport = request.transport
        conn = self._open.get(transport) if transport is not None else None
        if conn is None or transport is None:
            return await handler(request)
        self._busy[transport] = self._busy.get(transport, 0) + 1
        conn.disarm()
        try:
            return await handler(request)
        finally:
            left = self._busy.get(transport, 1) - 1
            self._busy[transport] = left
            if left <= 0 and transport in self._open:
                conn.arm(self.header_timeout)


class GuardedRunner(web.AppRunner):
    """An ``AppRunner`` whose connections pass through ``guard``."""

    def __init__(self, app: web.Application, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.guard = guard

    @property
    def server(self) -> Any:
        inner = super().server
        if inner is None:
            return None
        guard = self.guard
        return lambda: guard.protocol(inner())

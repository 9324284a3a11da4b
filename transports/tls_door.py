"""TLS after the cap: a listener runs the TLS handshake only for sockets its cap admitted.

Theory of operation
-------------------
Given ``ssl=``, asyncio's ``create_server`` runs every accepted socket's TLS handshake before the
listener's protocol sees the connection, so a cap checked in the protocol is applied only after
a handshake (about a millisecond of CPU per socket) that a refused socket did not need: a TLS
flood cost gravd a handshake per connection even past its cap. A listener with a ``TlsDoor``
listens on plain TCP instead and decides at accept, as without TLS:

- a refused socket gets :class:`Dropped`: it is reset at once, with nothing read and nothing
  written (no 503: the client speaks TLS, and no TLS has been negotiated);
- an admitted one gets an :class:`Entrance` around the listener's own protocol. The entrance
  pauses reading and runs ``loop.start_tls`` (server side, the door's handshake deadline) in a
  task the door owns. When the handshake completes, the listener's protocol is moved onto the
  TLS transport (``set_protocol``) and told ``connection_made``; bytes or an EOF that arrived
  between the handshake's end and that moment (``start_tls`` reads on before its caller
  resumes) are then replayed to it, in order.

A handshake that fails, times out, or whose socket is dropped (:meth:`Entrance.drop`, the
listener's eviction) is counted in ``failed``; one that fails or times out is also logged
(``tls_handshake_failed``, a few lines per burst: :class:`TlsFailures`). The listener learns of
it through the ``on_failure`` it gave, and its protocol never sees the connection. ``close``
cancels the handshakes in progress and resets every socket that arrives after it.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from typing import Any, cast

from gravpy import _log as logs
from gravpy.transport_kit import RateLimitFilter
from transports._addresses import format_address

__all__ = ["Dropped", "Entrance", "TlsDoor", "TlsFailures", "TurnedAway"]

_log = logs.get_logger("gravpy.transports.tls")
logging.getLogger("gravpy.transports.tls").addFilter(RateLimitFilter())  # a flood: a few lines


class TlsFailures:
    """The failed TLS handshakes of one listener: all counted, a few logged per burst (a client
    speaking plain text to a TLS port, a certificate the client does not trust, a deadline)."""

    def __init__(self, transport: str) -> None:
        self.transport = transport
        self.count = 0

    def failed(self, peer: object, error: str) -> None:
        self.count += 1
        shown = format_address(peer)  # ("host:port", where asyncio gives a tuple)
        _log.info("tls_handshake_failed", transport=self.transport, peer=shown, error=error)


def _nothing() -> None:
    return None


class TlsDoor:
    """The TLS handshakes of one listener: started for admitted sockets, owned until done."""

    def __init__(
        self,
        context: ssl.SSLContext,
        handshake_timeout: float,
        shutdown_timeout: float,
        failures: TlsFailures | None = None,
    ) -> None:
        self.context = context
        self.failures = failures if failures is not None else TlsFailures("tls")
        self.handshake_timeout = handshake_timeout
        self.shutdown_timeout = shutdown_timeout
        self.failed = 0  # handshakes that failed, timed out, or whose socket was dropped
        self.closed = False
        self._tasks: set[asyncio.Task[Any]] = set()

    def entrance(
        self, inner: asyncio.Protocol, on_failure: Callable[[], None] = _nothing
    ) -> Entrance:
        """The protocol to give asyncio for an admitted socket whose protocol is ``inner``."""
        return Entrance(self, inner, on_failure)

    def start(self, entrance: Entrance, raw: asyncio.Transport) -> None:
        """Run ``raw``'s TLS handshake (server side) in a task this door owns."""
        task = asyncio.get_running_loop().create_task(self._handshake(entrance, raw))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handshake(self, entrance: Entrance, raw: asyncio.Transport) -> None:
        loop = asyncio.get_running_loop()
        handshake = loop.create_task(
            loop.start_tls(
                raw,
                entrance,
                self.context,
                server_side=True,
                ssl_handshake_timeout=self.handshake_timeout,
                ssl_shutdown_timeout=self.shutdown_timeout,
            )
        )
        self._tasks.add(handshake)  # owned too: ``close`` cancels and awaits it
        handshake.add_done_callback(self._tasks.discard)
        try:
            await entrance.hand_over_early_bytes(raw, handshake)
            tls = await handshake
        except asyncio.CancelledError:
            _discard(handshake)
            raw.abort()
            entrance.fail()
            raise
        except Exception as exc:  # a bad handshake, a reset, the deadline: the client's fault
            _discard(handshake)
            peer = raw.get_extra_info("peername")
            raw.abort()
            self.failed += 1
            self.failures.failed(peer, repr(exc))
            entrance.fail()
            return
        if tls is None or entrance.lost:  # closed between the handshake's end and now
            self.failed += 1
            entrance.fail()
            return
        entrance.open(tls)

    async def close(self) -> None:
        """Cancel the handshakes in progress; sockets accepted from now on are reset."""
        self.closed = True
        while self._tasks:
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


class Entrance(asyncio.Protocol):
    """An admitted socket during its TLS handshake; hands the connection to ``inner`` after it."""

    def __init__(self, door: TlsDoor, inner: asyncio.Protocol, on_failure: Callable[[], None]):
        self._door, self._inner, self._on_failure = door, inner, on_failure
        self._raw: asyncio.Transport | None = None
        self._early: list[bytes] = []  # read before start_tls took the socket (TLS records)
        self._late: list[bytes] = []  # decrypted after the handshake, before ``inner`` took over
        self._wrapped = False  # start_tls took the socket: what arrives now is decrypted
        self._eof = False
        self._dropped = False
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        raw = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        if self._dropped or self._door.closed:
            raw.abort()
            self.fail()
            return
        self._raw = raw
        raw.pause_reading()  # asyncio reads nothing more; uvloop starts reading after this call
        self._door.start(self, raw)

    def data_received(self, data: bytes) -> None:
        (self._late if self._wrapped else self._early).append(data)

    def eof_received(self) -> None:
        self._eof = self._wrapped

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True

    async def hand_over_early_bytes(
        self, raw: asyncio.Transport, handshake: asyncio.Future[asyncio.Transport | None]
    ) -> None:
        """Once ``start_tls`` has put its TLS protocol on ``raw`` (its first step, which runs
        before this task's next one), give it the bytes read before then (uvloop starts reading
        an accepted socket right after ``connection_made``): it keeps them for the handshake."""
        await asyncio.sleep(0)  # start_tls's first step, scheduled before this one, runs
        if raw.get_protocol() is self or self.lost:
            raise ConnectionResetError("the socket closed before its TLS handshake began")
        self._wrapped = True
        tls_protocol = raw.get_protocol()
        for data in self._early:
            _feed(tls_protocol, data)
        self._early.clear()

    def drop(self) -> None:
        """Reset the socket now (or as soon as it is made): the handshake will not complete."""
        self._dropped = True
        if self._raw is not None:
            self._raw.abort()

    def fail(self) -> None:
        """The handshake did not complete: tell the listener, once."""
        on_failure, self._on_failure = self._on_failure, _nothing
        on_failure()

    def open(self, tls: asyncio.Transport) -> None:
        """The handshake completed: ``inner`` takes the TLS transport, then what came early."""
        inner = self._inner
        tls.set_protocol(inner)
        inner.connection_made(tls)
        for data in self._late:
            inner.data_received(data)
        if self._eof:
            inner.eof_received()
        self._late.clear()


def _discard(handshake: asyncio.Future[asyncio.Transport | None]) -> None:
    """Cancel ``handshake``, or take its exception so that it is not reported as unretrieved."""
    if not handshake.done():
        handshake.cancel()
    elif not handshake.cancelled():
        handshake.exception()


def _feed(protocol: asyncio.BaseProtocol, data: bytes) -> None:
    """Give ``data`` to ``protocol`` as its transport would: by copy into a buffered protocol's
    buffer (both loops' TLS protocols are buffered; uvloop's is no ``BufferedProtocol`` subclass)."""
    if not hasattr(protocol, "get_buffer"):
        cast(asyncio.Protocol, protocol).data_received(data)
        return
    buffered = cast(asyncio.BufferedProtocol, protocol)
    view = memoryview(data)
    while view:
        buffer = memoryview(buffered.get_buffer(len(view)))
        size = min(len(buffer), len(view))
        buffer[:size] = view[:size]
        buffered.buffer_updated(size)
        view = view[size:]


class Dropped(asyncio.Protocol):
    """A TLS socket refused at accept: reset at once, nothing read, nothing written."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        cast(asyncio.Transport, transport).abort()


class TurnedAway(asyncio.Protocol):
    """A plain socket refused at accept: ``answer`` (the reason, in the listener's protocol)
    written at once, then the socket is dropped; nothing is read."""

    def __init__(self, answer: bytes) -> None:
        self._answer = answer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        sock = cast(asyncio.WriteTransport, transport)  # uvloop's is not a subclass
        sock.write(self._answer)  # a fresh socket's buffer takes it whole, at once
        sock.abort()

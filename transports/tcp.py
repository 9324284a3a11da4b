"""TCP transport: length-prefixed frames over plain TCP or TLS, the fastest way between two nodes.

The core's own frames go over a TCP connection with nothing in between: no HTTP upgrade, no
WebSocket masking or framing. On loopback that halves a round trip against the ``websockets``
library. It is for node-to-node links on a LAN; programs and networks that need HTTP keep the
WebSocket and HTTP transports.

Endpoints are ``tcp://host:port`` and, when the transport listens with a TLS server context,
``tls://host:port`` (a scheme of its own rather than ``tcp+tls``: one word, and the URL says
what a dialler must do). ``dial`` takes both, and ``host:port`` (plain ``tcp://``). A TLS dial
uses the client context given (``ssl=``, see :mod:`gravpy.tls`), else the system's trust store,
and checks the certificate against the host dialled.

Wire use (one connection per link, both sides speak the same):

- a **greeting** first: ``b"GRAVTCP"``, version byte 1, the sender's ``max_frame_bytes`` (u32,
  big-endian). ``dial`` returns once the acceptor's greeting arrived, so a port where something
  else listens is a failed dial, not a link; the acceptor hands the link to ``on_link`` once the
  dialler's greeting arrived, and drops a connection that sends none within
  ``handshake_timeout``. An acceptor that refuses the dialler (mTLS without a client certificate,
  too many connections in their handshake) sends a close frame with the reason in place of its
  greeting.
- **frames**: a u32 big-endian length, then the frame. A length over the receiver's
  ``max_frame_bytes`` is refused before the body is read (the link closes with the reason).
- the **close**: a length with the top bit set; the low 31 bits are the length of a UTF-8
  reason (at most 1,024 bytes). See :mod:`transports.tcp_link` for the close sequence.

Connections in their handshake (accepted, greeting not yet received, TLS handshake included) are
bounded by ``max_pending``, decided at accept as the WebSocket listener does
(:mod:`transports.websocket_gate`): a newcomer past the bound takes the place of the oldest one
that has sent nothing for ``SILENCE`` seconds (which is turned away), else it is turned away
itself: a close frame with the reason in place of the greeting, or with TLS a reset before any
handshake (the listener listens on plain TCP and runs each admitted socket's handshake itself,
:mod:`transports.tls_door`). Both are counted in ``connections_refused``. So sockets that connect
and say nothing cost a bounded number of file descriptors and cannot hold the door shut for
``handshake_timeout``; ``stop`` resets the handshakes in progress.

asyncio's TCP_NODELAY is set explicitly on every connection (small frames go out at once; the
core batches messages into frames itself). Every socket and TLS exception is translated in one
place, :class:`_TcpErrorMap` on :class:`gravpy.transport_kit.ErrorMap`.
"""

from __future__ import annotations

import asyncio
import math
import socket
import ssl as ssl_module
from collections.abc import Callable
from typing import Final
from urllib.parse import urlsplit

from gravpy.errors import GravError, TransportError, UsageError
from gravpy.plugins import LinkHandler
from gravpy.proto import DEFAULT_LIMITS
from gravpy.tls import SslOption, TlsContexts, as_tls
from gravpy.transport_kit import CERT_REFUSED_HINT, ErrorMap, serve_link
from transports._addresses import format_address, wildcard_hosts
from transports.tcp_link import BadGreeting, Refused, TcpLink, close_frame
from transports.tls_door import Dropped, Entrance, TlsDoor, TlsFailures, TurnedAway

__all__ = ["SILENCE", "TcpLink", "TcpTransport"]

_SCHEMES: Final = ("tcp", "tls")
_MAX_FRAME_LIMIT: Final = (1 << 31) - 1  # the top bit of a length marks the close
SILENCE: Final = 1.0  # seconds a connection in its handshake may say nothing before it is evicted


def _stopped(peercert: object, peer: str) -> str:
    """The refusal of a connection accepted while the transport stops."""
    return "transport stopped"


class _TcpErrorMap(ErrorMap):
    """Socket, TLS and greeting failures as TransportError; the rest as :class:`ErrorMap` does."""

    def dial_error(self, exc: Exception) -> GravError:
        if isinstance(exc, BadGreeting | Refused):
            return TransportError(f"{self.action}: {exc}")
        error = super().dial_error(exc)
        if isinstance(exc, ConnectionResetError) and self.action.startswith("dial tcp://"):
            # what a TLS listener does with a plain greeting: hang up before its own
            return TransportError(f"{error} (a TLS listener? then dial tls://)")
        if isinstance(exc, ConnectionResetError) and self.action.startswith("dial tls://"):
            return TransportError(f"{error} {CERT_REFUSED_HINT}")
        return error


class TcpTransport:
    """Listens on ``host:port`` and dials ``tcp://`` and ``tls://`` URLs.

    ``port=0`` binds an ephemeral port; :meth:`endpoints` reports the real one. ``max_queue``
    bounds the frames received but not yet taken by ``recv`` per link (reading pauses past it);
    ``write_limit`` is the bytes buffered per link above which ``send`` waits; ``close_timeout``
    bounds the wait for the peer to hang up after a close; ``handshake_timeout`` is how long an
    accepted connection has to finish TLS and send its greeting; ``max_pending`` bounds the
    connections doing so at once (past it a newcomer evicts the oldest silent one, else it is
    refused; both counted in ``connections_refused``). ``ssl`` is a
    :class:`~gravpy.tls.TlsContexts` or one context (see :mod:`gravpy.tls`).
    """

    name: Final = "tcp"
    schemes: Final = _SCHEMES
    preference: Final = 10  # the fastest: preferred when a peer also speaks another transport

    def __init__(
        self,
        host: str = "0.0.0.0",
        port: int = 8082,
        *,
        max_frame_bytes: int = DEFAULT_LIMITS.max_frame_bytes,
        max_queue: int = 64,
        write_limit: int = 1 << 16,
        close_timeout: float = 5.0,
        handshake_timeout: float = 10.0,
        ssl: SslOption = None,
        max_pending: int = 128,
    ) -> None:
        if not 0 <= port <= 65535:
            raise UsageError(f"port must be between 0 and 65535, got {port!r}")
        if not 1 <= max_frame_bytes <= _MAX_FRAME_LIMIT:
            raise UsageError(
                f"max_frame_bytes must be between 1 and 2**31 - 1, got {max_frame_bytes!r}"
            )
        if max_queue < 1 or write_limit < 0 or max_pending < 1:
            raise UsageError("max_queue and max_pending must be >= 1, write_limit >= 0")
        for label, seconds in (
            ("close_timeout", close_timeout),
            ("handshake_timeout", handshake_timeout),
        ):
            if not (math.isfinite(seconds) and seconds > 0):
                raise UsageError(f"{label} must be a positive number of seconds, got {seconds!r}")
        self.host, self.port = host, port
        self.max_frame_bytes = max_frame_bytes
        self.max_queue = max_queue
        self.write_limit = write_limit
        self.close_timeout = close_timeout
        self.handshake_timeout = handshake_timeout
        self.max_pending = max_pending
        self.tls = as_tls(ssl)
        self.tls_failures = TlsFailures(self.name)
        self._server: asyncio.Server | None = None
        self._on_link: LinkHandler | None = None
        self._endpoints: list[str] = []
        self._door: TlsDoor | None = None  # with TLS: the handshakes of admitted connections
        # accepted, not yet greeted, in accept order: when, and the TLS handshake (if under way)
        self._pending: dict[TcpLink, tuple[float, Entrance | None]] = {}
        # of those, the ones not heard from (looked at lazily: some may have spoken since)
        self._silent: dict[TcpLink, None] = {}
        self._refused = 0
        self._timed_out = 0  # accepted, and dropped at the handshake deadline before greeting
        self.evicted = 0  # silent connections in their handshake dropped for a newcomer
        self._busy = close_frame(f"too many connections in their handshake ({max_pending})")
        self._links: set[TcpLink] = set()  # accepted and handed to on_link
        self._tasks: set[asyncio.Task[None]] = set()

    def use_tls(self, tls: TlsContexts) -> None:
        """Take the contexts of ``tls`` this transport has none of (before ``start``)."""
        self.tls = self.tls.merged(tls)

    # -- listening --------------------------------------------------------------------------------

    async def start(self, on_link: LinkHandler) -> None:
        """Bind and listen; returns once listening. Raises TransportError if it cannot bind."""
        if self._server is not None:
            raise UsageError("this TcpTransport is already started")
        loop = asyncio.get_running_loop()
        if self.tls.server is not None:  # TLS after the bound (transports.tls_door)
            self._door = TlsDoor(
                self.tls.server, self.handshake_timeout, self.close_timeout, self.tls_failures
            )
        with _TcpErrorMap(f"{self.host}:{self.port}", f"listen on {self.host}:{self.port}"):
            self._server = await loop.create_server(self._new_link, self.host, self.port)
        self._on_link = on_link
        self._endpoints = self._list_endpoints(self._server.sockets)

    def endpoints(self) -> list[str]:
        """URLs peers can dial, with the bound port.

        When bound to a wildcard address (``0.0.0.0``, ``::``) this is a best guess: the address of
        the interface holding the default route (found without sending anything), then loopback.
        """
        if self._server is None:
            raise UsageError("endpoints() is only known after start()")
        return list(self._endpoints)

    async def stop(self) -> None:
        """Stop listening, close every accepted link, return once their handlers returned."""
        server, self._server = self._server, None
        if server is None:
            return
        self._on_link = None  # from now on a connection is refused (see _new_link, _greeted)
        server.close()
        if self._door is not None:  # TLS handshakes in progress are reset
            await self._door.close()
        for link in list(self._pending):
            link.abort()
        for link in list(self._links):
            link._close_here("transport stopped")
        if self._tasks:
            await asyncio.wait(set(self._tasks))
        await server.wait_closed()
        self._endpoints = []

    @property
    def connections_timed_out(self) -> int:
        """Accepted connections dropped because no greeting came within ``handshake_timeout``
        (one whose TLS handshake did not complete counts in ``tls_handshakes_failed``)."""
        return self._timed_out

    @property
    def connections_refused(self) -> int:
        """Connections turned away at accept, or evicted, because ``max_pending`` were in their
        handshake."""
        return self._refused

    def _new_link(self) -> asyncio.BaseProtocol:
        """A connection was accepted (asyncio may still accept one while ``stop`` runs)."""
        door = self._door
        if len(self._pending) >= self.max_pending and not self._evict():
            self._refused += 1
            return Dropped() if door is not None else TurnedAway(self._busy)
        refusal = self._refusal if self._on_link is not None else _stopped
        link = self._make_link(initiator=False, refusal=refusal)
        entrance = None if door is None else door.entrance(link, lambda: self._not_entered(link))
        self._pending[link] = (asyncio.get_running_loop().time(), entrance)
        self._silent[link] = None
        link.expire_handshake(self.handshake_timeout)
        return link if entrance is None else entrance

    def _evict(self) -> bool:
        """Turn away the oldest connection in its handshake that has sent nothing for
        ``SILENCE`` seconds; False if there is none (the first silent one in accept order)."""
        silent, pending = self._silent, self._pending
        while silent:
            link = next(iter(silent))
            if link in pending and not link.heard:
                break
            del silent[link]  # greeted, gone or heard from since: never evicted
        else:
            return False
        accepted, entrance = pending[link]
        if accepted > asyncio.get_running_loop().time() - SILENCE:
            return False
        del silent[link], pending[link]
        self.evicted += 1
        self._refused += 1
        if link.connected or entrance is None:
            link.turn_away(f"too many connections in their handshake ({self.max_pending})")
        else:
            link.handshake_failed()
            entrance.drop()  # in its TLS handshake: reset, nothing can be said yet
        return True

    def _not_entered(self, link: TcpLink) -> None:
        """``link``'s TLS handshake failed, timed out or was dropped (the door counted it)."""
        link.handshake_failed()
        self._pending.pop(link, None)
        self._silent.pop(link, None)

    def _refusal(self, peercert: object, peer: str) -> str | None:
        """Why a TLS connection is refused (mTLS: no client certificate): counted and logged
        as a failed TLS handshake, as one with an untrusted certificate is."""
        refused = self.tls.refusal(peercert)
        if refused is not None:
            self.tls_failures.failed(peer, refused)
        return refused

    def _make_link(
        self, *, initiator: bool, refusal: Callable[[object, str], str | None] | None = None
    ) -> TcpLink:
        return TcpLink(
            initiator=initiator,
            max_frame_bytes=self.max_frame_bytes,
            max_queue=self.max_queue,
            write_limit=self.write_limit,
            close_timeout=self.close_timeout,
            on_greeted=None if initiator else self._greeted,
            on_lost=None if initiator else self._lost,
            refusal=refusal,
        )

    @property
    def tls_handshakes_failed(self) -> int:
        """TLS handshakes on the listener that failed or timed out (logged, a few per burst)."""
        return self.tls_failures.count

    def _lost(self, link: TcpLink) -> None:
        """An accepted connection ended before its greeting, or its deadline passed in its TLS
        handshake (then it is reset, and counted as a failed TLS handshake)."""
        _, entrance = self._pending.pop(link, (0.0, None))
        self._silent.pop(link, None)
        if not link.connected and entrance is not None:
            entrance.drop()
            self.tls_failures.failed(
                "?", f"no TLS handshake completed within {self.handshake_timeout} s"
            )
        elif link.timed_out:
            self._timed_out += 1

    def _greeted(self, link: TcpLink) -> None:
        """An accepted connection sent its greeting: it is a link now; run ``on_link``."""
        self._pending.pop(link, None)
        self._silent.pop(link, None)
        if self._on_link is None:  # stopping
            link.abort()
            return
        self._links.add(link)
        task = asyncio.create_task(self._serve(link, self._on_link), name=f"tcp {link!r}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, link: TcpLink, on_link: LinkHandler) -> None:
        try:
            await serve_link(link, on_link, transport=self.name)
        finally:
            self._links.discard(link)

    def _list_endpoints(self, sockets: tuple[socket.socket, ...]) -> list[str]:
        scheme = "tls" if self.tls.server is not None else "tcp"
        found: list[str] = []
        for sock in sockets:
            host, port = sock.getsockname()[:2]
            hosts = wildcard_hosts(sock.family) if host in ("0.0.0.0", "::") else [host]
            for h in hosts:
                url = f"{scheme}://{format_address((h, port))}"
                if url not in found:
                    found.append(url)
        return found

    # -- dialling ---------------------------------------------------------------------------------

    async def dial(self, url: str, *, timeout: float) -> TcpLink:
        """Connect to ``url`` within ``timeout`` seconds (TCP, TLS and both greetings).

        Raises UsageError for a URL this transport cannot dial and TransportError (``__cause__``
        set) when the connection, the TLS handshake or the greeting fails or times out.
        """
        scheme, host, port = self.parse_url(url)
        tls = None
        if scheme == "tls":
            tls = self.tls.client or ssl_module.create_default_context()
        target = f"{scheme}://{format_address((host, port))}"
        loop = asyncio.get_running_loop()
        made: list[TcpLink] = []

        def factory() -> TcpLink:
            made.append(self._make_link(initiator=True))
            return made[-1]

        try:
            with _TcpErrorMap(target, f"dial {target}"):
                async with asyncio.timeout(timeout):
                    await loop.create_connection(
                        factory, host, port, ssl=tls, server_hostname=host if tls else None
                    )
                    await made[-1].wait_greeted()
        except BaseException:
            for link in made:
                link.abort()
            raise
        return made[-1]

    def parse_url(self, url: str) -> tuple[str, str, int]:
        """``(scheme, host, port)`` of ``url``; raises UsageError if this transport cannot dial it."""
        raw = url.strip()
        if "://" not in raw:
            raw = "tcp://" + raw
        try:
            parts = urlsplit(raw)
            port = parts.port
        except ValueError as exc:
            raise UsageError(f"not a TCP URL: {url!r} ({exc})") from exc
        if parts.scheme not in _SCHEMES:
            raise UsageError(f"not a TCP URL: {url!r} (scheme must be one of {_SCHEMES})")
        if not parts.hostname or not port:
            raise UsageError(f"not a TCP URL: {url!r} (host and port are required)")
        if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
            raise UsageError(f"not a TCP URL: {url!r} (no path, query, fragment or user)")
        return parts.scheme, parts.hostname, port

    def __repr__(self) -> str:
        state = ", ".join(self._endpoints) if self._server else "stopped"
        return f"<TcpTransport {state}>"

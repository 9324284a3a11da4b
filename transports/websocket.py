"""WebSocket transport: links are WebSocket connections carrying binary frames.

Built on the ``websockets`` asyncio API (``websockets.asyncio.server.serve`` and
``websockets.asyncio.client.connect``). Choices, and why:

- **No permessage-deflate** (``compression=None``): it costs about 25% on small messages and opens
  the door to compression bombs.
- **Limits**: ``max_frame_bytes`` is the largest incoming message (a larger one closes the link with
  code 1009); ``max_queue`` bounds the frames buffered per link before reading from the socket
  pauses; ``write_limit`` is the write buffer's high-water mark, above which ``send`` waits.
- **No WebSocket pings** (``ping_interval=None``): liveness is the core protocol's job, the same on
  every transport. No HTTP proxy from the environment (``proxy=None``): peers are on the LAN.
- **Binary frames only**: a text frame from the peer closes that link with code 1003.
- **One path**: a request for any other path than ``path`` is refused with HTTP 404.

Every ``websockets`` (and socket, and TLS) exception is translated in one place, :class:`_ErrorMap`
(on :class:`gravpy.transport_kit.ErrorMap`):
:class:`~gravpy.errors.LinkClosedError` for a closed link (the message says who closed it, the close
code and the reason), :class:`~gravpy.errors.TransportError` for listen and dial failures, with the
original exception as ``__cause__``.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Sequence
from http import HTTPStatus
from typing import Any, Final, cast
from urllib.parse import unquote, urlsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.connection import Connection
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import (
    ConcurrencyError,
    ConnectionClosed,
    InvalidMessage,
    InvalidStatus,
)
from websockets.frames import CloseCode
from websockets.http11 import Request, Response
from websockets.protocol import State

from gravpy.errors import GravError, LinkClosedError, TransportError, UsageError
from gravpy.plugins import LinkHandler
from gravpy.proto import DEFAULT_LIMITS
from gravpy.tls import SslOption, TlsContexts, as_tls
from gravpy.transport_kit import (
    CERT_REFUSED_HINT,
    CLOSED_BY_LOCAL,
    CLOSED_BY_PEER,
    LOST,
    ErrorMap,
    RateLimitFilter,
    check_url_path,
    link_closed,
    serve_link,
)
from transports._addresses import format_address, wildcard_hosts
from transports.tls_door import TlsDoor, TlsFailures
from transports.websocket_gate import ConnectionGate

__all__ = ["WebSocketLink", "WebSocketTransport"]

_MAX_CLOSE_REASON_BYTES: Final = 123  # RFC 6455: 125-byte close payload, 2 of them the code
_SCHEMES: Final = ("ws", "wss")


class _ErrorMap(ErrorMap):
    """What websockets raises, as gravpy errors: close frames, HTTP refusals, misuse."""

    def link_error(self, exc: Exception) -> GravError:
        if isinstance(exc, ConnectionClosed):
            return _closed(exc, self.remote)
        if isinstance(exc, ConcurrencyError):
            return UsageError(f"link to {self.remote}: recv() called from two tasks at once")
        return super().link_error(exc)

    def dial_error(self, exc: Exception) -> GravError:
        if isinstance(exc, InvalidStatus):
            status = exc.response.status_code
            text = bytes(exc.response.body or b"")[:200].decode(errors="replace").strip()
            why = f": {text}" if text else ""
            return TransportError(f"{self.action}: refused with HTTP {status}{why}")
        error = super().dial_error(exc)
        if isinstance(exc, InvalidMessage) and self.action.startswith("dial ws://"):
            # what a TLS listener answers a plain HTTP request with (an alert, or nothing)
            return TransportError(f"{error} (a TLS listener? then dial wss://)")
        if isinstance(exc, InvalidMessage) and self.action.startswith("dial wss://"):
            return TransportError(f"{error} {CERT_REFUSED_HINT}")
        return error


def _closed(exc: ConnectionClosed, remote: str) -> LinkClosedError:
    """Who closed the link, with which code and reason."""
    if exc.sent is not None and (exc.rcvd is None or exc.rcvd_then_sent is False):
        who, frame = CLOSED_BY_LOCAL, exc.sent
    elif exc.rcvd is not None:
        who, frame = CLOSED_BY_PEER, exc.rcvd
    else:
        return link_closed(remote, LOST, "connection dropped without a close frame")
    return link_closed(remote, who, frame.reason, code=int(frame.code))


def _close_reason(reason: str) -> str:
    """``reason`` cut to what fits in a close frame, on a character boundary."""
    return reason.encode()[:_MAX_CLOSE_REASON_BYTES].decode(errors="ignore")


class WebSocketLink:
    """One WebSocket connection as a gravpy :class:`~gravpy.plugins.Link`."""

    transport: Final = "websocket"

    __slots__ = ("_errors", "_refused", "_ws", "initiator", "remote_address")

    def __init__(self, ws: Connection, *, initiator: bool) -> None:
        self._ws = ws
        self._refused = False  # ``refuse`` closed it: nothing more to send or wait for
        self.initiator = initiator
        self.remote_address = format_address(ws.remote_address)
        self._errors = _ErrorMap(
            self.remote_address, f"link to {self.remote_address}", on_link=True
        )

    async def send(self, frame: bytes) -> None:
        """Send one binary frame; waits while the write buffer is above ``write_limit``."""
        if not isinstance(frame, bytes | bytearray | memoryview):
            raise UsageError(f"a frame must be bytes, got {type(frame).__name__}")
        with self._errors:
            await self._ws.send(frame)

    def write_now(self, frame: bytes) -> bool:
        """Write one binary frame at once, through the connection's sans-I/O protocol, if it is
        open, no fragmented send is under way and its write buffer is below the limit; else
        write nothing and return False (``send`` is the way that waits).

        ``paused`` and ``send_in_progress`` are the connection's own flow-control and fragment
        state (websockets >= 14): where a version lacks them this always says False, and the
        core sends through its writer task as before."""
        ws = self._ws
        if (
            ws.protocol.state is not State.OPEN
            or getattr(ws, "paused", True) is not False
            or getattr(ws, "send_in_progress", True) is not None
            or ws.transport.is_closing()
        ):
            return False
        protocol = ws.protocol
        protocol.send_binary(frame)
        ws.transport.write(b"".join(protocol.data_to_send()))
        return True

    async def recv(self) -> bytes:
        """Return the next frame; a text frame from the peer closes the link (code 1003)."""
        with self._errors:
            data = await self._ws.recv()
        if isinstance(data, str):
            reason = "text frames are not accepted; gravpy links carry binary frames"
            await self._ws.close(CloseCode.UNSUPPORTED_DATA, reason)
            raise link_closed(self.remote_address, CLOSED_BY_LOCAL, reason, code=1003)
        return data

    async def close(self, reason: str = "") -> None:
        """Close with code 1000 and ``reason`` (cut to 123 bytes); waits for the peer's reply."""
        if self._refused or self._ws.state is State.CLOSED:
            return
        await self._ws.close(CloseCode.NORMAL_CLOSURE, _close_reason(reason))

    async def refuse(self, frames: Sequence[bytes], reason: str) -> None:
        """End a refused handshake: ``frames`` (the REJECT) and the close frame go out in one
        write, then the socket is closed at once. The peer reads why; its close frame is not
        waited for (a refused peer gets no more of this node's time). Then ``close`` is a no-op.
        """
        ws = self._ws
        if ws.state is not State.OPEN:
            await self.close(reason)
            return
        self._refused = True
        protocol = ws.protocol
        for frame in frames:
            protocol.send_binary(frame)
        protocol.send_close(CloseCode.NORMAL_CLOSURE, _close_reason(reason))
        ws.transport.write(b"".join(protocol.data_to_send()))
        ws.transport.close()

    def __repr__(self) -> str:
        role = "dialled" if self.initiator else "accepted"
        return f"<WebSocketLink {role} {self.remote_address}>"


_SERVER_LOG = logging.getLogger("gravpy.transports.websocket.server")
_SERVER_LOG.addFilter(RateLimitFilter())  # a flood of failed upgrades logs a few lines
# websockets logs every connection's open, close and refusal at INFO: two records per connection
# that the filter then drops, about 7% of what a refused handshake costs gravd (py-spy under
# bench_auth). Links are logged by the hub; websockets' own warnings and errors still pass.
_SERVER_LOG.setLevel(logging.WARNING)


class WebSocketTransport:
    """Listens on ``host:port`` at ``path`` and dials ``ws://``/``wss://`` URLs.

    ``port=0`` binds an ephemeral port; :meth:`endpoints` reports the real one. ``ssl`` (a
    :class:`~gravpy.tls.TlsContexts` or one context, see :mod:`gravpy.tls`): with a server context
    it listens with TLS (endpoints are then ``wss://``); a client context is what ``wss://`` dials
    trust and present (else the system's trust store). ``dial`` accepts ``ws://host:port/path``,
    ``wss://...`` and ``host:port`` (``ws://`` and this transport's ``path`` are added).
    """

    name: Final = "websocket"
    schemes: Final = _SCHEMES
    preference: Final = 20  # after tcp, before http (see gravpy.plugins.transport_preference)

    def __init__(
        self,
        host: str = "0.0.0.0",
        port: int = 8080,
        path: str = "/meta/message",
        *,
        max_frame_bytes: int = DEFAULT_LIMITS.max_frame_bytes,
        max_queue: int = 16,
        write_limit: int = 1 << 16,
        close_timeout: float = 5.0,
        ssl: SslOption = None,
        max_connections: int = 1024,
        open_timeout: float = 10.0,
        max_upgrading: int = 128,
    ) -> None:
        if not 0 <= port <= 65535:
            raise UsageError(f"port must be between 0 and 65535, got {port!r}")
        check_url_path(path)
        for label, value in (("max_frame_bytes", max_frame_bytes), ("max_queue", max_queue)):
            if value < 1:
                raise UsageError(f"{label} must be >= 1, got {value!r}")
        if write_limit < 0 or close_timeout <= 0:
            raise UsageError("write_limit must be >= 0 and close_timeout > 0")
        if max_connections < 1 or max_upgrading < 1 or not open_timeout > 0:
            raise UsageError("max_connections and max_upgrading must be >= 1, open_timeout > 0")
        self.host, self.port, self.path = host, port, path
        self.max_frame_bytes = max_frame_bytes
        self.max_queue = max_queue
        self.write_limit = write_limit
        self.close_timeout = close_timeout
        self.open_timeout = open_timeout  # a connection not upgraded by then is closed
        # links open and upgrades in flight; past either bound a socket gets a fixed 503 at accept
        self._gate = ConnectionGate(max_connections, max_upgrading, open_timeout=open_timeout)
        self.tls = as_tls(ssl)
        self.tls_failures = TlsFailures(self.name)
        self._server: Server | None = None
        self._on_link: LinkHandler | None = None
        self._endpoints: list[str] = []

    @property
    def max_connections(self) -> int:
        """Links open at once on the listener (past it: HTTP 503, counted)."""
        return self._gate.limit

    @property
    def tls_handshakes_failed(self) -> int:
        """TLS handshakes on the listener that failed or timed out (logged, a few per burst)."""
        return self.tls_failures.count

    @property
    def connections_timed_out(self) -> int:
        """Sockets dropped because they were not upgraded within ``open_timeout`` (one whose TLS
        handshake did not complete counts in ``tls_handshakes_failed``)."""
        return self._gate.timed_out

    @property
    def connections_refused(self) -> int:
        """Connections refused (503): ``max_connections`` links were open, or ``max_upgrading``
        upgrades in flight."""
        return self._gate.refused

    def use_tls(self, tls: TlsContexts) -> None:
        """Take the contexts of ``tls`` this transport has none of (before ``start``)."""
        self.tls = self.tls.merged(tls)

    async def start(self, on_link: LinkHandler) -> None:
        """Bind and listen; returns once listening. Raises TransportError if it cannot bind."""
        if self._server is not None:
            raise UsageError("this WebSocketTransport is already started")
        self._on_link = on_link
        if self.tls.server is not None:  # TLS after the cap (transports.tls_door)
            self._gate.door = TlsDoor(
                self.tls.server, self.open_timeout, self.close_timeout, self.tls_failures
            )
        with _ErrorMap(f"{self.host}:{self.port}", f"listen on {self.host}:{self.port}"):
            self._server = await serve(
                self._serve_link,
                self.host,
                self.port,
                compression=None,
                process_request=self._check_path,
                server_header=None,
                ping_interval=None,
                close_timeout=self.close_timeout,
                open_timeout=self.open_timeout,
                logger=_SERVER_LOG,
                max_size=self.max_frame_bytes,
                max_queue=self.max_queue,
                write_limit=self.write_limit,
                # the cap is applied at accept, before any parsing (transports.websocket_gate)
                create_connection=cast(type[ServerConnection], self._gate.connection),
            )
        self._endpoints = self._list_endpoints(self._server.sockets)

    def endpoints(self) -> list[str]:
        """URLs peers can dial, with the bound port.

        When bound to a wildcard address (``0.0.0.0``, ``::``) this is a best guess: the address of
        the interface holding the default route (found without sending anything), then loopback.
        """
        if self._server is None:
            raise UsageError("endpoints() is only known after start()")
        return list(self._endpoints)

    async def dial(self, url: str, *, timeout: float) -> WebSocketLink:
        """Connect to ``url`` within ``timeout`` seconds.

        Raises UsageError for a URL this transport cannot dial and TransportError (``__cause__``
        set) when the connection or the opening handshake fails or times out.
        """
        target = self.normalize_url(url)
        with _ErrorMap(target, f"dial {target}"):
            async with asyncio.timeout(timeout):
                ws: ClientConnection = await connect(
                    target,
                    compression=None,
                    proxy=None,
                    open_timeout=None,
                    ping_interval=None,
                    close_timeout=self.close_timeout,
                    max_size=self.max_frame_bytes,
                    max_queue=self.max_queue,
                    write_limit=self.write_limit,
                    **self._dial_tls(target),
                )
        return WebSocketLink(ws, initiator=True)

    def _dial_tls(self, target: str) -> dict[str, Any]:
        """The client context for a ``wss://`` target, when one was given."""
        if target.startswith("wss:") and self.tls.client is not None:
            return {"ssl": self.tls.client}
        return {}

    async def stop(self) -> None:
        """Stop listening and close accepted links (code 1001); returns once their handlers did."""
        server, self._server = self._server, None
        if server is None:
            return
        if self._gate.door is not None:  # no handshake completes after the server closed
            await self._gate.door.close()
        server.close(code=CloseCode.GOING_AWAY, reason="transport stopped")
        await server.wait_closed()
        self._endpoints = []

    def normalize_url(self, url: str) -> str:
        """``url`` as a full ``ws(s)://host:port/path`` URL; raises UsageError if it is not one."""
        raw = url.strip()
        if "://" not in raw:
            raw = "ws://" + raw
        try:
            parts = urlsplit(raw)
            port = parts.port
        except ValueError as exc:
            raise UsageError(f"not a WebSocket URL: {url!r} ({exc})") from exc
        if parts.scheme not in _SCHEMES:
            raise UsageError(f"not a WebSocket URL: {url!r} (scheme must be one of {_SCHEMES})")
        if not parts.hostname or port is None:
            raise UsageError(f"not a WebSocket URL: {url!r} (host and port are required)")
        return parts._replace(path=parts.path or self.path).geturl()

    async def _serve_link(self, ws: ServerConnection) -> None:
        """The per-connection handler: the link lives while ``on_link`` runs."""
        assert self._on_link is not None

        async def refuse(reason: str) -> None:
            await ws.close(CloseCode.INTERNAL_ERROR, reason)

        link = WebSocketLink(ws, initiator=False)
        await serve_link(link, self._on_link, transport=self.name, on_failure=refuse)

    async def _check_path(self, ws: ServerConnection, request: Request) -> Response | None:
        """Refuse a request for any path but ours (404), without a required client cert (403), or
        when ``max_connections`` links are open by now (503, counted; ``ConnectionGate`` refused
        what it could at accept, before any parsing). An upgrade accepted here counts as a link
        at once; at most ``PER_TURN`` go on per loop turn (``UpgradePacer``)."""
        await self._gate.pacer.wait_turn()
        refusal = self.tls.refusal(ws.transport.get_extra_info("peercert"))
        if refusal is not None:  # (counted and logged as a failed TLS handshake)
            self.tls_failures.failed(format_address(ws.remote_address), refusal)
            return ws.respond(HTTPStatus.FORBIDDEN, refusal + "\n")
        asked = request.path.partition("?")[0]  # (a dialler sends a non-ASCII path %-escaped)
        if asked != self.path and unquote(asked) != self.path:
            return ws.respond(HTTPStatus.NOT_FOUND, f"no gravpy endpoint at {request.path}\n")
        if self._gate.full:
            return ws.respond(HTTPStatus.SERVICE_UNAVAILABLE, self._gate.refuse())
        self._gate.admit(ws)
        return None

    def _list_endpoints(self, sockets: tuple[socket.socket, ...]) -> list[str]:
        scheme = "wss" if self.tls.server is not None else "ws"
        found: list[str] = []
        for sock in sockets:
            host, port = sock.getsockname()[:2]
            hosts = wildcard_hosts(sock.family) if host in ("0.0.0.0", "::") else [host]
            for h in hosts:
                url = f"{scheme}://{format_address((h, port))}{self.path}"
                if url not in found:
                    found.append(url)
        return found

    def __repr__(self) -> str:
        state = ", ".join(self._endpoints) if self._server else "stopped"
        return f"<WebSocketTransport {state}>"

"""TLS listeners apply their cap at accept, before the TLS handshake (transports.tls_door).

A probe sends a real TLS ClientHello over a plain socket and reads what comes back: a listener
that runs the handshake answers with a ServerHello record; one that refused the socket at accept
resets it with nothing written.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
import trustme

from gravpy.errors import GravError
from gravpy.plugins import Link
from tests._bus_helpers import until
from tests.transports._tls import HANDSHAKE_RECORD, HOST, client_tls, server_tls, tls_probe
from transports import websocket_gate
from transports.http import HttpTransport
from transports.tcp import TcpTransport
from transports.websocket import WebSocketTransport


async def _hold(link: Link) -> None:
    """Keep an accepted link until its remote closes it."""
    with contextlib.suppress(GravError):
        while True:
            await link.recv()


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


@contextlib.asynccontextmanager
async def _websocket(ca: trustme.CA, **limits: int) -> AsyncIterator[WebSocketTransport]:
    transport = WebSocketTransport(HOST, 0, ssl=server_tls(ca), **limits)
    await transport.start(_hold)
    try:
        yield transport
    finally:
        await transport.stop()


async def _websocket_over_cap(ca: trustme.CA) -> None:
    """Under the cap a ClientHello gets a ServerHello; with the one link slot taken it gets a
    reset and nothing else, and the refusal is counted."""
    async with _websocket(ca, max_connections=1, max_upgrading=2) as listener:
        url, port = listener.endpoints()[0], _port(listener.endpoints()[0])
        assert (await tls_probe(port, client_tls(ca)))[0] == HANDSHAKE_RECORD
        assert listener.connections_refused == 0
        link = await WebSocketTransport(ssl=client_tls(ca)).dial(url, timeout=5)
        try:
            assert await tls_probe(port, client_tls(ca)) == b""
            assert listener.connections_refused == 1
        finally:
            await link.close()


async def test_a_wss_socket_over_the_cap_is_reset_before_any_tls_handshake(
    ca: trustme.CA,
) -> None:
    """WebSocket over TLS: past max_connections the socket is reset unanswered, and counted."""
    await _websocket_over_cap(ca)


def test_a_wss_socket_over_the_cap_is_reset_before_any_tls_handshake_on_uvloop(
    ca: trustme.CA,
) -> None:
    """The same on uvloop (gravd's loop when installed), which reads a socket before asked to."""
    uvloop = pytest.importorskip("uvloop")
    uvloop.run(_websocket_over_cap(ca))


async def test_a_wss_socket_silent_in_its_handshake_is_evicted_for_a_newcomer(
    ca: trustme.CA, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With one upgrade slot, a socket that sent no ClientHello is reset when a real client
    comes, and the client's link is upgraded."""
    monkeypatch.setattr(websocket_gate, "SILENCE", 0.0)  # silent at once, not after a second
    async with _websocket(ca, max_upgrading=1) as listener:
        url = listener.endpoints()[0]
        reader, writer = await asyncio.open_connection(HOST, _port(url))
        link = await WebSocketTransport(ssl=client_tls(ca)).dial(url, timeout=5)
        try:
            async with asyncio.timeout(5):
                with contextlib.suppress(ConnectionResetError):
                    assert await reader.read() == b""
            assert listener.connections_refused == 1
        finally:
            writer.close()
            await link.close()


async def test_an_https_socket_over_the_cap_is_reset_before_any_tls_handshake(
    ca: trustme.CA,
) -> None:
    """HTTP over TLS: with the one connection taken, a ClientHello gets a reset and nothing else,
    counted; a handshake that fails frees its place."""
    transport = HttpTransport(HOST, 0, ssl=server_tls(ca), max_connections=1, header_timeout=30)
    await transport.start(_hold)
    try:
        port = _port(transport.endpoints()[0])
        assert (await tls_probe(port, client_tls(ca)))[0] == HANDSHAKE_RECORD
        await until(lambda: transport.guard.entering == 0)
        _, held = await asyncio.open_connection(HOST, port, ssl=client_tls(ca))
        try:
            await until(lambda: transport.guard.open == 1)
            assert await tls_probe(port, client_tls(ca)) == b""
            assert transport.connections_refused == 1
        finally:
            held.close()
    finally:
        await transport.stop()


async def test_stopping_a_tls_listener_ends_the_handshakes_in_progress(ca: trustme.CA) -> None:
    """A socket admitted but silent in its TLS handshake is reset when the listener stops, and
    stop returns without leaving the handshake's task behind."""
    transport = WebSocketTransport(HOST, 0, ssl=server_tls(ca))
    await transport.start(_hold)
    reader, writer = await asyncio.open_connection(HOST, _port(transport.endpoints()[0]))
    try:
        door = transport._gate.door
        assert door is not None
        await until(lambda: bool(door._tasks))
        await transport.stop()
        assert not door._tasks
        async with asyncio.timeout(5):
            with contextlib.suppress(ConnectionResetError):
                assert await reader.read() == b""
    finally:
        writer.close()


async def _plain_text_to(port: int) -> None:
    """A client that speaks plain text to a TLS port, then waits for the listener to hang up."""
    reader, writer = await asyncio.open_connection(HOST, port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    try:
        async with asyncio.timeout(10):
            await reader.read()
    except ConnectionResetError:
        pass
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


@pytest.mark.parametrize("kind", ["ws", "http", "tcp"])
async def test_a_failed_tls_handshake_is_counted_and_logged_and_nothing_is_kept(
    ca: trustme.CA, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Plain text to a TLS listener: the handshake fails, the listener counts and logs it (the
    operator's only clue), and keeps nothing of the connection (tcp once its deadline passed:
    asyncio tells no protocol of a failed handshake)."""
    caplog.set_level("INFO", logger="gravpy.transports.tls")
    server = server_tls(ca)
    listener: WebSocketTransport | HttpTransport | TcpTransport
    if kind == "ws":
        listener = WebSocketTransport(HOST, 0, ssl=server)
    elif kind == "http":
        listener = HttpTransport(HOST, 0, ssl=server)
    else:
        listener = TcpTransport(HOST, 0, ssl=server, handshake_timeout=0.5)
    await listener.start(_hold)
    try:
        await _plain_text_to(_port(listener.endpoints()[0]))
        await until(lambda: listener.tls_handshakes_failed == 1)
        if isinstance(listener, TcpTransport):
            await until(lambda: not listener._pending)
        [line] = [r for r in caplog.records if r.getMessage() == "tls_handshake_failed"]
        assert line.__dict__["transport"] == listener.name
        if kind != "tcp":  # (the door has the error; tcp knows only that the deadline passed)
            assert "SSLError" in line.__dict__["error"]
    finally:
        await listener.stop()

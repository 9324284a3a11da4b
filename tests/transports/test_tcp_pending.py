"""The TCP listener's bound on connections in their handshake (accepted, greeting not received),
applied at accept, with and without TLS."""

from __future__ import annotations

import asyncio
import contextlib
import re
import struct
from collections.abc import AsyncIterator

import pytest
import trustme

from gravpy.errors import GravError, TransportError, UsageError
from gravpy.plugins import Link
from tests._bus_helpers import until
from tests.transports._tls import HANDSHAKE_RECORD, client_tls, server_tls, tls_probe
from transports import tcp
from transports.tcp import TcpTransport

HOST = "127.0.0.1"
BOUND = 3
BUSY = f"too many connections in their handshake ({BOUND})"


async def _hold(link: Link) -> None:
    """Keep an accepted link until its remote closes it."""
    with contextlib.suppress(GravError):
        while True:
            await link.recv()


@contextlib.asynccontextmanager
async def _listening(**options: object) -> AsyncIterator[TcpTransport]:
    transport = TcpTransport(HOST, 0, max_pending=BOUND, **options)  # type: ignore[arg-type]
    await transport.start(_hold)
    try:
        yield transport
    finally:
        await transport.stop()


def _port(transport: TcpTransport) -> int:
    return int(transport.endpoints()[0].rsplit(":", 1)[1])


Sockets = list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]


@pytest.fixture
async def sockets() -> AsyncIterator[Sockets]:
    """Raw client sockets a test opens; closed at its end."""
    opened: Sockets = []
    yield opened
    for _, writer in opened:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def _silent(transport: TcpTransport, count: int, sockets: Sockets) -> Sockets:
    """``count`` more sockets that connect and send nothing, each seen by the listener."""
    for _ in range(count):
        sockets.append(await asyncio.open_connection(HOST, _port(transport)))
        await until(lambda: len(transport._pending) == len(sockets))
    return sockets


async def _read_to_end(reader: asyncio.StreamReader) -> bytes:
    """What the listener wrote before it hung up (reset or closed)."""
    got = b""
    with contextlib.suppress(ConnectionResetError):
        async with asyncio.timeout(5):
            while chunk := await reader.read(4096):
                got += chunk
    return got


async def test_past_the_bound_a_dial_is_refused_with_the_reason_and_counted(
    sockets: Sockets,
) -> None:
    """With every handshake place taken by a socket that has not been silent long, a dial is
    told why it is refused and the refusal is counted; when one socket leaves, a dial links."""
    async with _listening() as transport:
        await _silent(transport, BOUND, sockets)
        with pytest.raises(TransportError, match=re.escape(f"refused: {BUSY}")):
            await TcpTransport().dial(transport.endpoints()[0], timeout=5)
        assert transport.connections_refused == 1
        assert len(transport._pending) == BOUND
        sockets[-1][1].close()
        await until(lambda: len(transport._pending) < BOUND)
        link = await TcpTransport().dial(transport.endpoints()[0], timeout=5)
        await link.close()


async def test_a_newcomer_evicts_the_oldest_silent_socket(
    sockets: Sockets, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the bound a dial still links: the oldest socket that sent nothing gets the greeting,
    then a close frame with the reason, and is dropped (counted)."""
    monkeypatch.setattr(tcp, "SILENCE", 0.0)  # silent at once, not after a second
    async with _listening() as transport:
        await _silent(transport, BOUND, sockets)
        link = await TcpTransport().dial(transport.endpoints()[0], timeout=5)
        answer = await _read_to_end(sockets[0][0])
        close = struct.pack(">I", 0x8000_0000 | len(BUSY)) + BUSY.encode()
        assert answer[12:] == close  # after the 12-byte greeting
        assert transport.connections_refused == 1
        assert transport.evicted == 1
        await link.close()


async def test_a_socket_that_sent_part_of_its_greeting_is_not_evicted(
    sockets: Sockets, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sockets that have spoken keep their places: a newcomer is refused instead."""
    monkeypatch.setattr(tcp, "SILENCE", 0.0)
    async with _listening() as transport:
        await _silent(transport, BOUND, sockets)
        for _, writer in sockets:
            writer.write(b"GRAV")  # and nothing more
        await until(lambda: all(link.heard for link in transport._pending))
        with pytest.raises(TransportError, match=re.escape(f"refused: {BUSY}")):
            await TcpTransport().dial(transport.endpoints()[0], timeout=5)
        assert transport.evicted == 0


async def test_over_tls_a_socket_past_the_bound_is_reset_before_any_handshake(
    ca: trustme.CA, sockets: Sockets
) -> None:
    """With TLS, the bound is applied before the TLS handshake: within it a ClientHello gets a
    ServerHello; past it, a reset and nothing else, counted."""
    async with _listening(ssl=server_tls(ca)) as transport:
        assert (await tls_probe(_port(transport), client_tls(ca)))[0] == HANDSHAKE_RECORD
        await until(lambda: not transport._pending)
        await _silent(transport, BOUND, sockets)
        assert await tls_probe(_port(transport), client_tls(ca)) == b""
        assert transport.connections_refused == 1


async def test_over_tls_a_newcomer_evicts_a_socket_silent_in_its_handshake(
    ca: trustme.CA, sockets: Sockets, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With TLS, a socket that sent no ClientHello is reset when a real client needs its place,
    and the client links."""
    monkeypatch.setattr(tcp, "SILENCE", 0.0)
    async with _listening(ssl=server_tls(ca)) as transport:
        await _silent(transport, BOUND, sockets)
        link = await TcpTransport(ssl=client_tls(ca)).dial(transport.endpoints()[0], timeout=5)
        assert await _read_to_end(sockets[0][0]) == b""
        assert transport.connections_refused == 1
        await link.close()


async def test_stopping_a_tls_listener_resets_the_handshakes_in_progress(
    ca: trustme.CA, sockets: Sockets
) -> None:
    """A socket silent in its TLS handshake is reset when the listener stops, not left open
    until its handshake deadline."""
    transport = TcpTransport(HOST, 0, ssl=server_tls(ca), handshake_timeout=60)
    await transport.start(_hold)
    try:
        [(reader, _)] = await _silent(transport, 1, sockets)
    finally:
        await transport.stop()
    assert not transport._pending
    assert await _read_to_end(reader) == b""  # (a TimeoutError if it is left open)


async def test_a_socket_silent_in_its_tls_handshake_is_dropped_at_the_deadline_and_counted(
    ca: trustme.CA, sockets: Sockets
) -> None:
    """A socket that sends no ClientHello is reset when handshake_timeout passes, counted once
    as a failed TLS handshake, and leaves nothing behind."""
    async with _listening(ssl=server_tls(ca), handshake_timeout=0.2) as transport:
        [(reader, _)] = await _silent(transport, 1, sockets)
        assert await _read_to_end(reader) == b""
        await until(lambda: transport.tls_handshakes_failed == 1 and not transport._pending)
        assert transport.connections_refused == 0


def test_a_bound_below_one_is_refused() -> None:
    """max_pending must be at least 1."""
    with pytest.raises(UsageError, match="max_pending"):
        TcpTransport(HOST, 0, max_pending=0)


async def _past_the_bound_over_tls(ca: trustme.CA) -> None:
    async with _listening(ssl=server_tls(ca)) as transport:
        held: Sockets = []
        try:
            await _silent(transport, BOUND, held)
            assert await tls_probe(_port(transport), client_tls(ca)) == b""
            assert transport.connections_refused == 1
        finally:
            for _, writer in held:
                writer.close()


def test_over_tls_a_socket_past_the_bound_is_reset_on_uvloop(ca: trustme.CA) -> None:
    """The same on uvloop (gravd's loop when installed), which reads a socket before asked to."""
    uvloop = pytest.importorskip("uvloop")
    uvloop.run(_past_the_bound_over_tls(ca))

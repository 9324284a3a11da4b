"""Every listener counts the connections it drops at its handshake deadline, and only those.

Each transport has its own first step before a link exists (the TCP greeting, the WebSocket
upgrade, an HTTP request); a socket that says nothing is dropped when that step's deadline passes,
and counted in ``connections_timed_out``, which gravd shows as
``gravd_connections_timed_out_total``. A socket that hangs up before the deadline is not counted.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import pytest

from gravpy.errors import GravError
from gravpy.grav import Grav
from gravpy.plugins import Link, Transport
from tests._bus_helpers import until
from transports.http import HttpTransport
from transports.tcp import TcpTransport
from transports.websocket import WebSocketTransport

DEADLINE = 0.3  # seconds: each listener's handshake deadline here

LISTENERS: dict[str, Callable[[], Transport]] = {
    "tcp": lambda: TcpTransport("127.0.0.1", 0, handshake_timeout=DEADLINE),
    "websocket": lambda: WebSocketTransport("127.0.0.1", 0, open_timeout=DEADLINE),
    "http": lambda: HttpTransport("127.0.0.1", 0, header_timeout=DEADLINE),
}


async def _hold(link: Link) -> None:
    with contextlib.suppress(GravError):
        while True:
            await link.recv()


async def _connect(transport: Transport) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    port = int(transport.endpoints()[0].split("://")[1].split("/")[0].rsplit(":", 1)[1])
    return await asyncio.open_connection("127.0.0.1", port)


def _timed_out(grav: Grav) -> int:
    assert grav.hub is not None
    return grav.hub.statistics().connections_timed_out


@pytest.mark.parametrize("kind", sorted(LISTENERS))
async def test_a_silent_socket_is_dropped_at_the_deadline_and_counted(kind: str) -> None:
    """A socket that sends nothing is dropped at the deadline and counted once; one that hung up
    before it is not counted."""
    transport = LISTENERS[kind]()
    await transport.start(_hold)
    try:
        _, early = await _connect(transport)
        early.close()
        await early.wait_closed()
        reader, silent = await _connect(transport)
        async with asyncio.timeout(10):  # a hang guard: the deadline is 0.3 s
            with contextlib.suppress(ConnectionResetError):
                while await reader.read(4096):  # (the TCP listener greets first)
                    pass
        silent.close()
        await until(lambda: transport.connections_timed_out > 0)  # type: ignore[attr-defined]
        await asyncio.sleep(DEADLINE * 2)  # past the early socket's deadline too
        assert transport.connections_timed_out == 1  # type: ignore[attr-defined]
    finally:
        await transport.stop()


async def test_a_node_sums_what_its_listeners_dropped_at_their_deadlines() -> None:
    """The hub's statistics (gravd's ``gravd_connections_timed_out_total``) add up every
    listener's count."""
    listeners = [LISTENERS[kind]() for kind in sorted(LISTENERS)]
    grav = Grav(transport=listeners)
    await grav.start()
    try:
        readers = [await _connect(t) for t in listeners]
        async with asyncio.timeout(10):
            for reader, _ in readers:
                with contextlib.suppress(ConnectionResetError):
                    while await reader.read(4096):
                        pass
        await until(lambda: _timed_out(grav) == len(listeners))
        for _, writer in readers:
            writer.close()
        assert _timed_out(grav) == len(listeners)
    finally:
        await grav.stop()

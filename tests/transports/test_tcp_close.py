"""TcpLink's ends: two sides closing at once, and a refused handshake's last frames."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from gravpy.errors import LinkClosedError
from tests.transports._link_server import LinkServer, serving
from transports.tcp import TcpTransport
from transports.tcp_link import TcpLink

GUARD = 10.0  # hang guard; the links' own close timeout is far longer
SLOW = 60.0  # close_timeout on both sides: a close that waits for it fails the guard


@pytest.fixture
async def server() -> AsyncIterator[LinkServer[TcpTransport]]:
    async with serving(TcpTransport("127.0.0.1", 0, close_timeout=SLOW)) as srv:
        yield srv


async def pair(server: LinkServer[TcpTransport]) -> tuple[TcpLink, TcpLink]:
    dialled = await TcpTransport(close_timeout=SLOW).dial(
        server.transport.endpoints()[0], timeout=GUARD
    )
    accepted = await asyncio.wait_for(server.links.get(), GUARD)
    assert isinstance(accepted, TcpLink)
    return dialled, accepted


async def test_both_sides_closing_at_once_end_without_waiting_for_the_timeout(
    server: LinkServer[TcpTransport],
) -> None:
    """When each side sends its close before it reads the other's, both still hang up at once
    (each reads the other's close frame), instead of each waiting close_timeout for the other."""
    dialled, accepted = await pair(server)
    await dialled.send(b"in flight")
    await asyncio.wait_for(asyncio.gather(dialled.close("a"), accepted.close("b")), GUARD)
    with pytest.raises(LinkClosedError, match="closed locally: a"):
        await dialled.recv()


async def test_refuse_sends_the_frames_and_a_close_then_hangs_up(
    server: LinkServer[TcpTransport],
) -> None:
    """refuse writes the frames and the close frame; the peer reads them and its reason, and the
    refusing side has hung up without waiting for the peer (close is then a no-op)."""
    dialled, accepted = await pair(server)
    await accepted.refuse([b"reject-frame", b"second"], "unknown_key")
    assert await asyncio.wait_for(dialled.recv(), GUARD) == b"reject-frame"
    assert await asyncio.wait_for(dialled.recv(), GUARD) == b"second"
    with pytest.raises(LinkClosedError, match="unknown_key"):
        await asyncio.wait_for(dialled.recv(), GUARD)
    await asyncio.wait_for(accepted.close("again"), GUARD)
    await asyncio.wait_for(dialled.close(), GUARD)

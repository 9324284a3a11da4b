"""The WebSocket listener's bounds, applied at accept: links open, and upgrades in flight."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from gravpy.errors import GravError, TransportError
from gravpy.plugins import Link
from transports import websocket_gate
from transports.websocket import WebSocketTransport

CAP = 3


class _Listener:
    """A started transport with a cap of ``CAP`` links and of ``CAP`` upgrades in flight."""

    def __init__(self) -> None:
        self.transport = WebSocketTransport("127.0.0.1", 0, max_connections=CAP, max_upgrading=CAP)
        self.links: asyncio.Queue[Link] = asyncio.Queue(CAP + 1)

    async def on_link(self, link: Link) -> None:
        """Hold the link until its remote closes it (as the hub does)."""
        await self.links.put(link)
        with contextlib.suppress(GravError):
            while True:
                await link.recv()

    @property
    def url(self) -> str:
        return self.transport.endpoints()[0]

    async def silent(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A socket that connects and does not ask for the upgrade."""
        port = int(self.url.rsplit(":", 1)[1].split("/")[0])
        return await asyncio.open_connection("127.0.0.1", port)

    async def dial_until_upgraded(self) -> Link:
        """Dial until the listener has seen a close and makes room (it learns of it on a read)."""
        async with asyncio.timeout(5):
            while True:
                try:
                    return await self.transport.dial(self.url, timeout=5)
                except TransportError:
                    await asyncio.sleep(0)  # the server's next read tells it: retry


@pytest.fixture
async def listener() -> AsyncIterator[_Listener]:
    listening = _Listener()
    await listening.transport.start(listening.on_link)
    yield listening
    await listening.transport.stop()


async def test_a_newcomer_past_the_bound_evicts_the_oldest_silent_socket(
    listener: _Listener, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three silent sockets fill three upgrade slots: a dial still upgrades, and the oldest
    silent socket is answered 503 and dropped (counted)."""
    monkeypatch.setattr(websocket_gate, "SILENCE", 0.0)  # silent at once, not after a second
    silent = [await listener.silent() for _ in range(CAP)]
    link = await listener.transport.dial(listener.url, timeout=5)
    assert (await listener.links.get()).initiator is False
    oldest = silent[0]
    async with asyncio.timeout(5):
        answer = await oldest[0].read()
    assert answer.startswith(b"HTTP/1.1 503")
    assert b"too many connections (3)" in answer
    assert listener.transport.connections_refused == 1
    await link.close()
    for _, writer in silent:
        writer.close()


async def test_when_every_upgrade_in_flight_is_talking_a_newcomer_gets_503(
    listener: _Listener, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three sockets that sent part of a request fill the slots: a dial is refused with HTTP 503
    at once and counted; when one of them closes, a dial is upgraded."""
    monkeypatch.setattr(websocket_gate, "SILENCE", 0.0)  # only talking keeps a socket in
    talking = [await listener.silent() for _ in range(CAP)]
    for _, writer in talking:
        writer.write(b"GET /meta/message HTTP/1.1\r\n")  # and nothing more
        await writer.drain()
    gate = listener.transport._gate
    async with asyncio.timeout(5):
        while True:  # the listener reads the partial requests on its next turns: re-check
            if not gate.silent:
                break
            await asyncio.sleep(0)
    with pytest.raises(TransportError, match="HTTP 503: too many connections"):
        await listener.transport.dial(listener.url, timeout=5)
    assert listener.transport.connections_refused >= 1
    talking.pop()[1].close()
    link = await listener.dial_until_upgraded()
    assert (await listener.links.get()).initiator is False
    await link.close()
    for _, writer in talking:
        writer.close()


async def test_links_past_the_cap_are_refused_and_room_is_made_when_one_ends(
    listener: _Listener,
) -> None:
    """Three open links fill the cap: the next dial gets 503; when one link ends, a dial is
    upgraded again."""
    dialled = [await listener.transport.dial(listener.url, timeout=5) for _ in range(CAP)]
    for _ in range(CAP):
        await listener.links.get()
    with pytest.raises(TransportError, match="HTTP 503"):
        await listener.transport.dial(listener.url, timeout=5)
    assert listener.transport.connections_refused >= 1
    await dialled.pop().close()
    dialled.append(await listener.dial_until_upgraded())
    assert (await listener.links.get()).initiator is False
    for link in dialled:
        await link.close()


async def _ask_upgrade(port: int) -> tuple[bytes, asyncio.StreamWriter]:
    """A raw upgrade request; the status line answered, and the socket (kept open)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"GET /meta/message HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    async with asyncio.timeout(5):
        return await reader.readline(), writer


async def test_upgrades_completing_together_never_take_the_links_past_the_cap() -> None:
    """With a cap of 2 links and 8 upgrades in flight at once, exactly 2 are upgraded and the
    others answered 503 (the link is counted when its upgrade is accepted, not later)."""
    transport = WebSocketTransport("127.0.0.1", 0, max_connections=2, max_upgrading=8)
    held: asyncio.Queue[Link] = asyncio.Queue()

    async def hold(link: Link) -> None:
        await held.put(link)
        with contextlib.suppress(GravError):
            while True:
                await link.recv()

    await transport.start(hold)
    try:
        port = int(transport.endpoints()[0].rsplit(":", 1)[1].split("/")[0])
        answers = await asyncio.gather(*(_ask_upgrade(port) for _ in range(8)))
        statuses = sorted(int(line.split()[1]) for line, _ in answers)
        assert statuses == [101, 101] + [503] * 6
        for _, writer in answers:
            writer.close()
    finally:
        await transport.stop()


async def test_the_pacer_lets_per_turn_upgrades_on_per_loop_turn_in_order() -> None:
    """Five upgrades asking at once with room for two per turn: two go on in the first turn,
    the others in later turns, in the order they asked."""
    pacer = websocket_gate.UpgradePacer(2)
    passed: list[int] = []

    async def upgrade(i: int) -> None:
        await pacer.wait_turn()
        passed.append(i)

    tasks = [asyncio.ensure_future(upgrade(i)) for i in range(5)]
    await asyncio.sleep(0)  # one loop turn: every task asked once
    assert passed == [0, 1]
    async with asyncio.timeout(5):
        await asyncio.gather(*tasks)
    assert passed == [0, 1, 2, 3, 4]
    assert pacer.waited == 3

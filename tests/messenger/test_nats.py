"""NatsMessenger against a real nats-server: conformance, outage, and the nats_server helper."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable

import pytest

from gravpy.errors import MessengerClosed, PublishFailed
from gravpy.messenger import Messenger, NatsMessenger, open_messenger
from gravpy.testing import NatsServer, check_messenger, nats_server


def _setter(event: asyncio.Event) -> Callable[[], Awaitable[None]]:
    async def callback() -> None:
        event.set()

    return callback


async def test_nats_messenger_passes_the_conformance_check(nats_server: NatsServer) -> None:
    """The NATS backend passes every step of check_messenger, NoResponders included."""

    async def factory() -> Messenger:
        return await open_messenger(nats_server.url)

    await check_messenger(factory)


async def test_nats_server_listens_on_loopback_and_stops_by_its_handle() -> None:
    """nats_server() accepts connections on 127.0.0.1 while open and none after it exits."""
    async with nats_server() as server:
        assert server.host == "127.0.0.1"
        assert server.port > 0
        assert server.running
        _, writer = await asyncio.open_connection(server.host, server.port)
        writer.close()
        await writer.wait_closed()
        port = server.port
    assert not server.running
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2.0).close()


async def test_publish_during_an_outage_is_buffered_and_delivered_after_reconnect(
    nats_server: NatsServer,
) -> None:
    """Messages published while the server is down arrive, in order, once it is back."""
    down = asyncio.Event()
    async with await NatsMessenger.connect(
        nats_server.url, reconnect_time_wait=0.05, disconnected_cb=_setter(down)
    ) as m:
        q: asyncio.Queue[bytes] = asyncio.Queue()
        await m.stream("outage.events", q)
        await m.publish("outage.events", b"before")
        assert await q.get() == b"before"
        await nats_server.stop()
        await down.wait()  # the client noticed the closed socket
        for i in range(20):
            await m.publish("outage.events", b"during%d" % i)
        await nats_server.restart()
        got = [await q.get() for _ in range(20)]
        assert got == [b"during%d" % i for i in range(20)]
        await m.publish("outage.events", b"after")
        assert await q.get() == b"after"


async def test_publish_past_the_outage_buffer_raises_publish_failed(
    nats_server: NatsServer,
) -> None:
    """When the reconnect buffer is full, publish raises PublishFailed instead of losing data."""
    down = asyncio.Event()
    async with await NatsMessenger.connect(
        nats_server.url, reconnect_time_wait=0.05, pending_size=1024, disconnected_cb=_setter(down)
    ) as m:
        q: asyncio.Queue[bytes] = asyncio.Queue()
        await m.stream("outage.small", q)
        await nats_server.stop()
        await down.wait()
        sent: list[bytes] = []
        refused: PublishFailed | None = None
        for i in range(100):
            data = b"%03d" % i + b"x" * 97
            try:
                await m.publish("outage.small", data)
            except PublishFailed as exc:
                refused = exc
                break
            sent.append(data)
        assert refused is not None
        assert "buffer is full" in str(refused)
        assert 0 < len(sent) < 100
        await nats_server.restart()
        got = [await q.get() for _ in sent]
        assert got == sent


async def test_close_while_requesting_raises_messenger_closed_for_later_calls(
    nats_server: NatsServer,
) -> None:
    """After close(), every call on a NATS messenger raises MessengerClosed."""
    m = await open_messenger(nats_server.url)
    await m.close()
    with pytest.raises(MessengerClosed):
        await m.publish("x.y", b"")

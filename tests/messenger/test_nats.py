"""NatsMessenger against a real nats-server: conformance, outage, and the nats_server helper."""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import Awaitable, Callable

import pytest

from gravpy.errors import MessengerClosed, PublishFailed, TransportError, UsageError
from gravpy.messenger import Messenger, NatsMessenger, open_messenger
from gravpy.testing import NatsServer, check_messenger, nats_server


def _setter(event: asyncio.Event) -> Callable[[], Awaitable[None]]:
    async def callback() -> None:
        event.set()

    return callback


async def _first_of(*events: asyncio.Event) -> None:
    waiters = [asyncio.create_task(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)


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


async def test_connecting_to_a_dead_port_raises_transport_error_within_the_connect_timeout() -> (
    None
):
    """open_messenger("nats://...") on a port nobody listens on raises TransportError, not hangs."""
    async with nats_server() as server:
        url = server.url
    with pytest.raises(TransportError, match=re.escape(f"connect to {url}")) as caught:
        async with asyncio.timeout(10.0):  # the hang guard: connect_timeout=1.0 must end it first
            await open_messenger(url, connect_timeout=1.0)
    assert caught.value.__cause__ is not None


async def test_after_the_first_connect_a_messenger_redials_for_as_long_as_it_takes(
    nats_server: NatsServer,
) -> None:
    """The limit on first-connect attempts does not carry over: an outage outlasting many failed
    redials still ends in a reconnect."""
    failures = 0
    enough = asyncio.Event()
    back = asyncio.Event()
    gave_up = asyncio.Event()

    async def count_failures(exc: Exception) -> None:
        nonlocal failures
        failures += 1
        if failures >= 5:
            enough.set()

    async with await NatsMessenger.connect(
        nats_server.url,
        reconnect_time_wait=0.02,
        error_cb=count_failures,
        reconnected_cb=_setter(back),
        closed_cb=_setter(gave_up),
    ) as m:
        await nats_server.stop()
        await _first_of(enough, gave_up)  # five refused redials, more than a first connect makes
        assert not gave_up.is_set(), "the client gave up redialling and closed"
        await nats_server.restart()
        await _first_of(back, gave_up)
        assert back.is_set(), "the client gave up redialling and closed"
        q: asyncio.Queue[bytes] = asyncio.Queue()
        await m.stream("redial.events", q)
        await m.publish("redial.events", b"back")
        assert await q.get() == b"back"


async def test_an_unknown_nats_option_raises_usage_error_naming_it(nats_server: NatsServer) -> None:
    """open_messenger("nats://...", bogus_option=1) raises UsageError listing what is accepted."""
    with pytest.raises(UsageError, match=r"bogus_option.*accepted: .*reconnect_time_wait"):
        await open_messenger(nats_server.url, bogus_option=1)

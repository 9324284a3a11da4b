"""The in-process bus end to end, through Grav: Grav's own routing scenarios with its numbers,
bus-wide statistics, publish() backpressure, and what closing the bus ends."""

from __future__ import annotations

import asyncio

import pytest

from gravpy import Grav, Message
from gravpy.errors import PodDisconnected, UsageError
from gravpy.testing import MemoryNetwork, MemoryTransport
from tests._bus_helpers import recorder, settle, texts, until

# -- Grav's basic scenarios -----------------------------------------------------------------------


async def test_single_message_reaches_the_other_pod_exactly_once() -> None:
    """TestGravSingle: one pod sends one message, the other receives exactly one."""
    async with Grav() as g:
        p1 = g.connect()
        seen = recorder(p1)
        p2 = g.connect()
        p2.send(Message.new(data="hello"))
        await until(lambda: len(seen) == 1)
        await settle(g)
        assert texts(seen) == ["hello"]


async def test_sanity_ten_receivers_ten_messages_make_one_hundred() -> None:
    """TestGravSanity: 10 receivers and 10 messages give exactly 100 deliveries."""
    async with Grav() as g:
        count = 0

        def handler(msg: Message) -> None:
            nonlocal count
            count += 1

        for _ in range(10):
            g.connect().on(handler)
        sender = g.connect()
        for i in range(10):
            sender.send(Message.new(data=str(i)))
        await until(lambda: count == 100)
        await settle(g)
        assert count == 100
        assert g.statistics().delivered == 100


async def test_pod_never_receives_its_own_messages() -> None:
    """TestPodFilter: two pods share a counter, one sends 10, and only 10 (not 20) are counted."""
    async with Grav() as g:
        seen: list[Message] = []
        p1 = g.connect()
        p2 = g.connect()
        p1.on(seen.append)
        p2.on(seen.append)
        for i in range(10):
            p1.send(Message.new(data=str(i)))
        await until(lambda: len(seen) == 10)
        await settle(g)
        assert len(seen) == 10
        assert p1.statistics().received == 0
        assert p2.statistics().received == 10


# -- backpressure ----------------------------------------------------------------------------------


async def test_publish_applies_backpressure_so_nothing_is_lost() -> None:
    """publish() waits for room: 5,000 messages to a slow receiver with an inbox of 16 all arrive."""
    async with Grav() as g:
        slow = g.connect(inbox_limit=16)
        got: list[int] = []

        async def handler(msg: Message) -> None:
            await asyncio.sleep(0)
            got.append(int(msg.text()))

        slow.on(handler)
        sender = g.connect()
        for i in range(5000):
            await sender.publish(Message.new(data=str(i)))
        await until(lambda: len(got) == 5000)
        await settle(g)
        assert got == list(range(5000))
        assert slow.statistics().dropped_overflow == 0


async def test_send_without_backpressure_drops_at_a_small_inbox() -> None:
    """The contrast: send() never waits, so the same slow receiver drops (and counts) the excess."""
    async with Grav() as g:
        slow = g.connect(inbox_limit=16)

        async def handler(msg: Message) -> None:
            await asyncio.sleep(0)

        slow.on(handler)
        sender = g.connect()
        for i in range(5000):
            sender.send(Message.new(data=str(i)))
        await settle(g)
        s = slow.statistics()
        assert s.dropped_overflow == 5000 - 16
        assert s.handled == 16


# -- closing --------------------------------------------------------------------------------------


async def test_closing_grav_ends_every_wait_and_leaves_no_task() -> None:
    """Stopping the Grav ends pod waits, receipt waits and iterations, and cancels on_reply tasks."""
    async with Grav() as g:
        waiter = g.connect()
        requester = g.connect()
        recorder(g.connect())  # admits the request, never replies
        iterated = g.connect()
        owner_closed = g.connect()

        async def consume() -> list[Message]:
            return [m async for m in iterated]

        pod_wait = asyncio.create_task(waiter.wait_on(lambda m: m))
        reply_wait = asyncio.create_task(requester.send(Message.new("test.ask")).wait_on(print))
        requester.send(Message.new("test.ask")).on_reply(print)
        iteration = asyncio.create_task(consume())
        closed_wait = asyncio.create_task(owner_closed.wait_closed())
        await until(lambda: waiter.receiving and iterated.receiving)
        await asyncio.sleep(0)
    assert g.bus.closed
    with pytest.raises(PodDisconnected):
        await pod_wait
    with pytest.raises(PodDisconnected):
        await reply_wait
    assert await iteration == []
    await closed_wait  # the bus closing is not the pod's fault: no error
    assert all(p.closed for p in (waiter, requester, iterated, owner_closed))
    with pytest.raises(PodDisconnected):
        await waiter.wait_until(1.0, lambda m: m)
    with pytest.raises(UsageError):
        g.connect()


async def test_publish_is_not_held_by_a_pod_that_stopped_receiving() -> None:
    """A congested pod whose handler is removed no longer makes publish() wait."""
    async with Grav() as g:
        gate = asyncio.Event()

        async def stuck(msg: Message) -> None:
            await gate.wait()

        slow = g.connect(inbox_limit=10)
        slow.on(stuck)
        sender = g.connect()
        for _ in range(8):
            sender.send(Message.new("t.x", b""))
        assert g.bus.congestion.congested
        slow.on(None)
        assert not g.bus.congestion.congested
        async with asyncio.timeout(1):
            await sender.publish(Message.new("t.x", b""))
        gate.set()


# -- a message is sent once -----------------------------------------------------------------------


async def test_a_lone_node_with_a_transport_refuses_a_message_sent_again() -> None:
    """A node with a mesh but no link yet refuses the second send of a message (a UsageError
    naming its uuid, from any pod), and no pod gets it again: a peer linking later would drop it."""
    async with Grav(transport=MemoryTransport(MemoryNetwork())) as g:
        seen = recorder(g.connect())
        sender = g.connect()
        msg = Message.new("test.once", "1")
        sender.send(msg)
        with pytest.raises(UsageError, match=f"message {msg.uuid} was already sent.*Message.new"):
            sender.send(msg)
        with pytest.raises(UsageError, match=msg.uuid):
            g.connect().send(msg)
        sender.send(Message.new("test.once", "2"))
        await until(lambda: len(seen) == 2)
        await settle(g)
        assert texts(seen) == ["1", "2"]
        assert g.statistics().sent == 2


async def test_a_node_without_a_mesh_delivers_a_message_sent_twice_twice() -> None:
    """Without a transport nothing drops a copy, and the bus keeps no ids (docs/guarantees.md):
    the same message sent twice reaches a pod twice."""
    async with Grav() as g:
        seen = recorder(g.connect())
        sender = g.connect()
        msg = Message.new("test.twice", "1")
        sender.send(msg)
        sender.send(msg)
        await until(lambda: len(seen) == 2)
        await settle(g)
        assert texts(seen) == ["1", "1"]

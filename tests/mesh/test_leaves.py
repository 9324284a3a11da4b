"""Apps attached to nodes as leaves (gravpy.connect, gravpy.sync.connect)."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

import pytest

import gravpy
import gravpy.sync
from discovery.static import StaticDiscovery
from gravpy import Grav, Message
from gravpy.counters import PodStatistics
from gravpy.errors import PodDisconnected, TransportError, UsageError
from gravpy.mesh import PeerInfo
from transports.tcp import TcpTransport

from .conftest import FAST, NodeFactory, linked_to

T = TypeVar("T")

GUARD = 30.0 * float(os.environ.get("GRAVPY_TEST_SCALE", "1"))  # a hang guard, not a timing


def blocking_call(fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
    """Call ``fn(*args)`` in a daemon thread of its own (one that never returns cannot hold up the
    test's loop as a ``to_thread`` worker would); await the result."""
    done: Future[T] = Future()

    def run() -> None:
        try:
            done.set_result(fn(*args))
        except BaseException as exc:  # handed to the awaiting test
            done.set_exception(exc)

    threading.Thread(target=run, name="blocking-call", daemon=True).start()
    return asyncio.wrap_future(done)


async def two_nodes(node: NodeFactory, transport: str = "ws") -> tuple[Grav, Grav]:
    def options() -> dict[str, Any]:
        return {"transport": TcpTransport(host="127.0.0.1", port=0)} if transport == "tcp" else {}

    a = await node(**options())
    b = await node(discovery=[StaticDiscovery(a.endpoints())], **options())
    await a.wait_for(linked_to(b), timeout=5)
    return a, b


@pytest.mark.parametrize("transport", ["ws", "tcp"])
async def test_leaves_on_two_nodes_exchange_pubsub_and_requests(
    node: NodeFactory, transport: str
) -> None:
    """Two apps attached to two different nodes, over WebSocket or TCP (the frame sink and
    direct writes at both ends), get each other's messages and replies."""
    a, b = await two_nodes(node, transport)
    assert a.endpoints()[0].startswith("tcp://" if transport == "tcp" else "ws://")
    async with (
        gravpy.connect(a.endpoints()[0], hub_config=FAST) as left,
        gravpy.connect(b.endpoints()[0], hub_config=FAST) as right,
    ):
        got: list[Message] = []
        done = asyncio.Event()

        def on_news(msg: Message) -> None:
            got.append(msg)
            if len(got) == 10:
                done.set()

        listener = right.connect()
        listener.on_type("news.>", on_news)
        responder = right.connect()
        responder.on_type(
            "svc.upper", lambda m: responder.reply_to(m, Message.new("svc.r", m.text().upper()))
        )
        await left.wait_for(
            lambda ps: bool(ps) and {"news.>", "svc.upper"} <= set(ps[0].interests), 5
        )
        sender = left.connect()
        for i in range(10):
            sender.send(Message.new("news.item", str(i)))
        async with asyncio.timeout(5):
            await done.wait()
        assert [m.text() for m in got] == [str(i) for i in range(10)]
        reply = await sender.send(Message.new("svc.upper", "hi")).wait_until(5)
        assert reply.text() == "HI"


async def test_a_leafs_messages_reach_pods_on_every_node(node: NodeFactory) -> None:
    """A leaf attached to A reaches pods on A and on B, once each."""
    a, b = await two_nodes(node)
    seen: dict[str, list[bytes]] = {"a": [], "b": []}
    both = asyncio.Event()

    def recorder(name: str) -> gravpy.pod.Handler:
        def record(msg: Message) -> None:
            seen[name].append(msg.data)
            if all(seen.values()):
                both.set()

        return record

    a.connect().on_type("evt.>", recorder("a"))
    b.connect().on_type("evt.>", recorder("b"))
    await a.wait_for(linked_to(b, interest="evt.>"), timeout=5)
    async with gravpy.connect(a.endpoints()[0], hub_config=FAST) as leaf:
        await leaf.wait_for(lambda ps: bool(ps) and "evt.>" in ps[0].interests, 5)
        leaf.connect().send(Message.new("evt.x", b"hello"))
        async with asyncio.timeout(5):
            await both.wait()
    assert seen == {"a": [b"hello"], "b": [b"hello"]}


async def test_connect_to_nothing_raises_transport_error() -> None:
    """Attaching to an endpoint where nothing listens fails with TransportError, promptly."""
    with pytest.raises(TransportError):
        async with gravpy.connect("ws://127.0.0.1:1/meta/message", timeout=5):
            pass


async def test_sync_leaf_request_reply(node: NodeFactory) -> None:
    """gravpy.sync.connect gives blocking pods whose requests reach the mesh and get replies."""
    a = await node()
    responder = a.connect()
    responder.on_type(
        "svc.echo", lambda m: responder.reply_to(m, Message.new("svc.echo.r", m.data))
    )
    endpoint = a.endpoints()[0]

    def blocking_client() -> bytes:
        with gravpy.sync.connect(endpoint, hub_config=FAST) as g:
            pod = g.connect()
            assert "svc.echo" in g.peers()[0].interests  # connect waited for the node's interests
            receipt = pod.send(Message.new("svc.echo", b"sync hi"))
            assert (receipt.msg_type, receipt.no_responders) == ("svc.echo", False)
            assert pod.send(Message.new("nobody.wants", b"")).no_responders
            reply: Message = receipt.wait_until(5.0)
            return reply.data

    assert await asyncio.to_thread(blocking_client) == b"sync hi"


async def test_sync_leaf_collects_several_replies(node: NodeFactory) -> None:
    """SyncReceipt.replies(max=2) returns the answers of two responders on the node."""
    a = await node()
    for name in (b"one", b"two"):
        responder = a.connect()
        responder.on_type(
            "svc.many",
            lambda m, r=responder, n=name: r.reply_to(m, Message.new("svc.many.r", n)),
        )
    endpoint = a.endpoints()[0]

    def blocking_client() -> list[bytes]:
        with gravpy.sync.connect(endpoint, hub_config=FAST) as g:
            receipt = g.connect().send(Message.new("svc.many", b"?"))
            return sorted(m.data for m in receipt.replies(timeout=10.0, max=2))

    assert await asyncio.to_thread(blocking_client) == [b"one", b"two"]


# -- closing: no wait outlives its node -----------------------------------------------------------


async def test_a_leafs_wait_for_ends_when_it_stops(node: NodeFactory) -> None:
    """Grav.wait_for raises PodDisconnected when the node stops, whether it was waiting then or
    starts waiting after, long before its own timeout."""
    a = await node()
    leaf = gravpy.connect(a.endpoints()[0], hub_config=FAST)
    await leaf.start()
    checked = asyncio.Event()

    def never(peers: list[PeerInfo]) -> bool:
        checked.set()  # wait_for checks, then waits for a change, in the same step
        return False

    waiting = asyncio.create_task(leaf.wait_for(never, GUARD * 10))
    await checked.wait()
    await leaf.stop()
    async with asyncio.timeout(GUARD):
        with pytest.raises(PodDisconnected, match="the node stopped"):
            await waiting
        with pytest.raises(PodDisconnected, match="the node stopped"):
            await leaf.wait_for(never, GUARD * 10)


@pytest.mark.parametrize("timeout", [None, GUARD * 10], ids=["no-timeout", "timeout"])
async def test_sync_close_ends_a_wait_for_blocked_in_another_thread(
    node: NodeFactory, timeout: float | None
) -> None:
    """SyncGrav.close() ends a wait_for blocked in another thread with PodDisconnected."""
    a = await node()
    g = await asyncio.to_thread(gravpy.sync.connect, a.endpoints()[0], hub_config=FAST)
    checked = threading.Event()

    def never(peers: list[PeerInfo]) -> bool:
        checked.set()  # wait_for checks, then waits for a change, in the same step
        return False

    waiting = blocking_call(g.wait_for, never, timeout)
    assert await asyncio.to_thread(checked.wait, GUARD)
    await asyncio.to_thread(g.close)
    async with asyncio.timeout(GUARD):
        with pytest.raises(PodDisconnected):
            await waiting


async def test_sync_close_ends_a_receive_blocked_in_another_thread(node: NodeFactory) -> None:
    """SyncGrav.close() ends a receive(None) blocked in another thread with PodDisconnected
    (not StopAsyncIteration)."""
    a = await node()
    g = await asyncio.to_thread(gravpy.sync.connect, a.endpoints()[0], hub_config=FAST)
    pod = await asyncio.to_thread(g.connect)
    await asyncio.to_thread(pod.filter_type, "sync.block")
    receiving = blocking_call(pod.receive, None)
    # the pod receives (and the leaf advertises it) once receive waits for a message
    await a.wait_for(lambda peers: any("sync.block" in p.interests for p in peers), GUARD)
    await asyncio.to_thread(g.close)
    async with asyncio.timeout(GUARD):
        with pytest.raises(PodDisconnected, match="the bus closed"):
            await receiving


async def test_sync_close_ends_a_call_that_stopping_the_node_does_not(node: NodeFactory) -> None:
    """A blocking call that stopping the node does not end (a wait function that never returns)
    is cancelled by SyncGrav.close(), and its caller gets PodDisconnected."""
    a = await node()
    responder = a.connect()
    responder.on_type("svc.echo", lambda m: responder.reply_to(m, Message.new("svc.r", b"")))
    g = await asyncio.to_thread(gravpy.sync.connect, a.endpoints()[0], hub_config=FAST)
    pod = await asyncio.to_thread(g.connect)
    receipt = await asyncio.to_thread(pod.send, Message.new("svc.echo", b""))
    looking = threading.Event()

    async def hold(reply: Message) -> None:
        looking.set()
        await asyncio.Event().wait()  # never set: only a cancellation ends this wait

    waiting = blocking_call(receipt.wait_until, None, hold)
    assert await asyncio.to_thread(looking.wait, GUARD)
    await asyncio.to_thread(g.close)
    async with asyncio.timeout(GUARD):
        with pytest.raises(PodDisconnected, match="the node is closed"):
            await waiting


async def test_sync_calls_after_close_raise_as_on_a_stopped_grav(node: NodeFactory) -> None:
    """After SyncGrav.close() pods and waits raise PodDisconnected, connect() UsageError (as
    Grav.connect after stop), while peers() and statistics() still answer."""
    a = await node()

    def closed_client() -> None:
        g = gravpy.sync.connect(a.endpoints()[0], hub_config=FAST)
        pod = g.connect()
        g.close()
        g.close()  # a second close is a no-op
        with pytest.raises(PodDisconnected, match="the bus closed"):
            pod.send(Message.new("sync.x", b""))
        with pytest.raises(PodDisconnected):
            pod.publish(Message.new("sync.x", b""))
        with pytest.raises(PodDisconnected):
            pod.receive(None)
        with pytest.raises(PodDisconnected):
            g.wait_for(lambda peers: False, None)
        with pytest.raises(UsageError, match="the bus is closed"):
            g.connect()
        assert g.peers() == []
        assert isinstance(pod.statistics(), PodStatistics)

    await asyncio.to_thread(closed_client)


async def test_sync_calls_after_close_answer_what_needs_no_wait(node: NodeFactory) -> None:
    """After SyncGrav.close() a call answers as on a stopped Grav: a bad timeout is a
    UsageError, a wait_for predicate that holds returns; a wait raises PodDisconnected, for a
    reply that came before the close too (the pod is closed)."""
    a = await node()
    responder = a.connect()
    responder.on_type("svc.echo", lambda m: responder.reply_to(m, Message.new("svc.r", m.data)))

    def closed_client() -> None:
        g = gravpy.sync.connect(a.endpoints()[0], hub_config=FAST)
        pod = g.connect()
        first = pod.send(Message.new("svc.echo", b"first"))
        second = pod.send(Message.new("svc.echo", b"second"))
        second.wait_until(GUARD)  # (the first reply came before it, on the same link)
        g.close()
        with pytest.raises(PodDisconnected):
            first.wait_until(1.0)
        with pytest.raises(PodDisconnected):
            pod.send(Message.new("svc.echo", b"late")).wait_until(1.0)
        with pytest.raises(UsageError, match="timeout"):
            pod.wait_until(-1, lambda m: m)
        assert g.wait_for(lambda peers: True, None) == []
        with pytest.raises(PodDisconnected):
            g.wait_for(lambda peers: False, 1.0)

    await asyncio.to_thread(closed_client)

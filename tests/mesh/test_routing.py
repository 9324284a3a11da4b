"""Routing across real nodes: full mesh, one hop, interests, replies, order, no responders."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from discovery.static import StaticDiscovery
from gravpy import Grav, Message, Pod
from gravpy.errors import NoResponders
from gravpy.mesh import HubConfig
from gravpy.mesh.routing import SEEN_LIMIT
from gravpy.plugins import Transport
from gravpy.proto import ProtocolConfig
from tests._bus_helpers import until
from transports.http import HttpTransport
from transports.tcp import TcpTransport
from transports.websocket import WebSocketTransport

from .conftest import NodeFactory, linked_to


class Counter:
    """Counts messages a pod receives and lets a test wait for a total."""

    def __init__(self, pod: Pod, pattern: str | None = None) -> None:
        self.seen: list[Message] = []
        self._target = 0
        self._done = asyncio.Event()
        if pattern is None:
            pod.on(self._on)
        else:
            pod.on_type(pattern, self._on)

    def _on(self, msg: Message) -> None:
        self.seen.append(msg)
        if len(self.seen) >= self._target:
            self._done.set()

    async def wait(self, total: int) -> None:
        self._target = total
        if len(self.seen) < total:
            self._done.clear()
            async with asyncio.timeout(10):
                await self._done.wait()


async def mesh_of_three(node: NodeFactory) -> tuple[Grav, Grav, Grav]:
    a = await node()
    b = await node(discovery=[StaticDiscovery(a.endpoints())])
    c = await node(discovery=[StaticDiscovery(a.endpoints() + b.endpoints())])
    await a.wait_for(linked_to(b, c), timeout=5)
    await b.wait_for(linked_to(a, c), timeout=5)
    return a, b, c


async def test_full_mesh_delivers_exactly_once_per_pod(node: NodeFactory) -> None:
    """3 nodes, 1,000 messages from A: every receiving pod on every node counts exactly 1,000."""
    a, b, c = await mesh_of_three(node)
    counters = [Counter(n.connect(), "bench.>") for n in (a, b, b, c)]
    await a.wait_for(linked_to(b, c, interest="bench.>"), timeout=5)
    sender = a.connect()
    for i in range(1000):
        await sender.publish(Message.new("bench.msg", str(i)))
    for counter in counters:
        await counter.wait(1000)
    for counter in counters:
        assert len(counter.seen) == 1000
    link_ab = next(p for p in a.peers() if p.uuid == b.node_uuid)
    link_ba = next(p for p in b.peers() if p.uuid == a.node_uuid)
    assert link_ab.messages_out == 1000  # one copy per link, however many pods want it
    assert link_ba.messages_in == 1000
    assert b.hub is not None
    assert b.hub.duplicates == 0


async def test_partial_static_lists_converge_by_gossip(node: NodeFactory) -> None:
    """A lists B, C lists B: A and C still link, and A's messages reach C."""
    b = await node()
    a = await node(discovery=[StaticDiscovery(b.endpoints())])
    c = await node(discovery=[StaticDiscovery(b.endpoints())])
    await a.wait_for(linked_to(b, c), timeout=5)
    counter = Counter(c.connect(), "chain.>")
    await a.wait_for(linked_to(c, interest="chain.>"), timeout=5)
    a.connect().send(Message.new("chain.hello", b"from A"))
    await counter.wait(1)
    assert counter.seen[0].data == b"from A"


async def test_messages_cross_only_to_interested_nodes(node: NodeFactory) -> None:
    """A node only sends a peer the types its pods admit: per-link counters show it."""
    a = await node()
    b = await node(discovery=[StaticDiscovery(a.endpoints())])
    counter = Counter(b.connect(), "sensor.>")
    await a.wait_for(linked_to(b, interest="sensor.>"), timeout=5)
    sender = a.connect()
    for i in range(100):
        sender.send(Message.new("sensor.kitchen.temp", str(i)))
        sender.send(Message.new("other.thing", str(i)))
    await counter.wait(100)
    link = next(p for p in a.peers() if p.uuid == b.node_uuid)
    assert link.messages_out == 100
    assert {m.type for m in counter.seen} == {"sensor.kitchen.temp"}


async def test_reply_goes_only_to_the_asking_node(node: NodeFactory) -> None:
    """C answers A's request; B, which admits every type, never gets the reply on its link."""
    a, b, c = await mesh_of_three(node)
    responder = c.connect()
    responder.on_type(
        "svc.echo", lambda m: responder.reply_to(m, Message.new("svc.echo.reply", m.data))
    )
    Counter(b.connect())  # B admits everything
    await a.wait_for(linked_to(c, interest="svc.echo"), timeout=5)
    await c.wait_for(linked_to(b, interest=">"), timeout=5)
    reply = await a.connect().send(Message.new("svc.echo", b"ping")).wait_until(5)
    assert reply.data == b"ping"
    c_to_b = next(p for p in c.peers() if p.uuid == b.node_uuid)
    c_to_a = next(p for p in c.peers() if p.uuid == a.node_uuid)
    assert c_to_a.messages_out == 1
    assert c_to_b.messages_out == 0


async def test_a_slow_reply_finds_its_asker_after_the_seen_set_forgot_the_request(
    node: NodeFactory,
) -> None:
    """C answers A's request only after a seen-set's worth of other messages: the reply still
    goes to A alone, which does not admit its type, and not by its type to B, which does."""
    a, b, c = await mesh_of_three(node)
    held: list[Message] = []
    responder = c.connect()
    responder.on_type("svc.slow", held.append)
    watcher = Counter(b.connect(), "svc.slow.reply")
    await a.wait_for(linked_to(c, interest="svc.slow"), timeout=5)
    await c.wait_for(linked_to(b, interest="svc.slow.reply"), timeout=5)
    asker = a.connect()
    asker.on_type("other", lambda _: None)  # A does not admit the reply's type
    receipt = asker.send(Message.new("svc.slow", b"ping"))
    await until(lambda: bool(held))
    noise = c.connect()
    for i in range(SEEN_LIMIT):  # nobody wants them; C's seen-set holds at most this many
        noise.send(Message.new("noise.x"))
        if i % 4096 == 0:
            await asyncio.sleep(0)
    assert not c.hub.router.seen(held[0].uuid)  # forgotten
    answer = responder.reply_to(held[0], Message.new("svc.slow.reply", b"pong"))
    assert not answer.no_responders
    assert (await receipt.wait_until(5)).data == b"pong"
    assert watcher.seen == []
    assert c.statistics().unclaimed_replies == 0  # C kept no copy of its own answer


async def test_no_responders_across_the_mesh_fails_at_once(node: NodeFactory) -> None:
    """A request whose type no pod on any node admits fails with NoResponders, not a timeout."""
    a = await node()
    b = await node(discovery=[StaticDiscovery(a.endpoints())])
    Counter(b.connect(), "svc.known")
    await a.wait_for(linked_to(b, interest="svc.known"), timeout=5)
    receipt = a.connect().send(Message.new("svc.unknown", b""))
    assert receipt.no_responders
    async with asyncio.timeout(1):  # well before the 30 s the request allows
        with pytest.raises(NoResponders):
            await receipt.wait_until(30)


def _link(kind: str) -> Transport:
    """The transport two nodes link over. ``tcp`` writes the first message of a loop turn at once
    when the link is idle; ``tcp-tight`` has a write buffer of one byte, so such a write often
    finds no room and leaves its frames to the writer, behind which the rest of a burst queues."""
    if kind == "ws":
        return WebSocketTransport(host="127.0.0.1", port=0)
    return TcpTransport(host="127.0.0.1", port=0, write_limit=1 if kind == "tcp-tight" else 1 << 16)


LINKS = pytest.mark.parametrize("link", ["ws", "tcp", "tcp-tight"])


async def _pair(node: NodeFactory, link: str, **options: Any) -> tuple[Grav, Grav]:
    a = await node(transport=_link(link), **options)
    b = await node(transport=_link(link), discovery=[StaticDiscovery(a.endpoints())], **options)
    return a, b


@LINKS
async def test_order_is_kept_across_the_mesh(node: NodeFactory, link: str) -> None:
    """5,000 messages from one pod arrive at a remote pod in send order."""
    a, b = await _pair(node, link)
    counter = Counter(b.connect(), "seq.>")
    await a.wait_for(linked_to(b, interest="seq.>"), timeout=5)
    sender = a.connect()
    for i in range(5000):
        await sender.publish(Message.new("seq.n", str(i)))
    await counter.wait(5000)
    assert [int(m.text()) for m in counter.seen] == list(range(5000))


@LINKS
async def test_request_reply_across_nodes_many_times(node: NodeFactory, link: str) -> None:
    """200 sequential and 200 concurrent requests across two nodes are all answered."""
    a, b = await _pair(node, link)
    responder = b.connect()
    responder.on_type("svc.add", lambda m: responder.reply_to(m, Message.new("svc.sum", m.data)))
    await a.wait_for(linked_to(b, interest="svc.add"), timeout=5)
    asker = a.connect()
    for i in range(200):
        reply = await asker.send(Message.new("svc.add", str(i))).wait_until(5)
        assert reply.text() == str(i)
    replies = await asyncio.gather(
        *(asker.send(Message.new("svc.add", str(i))).wait_until(5) for i in range(200))
    )
    assert sorted(int(r.text()) for r in replies) == list(range(200))


@LINKS
async def test_publish_backpressure_reaches_across_the_mesh(node: NodeFactory, link: str) -> None:
    """A remote pod slower than the publisher, with a small inbox, still loses nothing."""
    # the link waits for a slow pod until its waits outgrow its free running by half of
    # dead_after (then the pod is set aside and drops): this burst must fit in that
    patient = HubConfig(protocol=ProtocolConfig(ping_interval=1.0, dead_after=30.0))
    a, b = await _pair(node, link, hub_config=patient)
    got: list[int] = []
    done = asyncio.Event()

    async def slow(msg: Message) -> None:
        await asyncio.sleep(0)
        got.append(int(msg.text()))
        if len(got) == 20_000:
            done.set()

    pod = b.connect(inbox_limit=1000)
    pod.on_type("flow.>", slow)
    await a.wait_for(linked_to(b, interest="flow.>"), timeout=5)
    sender = a.connect()
    for i in range(20_000):
        await sender.publish(Message.new("flow.n", str(i)))
    async with asyncio.timeout(30):
        await done.wait()
    assert got == list(range(20_000))
    assert pod.statistics().dropped_overflow == 0


@pytest.mark.parametrize("link", ["tcp", "tcp-tight"])
async def test_large_messages_one_per_loop_turn_keep_order_while_the_link_backs_up(
    node: NodeFactory, link: str
) -> None:
    """Messages that each go straight out (one per loop turn) until the remote stops reading and the
    socket fills, then queue behind the writer, all arrive once and in order."""
    # a held pod is set aside after half of dead_after: give the test time to open the gate
    patient = HubConfig(protocol=ProtocolConfig(ping_interval=1.0, dead_after=30.0))
    a, b = await _pair(node, link, hub_config=patient)
    gate, done = asyncio.Event(), asyncio.Event()
    got: list[int] = []

    async def held(msg: Message) -> None:
        await gate.wait()
        got.append(int.from_bytes(msg.data[:4], "big"))
        if len(got) == 400:
            done.set()

    pod = b.connect(inbox_limit=10)  # full at once: b stops reading, and the sockets fill
    pod.on_type("bulk.>", held)
    await a.wait_for(linked_to(b, interest="bulk.>"), timeout=5)
    sender = a.connect()
    filler = bytes(32 << 10)

    async def send_all() -> None:
        for i in range(400):
            await sender.publish(Message.new("bulk.n", i.to_bytes(4, "big") + filler))
            await asyncio.sleep(0)  # the next one is again the first of its loop turn

    sending = asyncio.create_task(send_all())
    await until(lambda: any(p.queued for p in a.peers()))  # the socket is full: a queue forms
    gate.set()
    async with asyncio.timeout(30):
        await sending
        await done.wait()
    assert got == list(range(400))
    assert pod.statistics().dropped_overflow == 0


@LINKS
async def test_a_stuck_remote_pod_does_not_hold_up_the_others(node: NodeFactory, link: str) -> None:
    """A pod that never finishes drops by its policy (counted); its neighbours get everything."""
    a, b = await _pair(node, link)
    gate = asyncio.Event()

    async def stuck(msg: Message) -> None:
        await gate.wait()

    stuck_pod = b.connect(inbox_limit=100)
    stuck_pod.on_type("jam.>", stuck)
    counter = Counter(b.connect(), "jam.>")
    await a.wait_for(linked_to(b, interest="jam.>"), timeout=5)
    sender = a.connect()
    for i in range(3000):
        sender.send(Message.new("jam.n", str(i)))
    await counter.wait(3000)
    assert [int(m.text()) for m in counter.seen] == list(range(3000))
    assert stuck_pod.statistics().dropped_overflow > 0
    gate.set()


async def test_peers_on_different_transports_share_a_mesh_through_a_dual_node(
    node: NodeFactory,
) -> None:
    """An HTTP-only node and a WebSocket-only node reach each other through one listening on both."""
    dual = await node(
        transport=[
            WebSocketTransport(host="127.0.0.1", port=0),
            HttpTransport(host="127.0.0.1", port=0),
        ]
    )
    ws_url = next(e for e in dual.endpoints() if e.startswith("ws://"))
    http_url = next(e for e in dual.endpoints() if e.startswith("http://"))
    x = await node(transport=HttpTransport(host="127.0.0.1", port=0))
    y = await node()  # WebSocket only
    await x.connect_endpoint(http_url)
    await y.connect_endpoint(ws_url)
    counter = Counter(y.connect(), "cross.>")
    responder = x.connect()
    responder.on_type("cross.ask", lambda m: responder.reply_to(m, Message.new("cross.r", b"x")))
    await x.wait_for(linked_to(dual, interest="cross.>"), timeout=5)
    await y.wait_for(linked_to(dual, interest="cross.ask"), timeout=5)
    assert {p.uuid for p in x.peers()} == {dual.node_uuid}  # no direct link is possible
    x.connect().send(Message.new("cross.hello", b"from http"))
    await counter.wait(1)
    assert counter.seen[0].data == b"from http"
    reply = await y.connect().send(Message.new("cross.ask", b"")).wait_until(5)
    assert reply.data == b"x"
    assert dual.hub is not None
    assert dual.hub.duplicates == 0

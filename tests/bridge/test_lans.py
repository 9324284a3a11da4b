"""End to end: two meshes of real gravd processes bridged through a real two-server NATS cluster."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Any

import nats
import pytest

import gravpy
from gravpy import Message
from gravpy.errors import NoResponders
from gravpy.filter import Pattern
from gravpy.grav import Grav
from gravpy.pod import Pod
from gravpy.testing.gravd import Gravd
from tests.bridge.lans import Lan, bridge_of, bridging_gravd, exporting, subscribed, two_lans
from tests.bridge.nats_proc import NatsServer

pytestmark = pytest.mark.timeout(90)
N = 10_000


class Sink:
    """A pod's received ``stream.*`` messages, as integers, with an event per ``stream.end``."""

    def __init__(self, pod: Pod) -> None:
        self.got: list[int] = []
        self.ends: asyncio.Queue[str] = asyncio.Queue()
        self.ends_seen = 0
        pod.on_type("stream.*", self._on)

    def _on(self, msg: Message) -> None:
        if msg.type == "stream.end":
            self.ends_seen += 1
            self.ends.put_nowait(msg.text())
        else:
            self.got.append(int(msg.data))


async def stream(pod: Pod, numbers: range, end: str) -> None:
    for i in numbers:
        await pod.publish(Message.new("stream.n", str(i).encode()))
    await pod.publish(Message.new("stream.end", end))


async def attach(stack: AsyncExitStack, lan: Lan) -> Grav:
    return await stack.enter_async_context(gravpy.connect(lan.edge.endpoint))


async def test_stream_crosses_once_in_order_and_a_second_bridge_adds_no_copy(
    nats_pair: list[NatsServer],
) -> None:
    """10,000 messages from LAN 1 reach a subscriber on LAN 2 exactly once and in order, and a
    second bridging gravd on LAN 1 adds no duplicate."""
    s1, s2 = nats_pair
    async with two_lans((s1.url, s2.url)) as (lan1, lan2), AsyncExitStack() as stack:
        sink = Sink((await attach(stack, lan2)).connect())
        sender = (await attach(stack, lan1)).connect()
        await lan1.bridge.wait_http(exporting("stream.n"))
        await lan1.edge.wait_interest("stream.n")
        async with asyncio.timeout(60):
            await stream(sender, range(N), "first")
            assert await sink.ends.get() == "first"
        assert sink.got == list(range(N))
        second = await bridging_gravd(stack, "lan1", s1.url, "--peer", lan1.bridge.endpoint)
        await second.wait_http(lambda n: bridge_of(n)["state"] == "connected")
        await second.wait_http(lambda n: "stream.*" in bridge_of(n)["remote_wants"])
        await lan1.edge.wait_peers(2)
        async with asyncio.timeout(30):
            await stream(sender, range(N, N + 2000), "second")
            assert await sink.ends.get() == "second"
        assert sink.got == list(range(N + 2000))
        exporters = [bridge_of(await g.node())["exporter"] for g in (lan1.bridge, second)]
        assert sorted(exporters) == [False, True]


async def test_requests_cross_both_ways(nats_pair: list[NatsServer]) -> None:
    """A request from either LAN is answered by a responder on the other, only to its asker; a
    type nobody anywhere admits raises NoResponders at once."""
    s1, s2 = nats_pair
    async with two_lans((s1.url, s2.url)) as (lan1, lan2), AsyncExitStack() as stack:
        await requests_cross(
            stack, lan1, lan2, {lan1.mesh: [lan1.bridge], lan2.mesh: [lan2.bridge]}
        )


async def test_requests_cross_both_ways_with_a_standby_bridge_in_each_lan(
    nats_pair: list[NatsServer],
) -> None:
    """With a second (standby) bridging gravd in each LAN, requests still cross both ways to
    their asker only (a standby on the asking and on the answering side), and exactly one bridge
    of each LAN is active."""
    s1, s2 = nats_pair
    async with two_lans((s1.url, s2.url)) as (lan1, lan2), AsyncExitStack() as stack:
        bridges = {}
        for lan, url in ((lan1, s1.url), (lan2, s2.url)):
            standby = await bridging_gravd(stack, lan.mesh, url, "--peer", lan.bridge.endpoint)
            await standby.wait_http(lambda n: bridge_of(n)["ready"])
            await lan.edge.wait_peers(2)
            bridges[lan.mesh] = [lan.bridge, standby]
        await requests_cross(stack, lan1, lan2, bridges)
        for mesh, nodes in bridges.items():
            roles = [bridge_of(await g.node())["exporter"] for g in nodes]
            assert sorted(roles) == [False, True], (mesh, roles)


async def requests_cross(
    stack: AsyncExitStack, lan1: Lan, lan2: Lan, bridges: dict[str, list[Gravd]]
) -> None:
    """Each LAN serves ``svc.<n>``; each asks the other's 20 times once every bridge of the
    asking LAN heard the interest; then a type nobody serves raises NoResponders."""
    pod1 = (await attach(stack, lan1)).connect()
    pod2 = (await attach(stack, lan2)).connect()
    pod1.on_type("svc.one", lambda m: pod1.reply_to(m, Message.new("svc.ans", b"1:" + m.data)))
    pod2.on_type("svc.two", lambda m: pod2.reply_to(m, Message.new("svc.ans", b"2:" + m.data)))
    for lan, kind in ((lan1, "svc.two"), (lan2, "svc.one")):
        await lan.bridge.wait_http(lambda n: bridge_of(n)["ready"])
        for node in bridges[lan.mesh]:
            await node.wait_http(heard(kind))
        await lan.edge.wait_interest(kind)
    asker1 = (await attach(stack, lan1)).connect()
    asker2 = (await attach(stack, lan2)).connect()
    for i in range(20):
        reply = await asker1.send(Message.new("svc.two", str(i))).wait_until(5.0)
        assert reply.data == f"2:{i}".encode()
        reply = await asker2.send(Message.new("svc.one", str(i))).wait_until(5.0)
        assert reply.data == f"1:{i}".encode()
    with pytest.raises(NoResponders):
        await asker1.send(Message.new("svc.nobody")).wait_until(5.0)


def heard(msg_type: str) -> Callable[[dict[str, Any]], bool]:
    """A ``wait_http`` check: the node's bridge is connected and heard another mesh ask for
    ``msg_type`` (active or standby)."""

    def check(node: dict[str, Any]) -> bool:
        b = bridge_of(node)
        wanted = any(Pattern(p).matches(msg_type) for p in b["remote_wants"])
        return bool(b["state"] == "connected" and wanted)

    return check


async def test_nats_no_responders_status_ends_the_wait(nats_pair: list[NatsServer]) -> None:
    """When a remote mesh announced a type but nothing on NATS subscribes to it, NATS's
    no-responders status comes back and the asker's wait raises NoResponders."""
    s1, _ = nats_pair
    async with two_lans((s1.url, s1.url)) as (lan1, _lan2), AsyncExitStack() as stack:
        nc = await nats.connect(s1.url)
        stack.push_async_callback(nc.close)
        ghost = b'{"mesh":"ghost","node":"0","patterns":["svc.ghost"],"ready":true}'
        await nc.publish("_GRAV_BRIDGE.gravpy.interest", ghost)
        await lan1.bridge.wait_http(exporting("svc.ghost"))
        await lan1.edge.wait_interest("svc.ghost")
        asker = (await attach(stack, lan1)).connect()
        with pytest.raises(NoResponders):
            await asker.send(Message.new("svc.ghost")).wait_until(5.0)


async def test_plain_nats_clients_interoperate(nats_pair: list[NatsServer]) -> None:
    """A nats-py client with no gravpy code publishes to a gravpy type, asks a gravpy responder,
    and receives exported types as plain payloads with the gravpy fields as headers."""
    s1, s2 = nats_pair
    args = ("--nats-export", "metrics.>")
    async with two_lans((s1.url, s2.url), *args) as (lan1, lan2), AsyncExitStack() as stack:
        nc = await nats.connect(s2.url)
        stack.push_async_callback(nc.close)
        exported = await nc.subscribe("gravpy.lan1.metrics.>")
        pod2 = (await attach(stack, lan2)).connect()
        got: asyncio.Queue[Message] = asyncio.Queue()
        pod2.on_type("sensor.*", got.put_nowait)
        pod1 = (await attach(stack, lan1)).connect()
        pod1.on_type("svc.plain", lambda m: pod1.reply_to(m, Message.new("svc.ans", m.data * 2)))
        await lan2.bridge.wait_http(subscribed("sensor.temp"))
        await lan1.bridge.wait_http(subscribed("svc.plain"))
        await nc.publish("gravpy.outside.sensor.temp", b"21.5", headers={"unit": "C"})
        msg = await asyncio.wait_for(got.get(), 10)
        assert (msg.type, msg.data) == ("sensor.temp", b"21.5")
        assert msg.headers is not None
        assert msg.headers["grav-bridge-origin"] == "outside"
        answer = await nc.request("gravpy.outside.svc.plain", b"ab", timeout=5)
        assert answer.data == b"abab"
        await lan1.bridge.wait_http(lambda n: bridge_of(n)["exporter"])
        sent = Message.new("metrics.cpu", b"0.5", headers={"host": "a b%"})
        pod1.send(sent)
        plain = await exported.next_msg(timeout=10)
        assert (plain.subject, plain.data) == ("gravpy.lan1.metrics.cpu", b"0.5")
        assert plain.headers is not None
        assert plain.headers["Grav-Meta"].split(" ")[0] == sent.uuid
        assert plain.headers["Grav-H-host"] == "a b%25"

"""Faults and interest: NATS down at start, a cluster server killed mid-stream, nothing flooded."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import aiohttp
import pytest

import gravpy
from gravpy import Message
from gravpy.testing.gravd import gravctl, running_gravd
from tests.bridge.lans import bridge_of, exporting, two_lans
from tests.bridge.nats_proc import NatsServer
from tests.bridge.test_lans import Sink, attach

pytestmark = pytest.mark.timeout(90)


async def test_gravd_serves_its_lan_while_nats_is_unreachable(tmp_path: Path) -> None:
    """With NATS unreachable at start gravd serves its LAN, shows the bridge as connecting in
    /v1/node, /metrics and gravctl check (WARNING), counts what it could not export as lost,
    and connects once the server comes up."""
    server = NatsServer("late", tmp_path / "late.log")
    async with AsyncExitStack() as stack:
        node = await stack.enter_async_context(
            running_gravd("--mesh", "lan1", "--nats", server.url, "--nats-export", "sensor.>")
        )
        app = await stack.enter_async_context(gravpy.connect(node.endpoint))
        responder, asker = app.connect(), app.connect()
        responder.on_type("svc.x", lambda m: responder.reply_to(m, Message.new("r", b"ok")))
        await node.wait_interest("svc.x")
        assert (await asker.send(Message.new("svc.x")).wait_until(5.0)).data == b"ok"
        await node.wait_http(lambda n: bool(bridge_of(n)["last_error"]))
        assert bridge_of(await node.node())["state"] == "connecting"
        _, metrics = await node.get("/metrics")
        assert f'gravd_bridge_state{{server="{server.url}",state="connecting"}} 1.0' in metrics
        check = await gravctl("check", "--monitor", node.monitor)
        assert check.code == 1, check
        assert check.stdout.startswith("GRAVD WARNING - serving, 0 peer(s), 0 dropped; bridge ")
        assert f"bridge {server.url} connecting (" in check.stdout
        assert (await gravctl("check", "--monitor", node.monitor, "--bridge-down", "ok")).code == 0
        sender = app.connect()  # what it exports cannot cross: counted, not silently gone
        for i in range(3):
            await sender.publish(Message.new("sensor.t", str(i)))
        await node.wait_http(lambda n: bridge_of(n)["lost"] == {"disconnected": 3})
        stack.push_async_callback(server.stop)
        await server.start()
        await node.wait_http(lambda n: bridge_of(n)["state"] == "connected")
        _, metrics = await node.get("/metrics")
        assert f'gravd_bridge_state{{server="{server.url}",state="connected"}} 1.0' in metrics
        check = await gravctl("check", "--monitor", node.monitor, "--bridge-down", "critical")
        assert check.code == 0, check
        assert check.stdout.endswith(" bridges_connected=1;;;0;1")


async def test_killing_one_cluster_server_mid_stream(nats_pair: list[NatsServer]) -> None:
    """When LAN 1's server dies mid-stream its bridge moves to the other server: no message is
    delivered twice or out of order, everything sent after the move arrives, and every message
    that did not is counted (by LAN 1's bridge, or as a gap by LAN 2's)."""
    s1, s2 = nats_pair
    async with two_lans((s1.url, s2.url)) as (lan1, lan2), AsyncExitStack() as stack:
        sink = Sink((await attach(stack, lan2)).connect())
        sender = (await attach(stack, lan1)).connect()
        await lan1.bridge.wait_http(exporting("stream.n"))
        await lan1.edge.wait_interest("stream.n")
        for i in range(2000):
            await sender.publish(Message.new("stream.n", str(i).encode()))
            if i == 1000:
                await s1.stop()
        await lan1.bridge.wait_http(
            lambda n: bridge_of(n)["state"] == "connected" and bridge_of(n)["connects"] >= 2
        )
        for i in range(2000, 4000):
            await sender.publish(Message.new("stream.n", str(i).encode()))
        ends = 0
        async with asyncio.timeout(30):
            while True:  # the end marker itself may be lost: repeat it until one arrives
                sender.send(Message.new("stream.end", "end"))
                ends += 1
                try:
                    async with asyncio.timeout(1.0):
                        await sink.ends.get()
                    break
                except TimeoutError:
                    continue
        got = sink.got
        assert got == sorted(set(got)), "a message was delivered twice or out of order"
        assert set(range(2000, 4000)) <= set(got)
        # every message sent arrives or is counted; an end marker slower than its 1 s retry is
        # late, not lost: wait (bounded) until the books balance, and show them if they never do
        exporter = bridge_of(await lan1.bridge.node())["lost"]
        books: dict[str, object] = {}

        def balanced(node: dict[str, Any]) -> bool:
            importer = bridge_of(node)["lost"]
            missing = 4000 + ends - len(sink.got) - sink.ends_seen
            counted = sum(exporter.values()) + importer.get("gap", 0)
            books.update(missing=missing, exporter=exporter, importer=importer)
            return bool(missing == counted)

        try:
            async with asyncio.timeout(15):
                await lan2.bridge.wait_http(balanced)
        except TimeoutError:
            pytest.fail(f"messages missing without a count: {books}")


async def _connz(server: NatsServer, node_uuid: str) -> dict[str, Any]:
    conns = (await server.monitor("connz?subs=1"))["connections"]
    return next(c for c in conns if node_uuid in c.get("name", ""))


async def test_a_type_nobody_remote_wants_never_reaches_nats(
    nats_pair: list[NatsServer],
) -> None:
    """Messages of a type no pod on LAN 2 wants are never published to NATS (the server's
    counters for the bridge's connection and in all barely move); a wanted type in the same run
    is."""
    s1, s2 = nats_pair
    async with two_lans((s1.url, s2.url)) as (lan1, lan2), AsyncExitStack() as stack:
        sink = Sink((await attach(stack, lan2)).connect())
        sender = (await attach(stack, lan1)).connect()
        local = (await attach(stack, lan1)).connect()
        private: list[Message] = []
        local.on_type("private.*", private.append)
        await lan1.bridge.wait_http(exporting("stream.n"))
        await lan1.edge.wait_interest("private.x")
        before = (await _connz(s1, lan1.bridge.uuid))["in_msgs"]
        for i in range(500):
            await sender.publish(Message.new("private.x", str(i)))
        await sender.publish(Message.new("stream.end", "end"))
        assert await asyncio.wait_for(sink.ends.get(), 10) == "end"
        after = await _connz(s1, lan1.bridge.uuid)
        assert after["in_msgs"] - before < 50  # the stream.end and announcements, not 500
        bridge = bridge_of(await lan1.bridge.node())
        assert not [p for p in bridge["remote_wants"] if "private" in p]
        assert bridge["exported"] >= 1
        async with aiohttp.ClientSession() as session:
            varz = await (await session.get(f"http://127.0.0.1:{s1.monitor_port}/varz")).json()
        assert varz["in_msgs"] < 500 + 100

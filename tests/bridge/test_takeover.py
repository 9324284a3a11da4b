"""A mesh's active bridge is killed (SIGKILL) mid-stream: its standby delivers what NATS carried
for the mesh meanwhile, so a subscriber misses nothing and sees nothing twice."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Any

import pytest

import gravpy
from gravpy import Message
from gravpy.filter import Pattern
from gravpy.mesh import PeerInfo
from gravpy.pod import Pod
from gravpy.testing.gravd import Gravd, running_gravd
from tests.bridge.lans import bridge_of, bridging_gravd, exporting
from tests.bridge.nats_proc import NatsServer
from tests.bridge.test_importers import _roles
from tests.bridge.test_lans import Sink

pytestmark = pytest.mark.timeout(120)
BATCH = 50


def routed(msg_type: str) -> Callable[[list[PeerInfo]], bool]:
    """A ``Grav.wait_for`` check: an open link of this app admits ``msg_type``."""

    def check(links: list[PeerInfo]) -> bool:
        return any(
            link.state == "open" and any(Pattern(p).matches(msg_type) for p in link.interests)
            for link in links
        )

    return check


async def stream_until(pod: Pod, standby: Gravd, kill: Gravd) -> int:
    """Publish ``stream.n`` 0, 1, ... in batches; kill ``kill`` after the first 1,000, go on
    until ``standby`` has taken over and 1,000 more went through it; return how many were sent.

    Paced to at most about 10,000 messages/s: a standby's shadow (131,072 messages by default)
    must hold what NATS carries until it takes over (the ttl, 3.5 s, and struck messages one
    announce interval longer, on a busy machine more); unpaced streams of about 18,000
    messages/s overflowed it here, the excess counted as ``shadow_overflow`` (docs/scaling.md)."""
    sent = 0
    took_over_at = None
    while took_over_at is None or sent < took_over_at + 1000:
        for _ in range(BATCH):
            await pod.publish(Message.new("stream.n", str(sent).encode()))
            sent += 1
        await asyncio.sleep(BATCH / 10_000)  # the pace: see the docstring
        if sent == 1000:
            kill.process.signal(signal.SIGKILL)
        if sent > 1000 and took_over_at is None and bridge_of(await standby.node())["exporter"]:
            took_over_at = sent  # (each check of /v1/node also paces the stream)
    return sent


async def test_killing_the_active_bridge_loses_nothing(nats_pair: list[NatsServer]) -> None:
    """When mesh B's active bridge is SIGKILLed mid-stream, every message mesh A sent reaches
    a subscriber on B exactly once and in order (none lost: the standby held and delivered what
    NATS carried during the takeover), and the standby shows what it recovered in /v1/node and
    /metrics."""
    s1, s2 = nats_pair
    async with AsyncExitStack() as stack:
        sender_node = await bridging_gravd(stack, "lanA", s1.url)
        b1 = await bridging_gravd(stack, "lanB", s1.url)
        b2 = await bridging_gravd(stack, "lanB", s2.url, "--peer", b1.endpoint)
        edge = await stack.enter_async_context(
            running_gravd("--mesh", "lanB", "--peer", b1.endpoint, "--peer", b2.endpoint)
        )
        await edge.wait_peers(2)
        sink = Sink((await stack.enter_async_context(gravpy.connect(edge.endpoint))).connect())
        active, standby = await asyncio.wait_for(_roles(b1, b2), 20)
        await standby.wait_interest("stream.n")  # the standby hears the active's deliveries
        await sender_node.wait_http(exporting("stream.n"))
        app = await stack.enter_async_context(gravpy.connect(sender_node.endpoint))
        sender = app.connect()
        await app.wait_for(routed("stream.n"), 20)  # the leaf knows its gravd takes stream.n
        async with asyncio.timeout(60):
            sent = await stream_until(sender, standby, active)
            await sender.publish(Message.new("stream.end", "end"))
            assert await sink.ends.get() == "end"
        assert sink.got == list(range(sent)), "lost, duplicated or reordered"
        bridge = bridge_of(await standby.node())
        assert bridge["recovered"] > 0, (
            bridge
        )  # sent while nobody imported: it came from the shadow
        assert "shadow_overflow" not in bridge["lost"], bridge
        _, metrics = await standby.get("/metrics")
        server = bridge["servers"][0]
        line = f'gravd_bridge_shadow_total{{outcome="recovered",server="{server}"}}'
        assert f"{line} {float(bridge['recovered'])}" in metrics, [
            m for m in metrics.splitlines() if "shadow" in m
        ]


async def test_killing_the_sending_sides_active_bridge_loses_nothing(
    nats_pair: list[NatsServer],
) -> None:
    """When mesh A's active bridge is SIGKILLed mid-stream, every message A's edge sent reaches
    mesh B exactly once and in order: what the dead bridge had in hand the standby held until
    it heard it on NATS, and publishes once its link to the dead bridge closed; what the edge
    sends after that the standby exports even before it takes over."""
    s1, s2 = nats_pair
    async with AsyncExitStack() as stack:
        a1 = await bridging_gravd(stack, "lanA", s1.url)
        a2 = await bridging_gravd(stack, "lanA", s2.url, "--peer", a1.endpoint)
        edge = await stack.enter_async_context(
            running_gravd("--mesh", "lanA", "--peer", a1.endpoint, "--peer", a2.endpoint)
        )
        receiver = await bridging_gravd(stack, "lanB", s2.url)
        sink = Sink((await stack.enter_async_context(gravpy.connect(receiver.endpoint))).connect())
        await edge.wait_peers(2)
        for node in (a1, a2):
            await node.wait_http(lambda n: bridge_of(n)["ready"] and heard(n, "stream.n"))
        active, standby = (a1, a2) if bridge_of(await a1.node())["exporter"] else (a2, a1)
        app = await stack.enter_async_context(gravpy.connect(edge.endpoint))
        sender = app.connect()
        await app.wait_for(routed("stream.n"), 20)
        async with asyncio.timeout(60):
            for i in range(1000):
                await sender.publish(Message.new("stream.n", str(i).encode()))
            active.process.signal(signal.SIGKILL)
            await edge.wait_peers(1)
            before = bridge_of(await standby.node())["exporter"]
            for i in range(1000, 2000):
                await sender.publish(Message.new("stream.n", str(i).encode()))
            await sender.publish(Message.new("stream.end", "end"))
            assert await sink.ends.get() == "end"
        bridge = bridge_of(await standby.node())
        assert sink.got == list(range(2000)), ("lost, duplicated or reordered", bridge)
        if not before:  # it still stood by when the edge sent it the rest: it exported them
            assert bridge["standby_exported"] > 0, bridge
        assert bridge["export_held"] == 0, bridge
        _, metrics = await standby.get("/metrics")
        server = bridge["servers"][0]
        line = f'gravd_bridge_export_shadow_total{{outcome="recovered",server="{server}"}}'
        assert f"{line} {float(bridge['export_recovered'])}" in metrics, [
            m for m in metrics.splitlines() if "export" in m
        ]


def heard(node: dict[str, Any], msg_type: str) -> bool:
    """True if the node's bridge heard another mesh ask for ``msg_type``."""
    return any(Pattern(p).matches(msg_type) for p in bridge_of(node)["remote_wants"])

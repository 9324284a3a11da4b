"""Two bridging gravd on one LAN (one mesh, both with --nats, linked to each other): one imports."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from functools import partial
from typing import Any

import pytest

import gravpy
from gravpy.filter import Pattern
from gravpy.testing.gravd import Gravd
from tests.bridge.lans import bridge_of, bridging_gravd, exporting, subscribed
from tests.bridge.nats_proc import NatsServer
from tests.bridge.test_lans import Sink, stream

pytestmark = pytest.mark.timeout(90)
N = 3000


async def _lan1_and_two_bridges_in_lan2(
    stack: AsyncExitStack, s1: NatsServer, s2: NatsServer
) -> tuple[Gravd, Gravd, Gravd]:
    """A bridging gravd in LAN 1 (on ``s1``) and two in LAN 2, on ``s1`` and on ``s2``, linked."""
    sender_node = await bridging_gravd(stack, "lan1", s1.url)
    first = await bridging_gravd(stack, "lan2", s1.url)
    second = await bridging_gravd(stack, "lan2", s2.url, "--peer", first.endpoint)
    await first.wait_peers(1)
    return sender_node, first, second


async def test_each_message_reaches_each_pod_once_in_order_with_two_bridges(
    nats_pair: list[NatsServer],
) -> None:
    """With two bridging gravd in LAN 2 (each on its own server of the cluster), each message
    from LAN 1 enters LAN 2 once, through the active bridge, and reaches a pod on either gravd
    exactly once and in order; when the active one stops, the other takes over and the rest
    arrive the same way."""
    s1, s2 = nats_pair
    async with AsyncExitStack() as stack:
        sender_node, first, second = await _lan1_and_two_bridges_in_lan2(stack, s1, s2)
        sinks = []
        for node in (first, second):
            app = await stack.enter_async_context(gravpy.connect(node.endpoint))
            sinks.append(Sink(app.connect()))
        await sender_node.wait_http(exporting("stream.n"))
        await second.wait_http(lambda n: bridge_of(n)["state"] == "connected")
        active, standby = await asyncio.wait_for(_roles(first, second), 20)
        sender = (await stack.enter_async_context(gravpy.connect(sender_node.endpoint))).connect()
        async with asyncio.timeout(60):
            await stream(sender, range(N), "end")
            for sink in sinks:
                assert await sink.ends.get() == "end"
        for sink in sinks:
            assert sink.got == list(range(N)), "a message was lost, duplicated or reordered"
        assert bridge_of(await active.node())["imported"] == N + 1
        assert bridge_of(await standby.node())["imported"] == 0
        await active.stop()
        await standby.wait_http(subscribed("stream.n"))
        await sender_node.wait_http(exporting("stream.n"))
        survivor = sinks[(first, second).index(standby)]
        async with asyncio.timeout(30):
            await stream(sender, range(N, N + 500), "after")
            assert await survivor.ends.get() == "after"
        assert survivor.got == list(range(N + 500))


async def _roles(first: Gravd, second: Gravd) -> tuple[Gravd, Gravd]:
    """(active, standby) once both bridges are ready (so the election is settled) and exactly
    one is active and subscribed."""
    await _settled(first, second)
    active, standby = (first, second)
    if not bridge_of(await first.node())["exporter"]:
        active, standby = second, first
    await active.wait_http(subscribed("stream.n"))
    return active, standby


async def test_a_pod_on_the_standby_bridging_node_receives_what_it_wants(
    nats_pair: list[NatsServer],
) -> None:
    """A pod attached only to LAN 2's standby bridging gravd receives every message LAN 1 sends
    it, once and in order: the active bridge subscribes for what the standby's node wants."""
    s1, s2 = nats_pair
    async with AsyncExitStack() as stack:
        sender_node, first, second = await _lan1_and_two_bridges_in_lan2(stack, s1, s2)
        await asyncio.wait_for(_settled(first, second), 20)
        standby = first if not bridge_of(await first.node())["exporter"] else second
        sink = Sink((await stack.enter_async_context(gravpy.connect(standby.endpoint))).connect())
        await sender_node.wait_http(exporting("stream.n"))
        active = second if standby is first else first
        async with asyncio.timeout(20):  # it heard the standby's announcement
            await active.wait_http(lambda n: wants_type(n, "stream.n"))
        sender = (await stack.enter_async_context(gravpy.connect(sender_node.endpoint))).connect()
        async with asyncio.timeout(60):
            await stream(sender, range(500), "end")
            assert await sink.ends.get() == "end"
        assert sink.got == list(range(500)), "a message was lost, duplicated or reordered"
        assert bridge_of(await standby.node())["exporter"] is False


async def _settled(first: Gravd, second: Gravd) -> None:
    """Both bridges ready and exactly one active: ``second`` takes the role ``first`` did not,
    and ``first`` still holds its own when asked again. A role ``first`` held only until it
    heard ``second`` is read again (waiting for ``second`` to take its opposite would hang)."""
    while True:
        role = bridge_of(await first.wait_http(lambda n: bool(bridge_of(n)["ready"])))["exporter"]
        try:  # ``first`` may have been active only until it heard ``second``: then ask again
            await asyncio.wait_for(second.wait_http(partial(_ready_as, exporter=not role)), 2.0)
        except TimeoutError:
            continue
        if bridge_of(await first.node())["exporter"] is role:
            return


def _ready_as(node: dict[str, Any], *, exporter: bool) -> bool:
    """The node's bridge is ready, and the active one (``exporter``) or a standby."""
    bridge = bridge_of(node)
    return bool(bridge["ready"]) and bridge["exporter"] is exporter


def wants_type(node: dict[str, Any], msg_type: str) -> bool:
    """True if the node's bridge subscribes on NATS to a pattern admitting ``msg_type``."""
    b = bridge_of(node)
    return b["state"] == "connected" and any(Pattern(p).matches(msg_type) for p in b["mesh_wants"])

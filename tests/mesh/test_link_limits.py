"""A node's per-link pending-bytes bound and its cap on accepted links."""

from __future__ import annotations

from contextlib import AsyncExitStack

import pytest

from gravpy import Grav, Message
from gravpy.errors import GravError
from gravpy.mesh import HubConfig
from gravpy.proto import ROLE_LEAF
from gravpy.testing import MemoryNetwork, MemoryTransport
from tests._bus_helpers import until


async def _leaf(stack: AsyncExitStack, net: MemoryNetwork, url: str) -> Grav:
    leaf = Grav(transport=MemoryTransport(net), role=ROLE_LEAF, attach_to=url, attach_timeout=5)
    return await stack.enter_async_context(leaf)


async def test_accepted_links_past_max_connections_are_closed_and_counted() -> None:
    """With max_connections=3, three apps attach, the next two are refused, and the node counts
    two refusals."""
    net = MemoryNetwork()
    async with AsyncExitStack() as stack:
        node = await stack.enter_async_context(
            Grav(transport=MemoryTransport(net), hub_config=HubConfig(max_connections=3))
        )
        url = node.endpoints()[0]
        for _ in range(3):
            await _leaf(stack, net, url)
        for _ in range(2):
            with pytest.raises(GravError):
                await _leaf(stack, net, url)
        assert node.hub is not None
        assert node.hub.statistics().connections_refused == 2
        assert len(node.peers()) == 3


async def test_a_link_drops_messages_past_its_pending_bytes() -> None:
    """Queued on one link in one loop turn, messages past queue_bytes of data are dropped and
    counted, the ones before are kept."""
    net = MemoryNetwork()
    config = HubConfig(queue_bytes=1000)
    async with AsyncExitStack() as stack:
        node = await stack.enter_async_context(
            Grav(transport=MemoryTransport(net), hub_config=config)
        )
        await _leaf(stack, net, node.endpoints()[0])
        assert node.hub is not None
        (link,) = node.hub.peers.values()
        taken = [link.enqueue(Message.new("big", b"x" * 400)) for _ in range(4)]
        assert taken == [True, True, False, False]
        assert link.dropped == 2


async def test_publish_waits_for_a_link_whose_queue_holds_half_its_bytes() -> None:
    """Large messages fill a link's queue by bytes long before its count high-water mark:
    past half of queue_bytes the link is congested, so publish waits for it and nothing is
    dropped (before, every publish past the bound was dropped, and publish never waited)."""
    net = MemoryNetwork()
    config = HubConfig(queue_bytes=1000)
    async with AsyncExitStack() as stack:
        node = await stack.enter_async_context(
            Grav(transport=MemoryTransport(net), hub_config=config)
        )
        leaf = await _leaf(stack, net, node.endpoints()[0])
        got: list[Message] = []
        leaf.connect().on_type("big.>", got.append)
        await node.wait_for(lambda peers: any("big.>" in p.interests for p in peers), 5)
        assert node.hub is not None
        (link,) = node.hub.peers.values()
        sender = node.connect()
        for i in range(50):
            await sender.publish(Message.new("big.x", bytes([i]) * 400))
        await until(lambda: len(got) == 50)
    assert link.dropped == 0
    assert [m.data[0] for m in got] == list(range(50))

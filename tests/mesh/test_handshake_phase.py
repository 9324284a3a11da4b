"""A link's handshake runs in the link's own task, before any reader, writer or ticker task."""

from __future__ import annotations

import asyncio

from gravpy import Grav
from gravpy.mesh import HubConfig
from gravpy.proto import REASON_SHUTDOWN, ProtocolConfig, decode_frame
from gravpy.proto.frames import Close
from gravpy.testing import MemoryNetwork, MemoryTransport


async def test_a_link_waiting_for_hello_is_closed_at_once_when_the_node_stops() -> None:
    """A socket that never sends HELLO hears nothing (the node answers a HELLO, it does not
    say one first), then CLOSE(shutdown) as soon as the node stops, not REJECT(deadline) half a
    minute later."""
    net = MemoryNetwork()
    config = HubConfig(protocol=ProtocolConfig(handshake_timeout=30.0), drain_timeout=0.1)
    node = Grav(transport=MemoryTransport(net), hub_config=config)
    await node.start()
    try:
        raw = await MemoryTransport(net).dial(node.endpoints()[0], timeout=5)
        stopping = asyncio.ensure_future(node.stop())
        async with asyncio.timeout(10):
            frame = decode_frame(await raw.recv())
            await stopping
    finally:
        await node.stop()
    assert isinstance(frame, Close)
    assert frame.reason == REASON_SHUTDOWN

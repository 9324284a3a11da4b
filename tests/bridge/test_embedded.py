"""NatsBridge embedded in a Grav: two meshes in one process through one real nats-server."""

from __future__ import annotations

import asyncio

import pytest

from gravpy import Grav, Message
from gravpy.bridge import NatsBridgeConfig
from gravpy.bridge.nats import NatsBridge
from gravpy.errors import UsageError
from tests._bus_helpers import until
from tests.bridge.nats_proc import NatsServer
from transports.websocket import WebSocketTransport

pytestmark = pytest.mark.timeout(60)


def node(mesh: str, url: str) -> tuple[Grav, NatsBridge]:
    bridge = NatsBridge(NatsBridgeConfig(servers=(url,), announce_interval=0.2, ttl=1.0))
    transport = WebSocketTransport("127.0.0.1", 0)
    return Grav(transport=transport, belongs_to=mesh, bridges=[bridge]), bridge


async def test_embedded_bridges_carry_messages_and_requests(nats_one: NatsServer) -> None:
    """Grav(bridges=[NatsBridge(url)]) joins two in-process meshes: a message and a request
    cross with uuid, headers and data intact, and the reply comes back to the asker."""
    g1, b1 = node("east", nats_one.url)
    g2, b2 = node("west", nats_one.url)
    async with g1, g2:
        got: asyncio.Queue[Message] = asyncio.Queue()
        west = g2.connect()
        west.on_type("sensor.*", got.put_nowait)
        east = g1.connect()
        async with asyncio.timeout(10):
            await until(lambda: b1.statistics().exporter and bool(b1.statistics().remote_wants))
        sent = Message.new("sensor.temp", b"21", headers={"unit": "C"})
        assert not east.send(sent).no_responders
        msg = await asyncio.wait_for(got.get(), 10)
        assert (msg.uuid, msg.data, msg.headers) == (
            sent.uuid,
            b"21",
            {"unit": "C", "grav-bridge-origin": "east"},
        )
        west.on_type("svc.echo", lambda m: west.reply_to(m, Message.new("svc.r", m.data + b"!")))
        async with asyncio.timeout(10):
            await until(lambda: "svc.echo" in b1.statistics().remote_wants)
        reply = await east.send(Message.new("svc.echo", b"hi")).wait_until(5.0)
        assert reply.data == b"hi!"
        assert b2.statistics().imported >= 2


def test_a_bridge_needs_a_peer_node() -> None:
    """A bridge on a node without a transport is refused at once."""
    with pytest.raises(UsageError):
        Grav(bridges=[NatsBridge("nats://127.0.0.1:4222")])
    with pytest.raises(UsageError):
        NatsBridgeConfig(servers=("http://x",))

"""A bridge of this mesh's name that no link joins to this node is not trusted: it could elect
itself the mesh's active bridge (smallest node uuid) and import nothing, a silent loss. Another
site with the same mesh name, or anyone who may publish under the prefix, could be it."""

from __future__ import annotations

import asyncio

import nats
import pytest
from nats.aio.msg import Msg

from gravpy import Grav, Message
from gravpy.bridge import NatsBridgeConfig
from gravpy.bridge.nats import NatsBridge
from gravpy.bridge.subjects import Announcement, SubjectMap
from tests._bus_helpers import until
from tests.bridge.nats_proc import NatsServer
from transports.websocket import WebSocketTransport

pytestmark = pytest.mark.timeout(60)


async def test_an_announcement_from_an_unlinked_bridge_of_this_mesh_is_ignored_and_counted(
    nats_one: NatsServer,
) -> None:
    """A forged ready bridge of mesh "east" with the smallest uuid there is: the real bridge
    stays the exporter and imports, counts the forgery (``unlinked_bridge``) and logs it."""
    config = NatsBridgeConfig(servers=(nats_one.url,), announce_interval=0.2, ttl=1.0)
    bridge = NatsBridge(config)
    grav = Grav(transport=WebSocketTransport("127.0.0.1", 0), belongs_to="east", bridges=[bridge])
    forger = await nats.connect(nats_one.url)
    try:
        async with grav:
            async with asyncio.timeout(10):
                await until(lambda: bridge.statistics().ready)
            assert bridge.statistics().exporter
            interest = SubjectMap("gravpy", "east").interest_subject
            forged = Announcement("east", "0", ("x.*",), ready=True)
            for n in range(1, 4):  # (it would re-elect as it handles each one: when counted)
                await forger.publish(interest, forged.encode())
                async with asyncio.timeout(10):
                    await until(lambda n=n: bridge.statistics().lost.get("unlinked_bridge") == n)
                assert bridge.statistics().exporter
            stats = bridge.statistics()
            assert stats.exporter
            assert stats.lost.get("unlinked_bridge") == 3
            assert "x.*" not in stats.mesh_wants
    finally:
        await forger.close()


async def test_an_id_that_is_not_one_subject_token_is_not_exported(nats_one: NatsServer) -> None:
    """A message id carrying a newline and a NATS command (an app may choose its ids) would
    have been written into the reply subject of the bridge's HPUB: it is refused and counted
    (``bad_id``); the next message crosses."""
    config = NatsBridgeConfig(servers=(nats_one.url,), export=("t.>",))
    bridge = NatsBridge(config)
    grav = Grav(transport=WebSocketTransport("127.0.0.1", 0), belongs_to="east", bridges=[bridge])
    watcher = await nats.connect(nats_one.url)
    seen: asyncio.Queue[str] = asyncio.Queue()

    async def on_any(m: Msg) -> None:
        seen.put_nowait(m.subject)

    await watcher.subscribe(">", cb=on_any)
    try:
        async with grav:
            async with asyncio.timeout(10):
                await until(lambda: bridge.statistics().state == "connected")
            pod = grav.connect()
            good = Message.new("t.ok", b"fine")
            evil = Message(" x\r\nPUB pwn.owned 2\r\nhi\r\n", "", "", "t.evil", good.timestamp, b"")
            pod.send(evil)
            pod.send(good)
            async with asyncio.timeout(10):
                while (subject := await seen.get()) != "gravpy.east.t.ok":
                    assert "pwn" not in subject
            assert bridge.statistics().lost.get("bad_id") == 1
    finally:
        await watcher.close()

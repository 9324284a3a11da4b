"""A message that reaches only a standby bridge is exported by the standby, not lost.

In-process nodes with chosen uuids (the smaller one is elected active), so the roles are known:
mesh ``lan1`` has an active and a standby bridge and an edge node linked to both; a plain
nats-py client answers requests on NATS. The standby alone exports ``svc.only`` (as happens
when its active bridge is not linked to the sender's node, or has not yet heard a remote mesh
ask for a type): the edge's request reaches the standby only.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from contextlib import AsyncExitStack

import nats
import pytest
from nats.aio.msg import Msg

from discovery.static import StaticDiscovery
from gravpy import Grav, Message
from gravpy.bridge import NatsBridgeConfig
from gravpy.bridge.nats import NatsBridge
from gravpy.daemon.bridge_metrics import bridge_metrics
from gravpy.mesh import PeerInfo
from tests._bus_helpers import until
from tests.bridge.nats_proc import NatsServer
from transports.websocket import WebSocketTransport

pytestmark = pytest.mark.timeout(60)
ACTIVE = "00000000-0000-4000-8000-000000000001"  # the smaller uuid: elected active
STANDBY = "ffffffff-ffff-4fff-bfff-ffffffffffff"


def bridged(uuid: str, url: str, export: tuple[str, ...], peers: list[str]) -> Grav:
    config = NatsBridgeConfig(servers=(url,), export=export, announce_interval=0.2, ttl=1.0)
    return Grav(
        transport=WebSocketTransport("127.0.0.1", 0),
        belongs_to="lan1",
        node_uuid=uuid,
        bridges=[NatsBridge(config)],
        discovery=[StaticDiscovery(peers)],
    )


def admits(uuid: str, msg_type: str) -> Callable[[list[PeerInfo]], bool]:
    """A ``Grav.wait_for`` check: the open link to ``uuid`` admits ``msg_type``."""

    def check(links: list[PeerInfo]) -> bool:
        return any(
            link.uuid == uuid and link.state == "open" and msg_type in link.interests
            for link in links
        )

    return check


async def test_a_request_that_reaches_only_the_standby_is_exported_by_it(
    nats_one: NatsServer,
) -> None:
    """A request the active bridge does not admit, sent to the standby only, is exported by
    the standby (counted in ``standby_exported``) and answered; a type both admit is exported
    once, by the active bridge."""
    async with AsyncExitStack() as stack:
        nc = await nats.connect(nats_one.url)
        stack.push_async_callback(nc.close)
        asked: Counter[str] = Counter()

        async def answer(m: Msg) -> None:
            asked[m.subject] += 1
            await m.respond(b"ok:" + m.data)

        await nc.subscribe("gravpy.lan1.svc.>", cb=answer)
        active = await stack.enter_async_context(bridged(ACTIVE, nats_one.url, ("svc.both",), []))
        standby = await stack.enter_async_context(
            bridged(STANDBY, nats_one.url, ("svc.both", "svc.only"), active.endpoints())
        )
        edge = await stack.enter_async_context(
            Grav(
                transport=WebSocketTransport("127.0.0.1", 0),
                belongs_to="lan1",
                discovery=[StaticDiscovery([*active.endpoints(), *standby.endpoints()])],
            )
        )

        def elected() -> bool:  # both ready, and each has heard the other: one exporter
            views = [g.bridges[0].statistics() for g in (active, standby)]
            return all(v.ready for v in views) and sum(v.exporter for v in views) == 1

        async with asyncio.timeout(10):
            await until(elected)
        roles = [g.bridges[0].statistics().exporter for g in (active, standby)]
        assert roles == [True, False]
        await edge.wait_for(admits(STANDBY, "svc.only"), 10)
        await edge.wait_for(admits(ACTIVE, "svc.both"), 10)
        asker = edge.connect()
        reply = await asker.send(Message.new("svc.only", b"1")).wait_until(5.0)
        assert reply.data == b"ok:1"
        reply = await asker.send(Message.new("svc.both", b"2")).wait_until(5.0)
        assert reply.data == b"ok:2"
        stats = standby.bridges[0].statistics()
        assert (stats.standby_exported, stats.exporter) == (1, False)
        assert stats.as_json()["standby_exported"] == 1  # /v1/node's bridges[]
        families = {f.name: f for f in bridge_metrics([stats])}
        assert [s.value for s in families["gravd_bridge_standby_exported"].samples] == [1]
        assert active.bridges[0].statistics().standby_exported == 0
        await nc.flush()
        assert asked == {"gravpy.lan1.svc.only": 1, "gravpy.lan1.svc.both": 1}

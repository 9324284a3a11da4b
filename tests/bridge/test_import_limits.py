"""What a bridge imports is held to the mesh's limits, the usual message too (its quick check,
``Traffic.fits_plain``, and the full one agree)."""

from __future__ import annotations

import asyncio
import itertools

import nats
import pytest

from gravpy import Grav, Message
from gravpy.bridge import NatsBridgeConfig
from gravpy.bridge.nats import NatsBridge
from gravpy.mesh import HubConfig
from gravpy.proto import Limits, ProtocolConfig
from tests._bus_helpers import until
from tests.bridge.nats_proc import NatsServer
from transports.websocket import WebSocketTransport

pytestmark = pytest.mark.timeout(60)
LIMIT = 1024  # the receiving mesh's max_message_bytes


def small_node(url: str) -> tuple[Grav, NatsBridge]:
    limits = Limits(max_frame_bytes=4 * LIMIT, max_message_bytes=LIMIT)
    config = NatsBridgeConfig(servers=(url,), announce_interval=0.2, ttl=1.0)
    bridge = NatsBridge(config)
    grav = Grav(
        transport=WebSocketTransport("127.0.0.1", 0),
        belongs_to="west",
        bridges=[bridge],
        hub_config=HubConfig(protocol=ProtocolConfig(limits=limits)),
    )
    return grav, bridge


def meta(uuid: str) -> dict[str, str]:
    """The one header of the usual bridged message: uuid and time, nothing else."""
    return {"Grav-Meta": f"{uuid} 1700000000.5"}


async def next_but_probes(got: asyncio.Queue[Message]) -> Message:
    """The next message that is not a probe (probes may still come in after the first)."""
    while (msg := await asyncio.wait_for(got.get(), 10)).type == "big.probe":
        pass
    return msg


def drained(got: asyncio.Queue[Message]) -> list[Message]:
    return [got.get_nowait() for _ in range(got.qsize())]


@pytest.mark.parametrize("uuid", ["a" * 32, "é" * 8])
async def test_imported_data_over_the_mesh_limit_is_counted_not_delivered(
    nats_one: NatsServer, uuid: str
) -> None:
    """Data of exactly the mesh's ``max_message_bytes`` is imported; one byte more is counted
    ``too_large`` and reaches no pod, and what follows still arrives. A message whose id is not
    ASCII takes the full check instead of the quick one, with the same outcome."""
    grav, bridge = small_node(nats_one.url)
    nc = await nats.connect(nats_one.url)
    try:
        async with grav:
            got: asyncio.Queue[Message] = asyncio.Queue()
            grav.connect().on_type("big.*", got.put_nowait)
            async with asyncio.timeout(20):
                for i in itertools.count():  # until the bridge subscribed: a probe arrives
                    await nc.publish("gravpy.east.big.probe", b"?", headers=meta(f"probe{i}"))
                    try:
                        probe = await asyncio.wait_for(got.get(), 0.2)
                        break
                    except TimeoutError:
                        continue
            assert probe.type == "big.probe"
            await nc.publish("gravpy.east.big.fits", b"x" * LIMIT, headers=meta(uuid + "1"))
            await nc.publish("gravpy.east.big.over", b"x" * (LIMIT + 1), headers=meta(uuid + "2"))
            await nc.publish("gravpy.east.big.after", b"ok", headers=meta("after"))
            received = [await next_but_probes(got) for _ in range(2)]
            assert [(m.type, m.uuid, len(m.data)) for m in received] == [
                ("big.fits", uuid + "1", LIMIT),
                ("big.after", "after", 2),
            ]
            await until(lambda: bridge.statistics().lost.get("too_large", 0) >= 1)
            assert bridge.statistics().lost == {"too_large": 1}
            assert all(m.type == "big.probe" for m in drained(got))
    finally:
        await nc.close()

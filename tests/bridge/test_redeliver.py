"""A bridge that takes over passes on what its node already had: two real nodes, no NATS.

A standby strikes a held message when the active bridge's copy reaches its node; the active
bridge may die before its copy reached the other nodes. On taking over, the standby's node has
that message (its seen-set drops it), so the importer asks the node to pass it on instead.
"""

from __future__ import annotations

import asyncio
import time

from discovery.static import StaticDiscovery
from gravpy import Grav, Message
from gravpy.bridge.config import NatsBridgeStatistics
from gravpy.bridge.importer import Importer
from gravpy.bridge.port import BridgeHost, MeshInterests
from gravpy.bridge.shadow import Shadow
from gravpy.bridge.subjects import H_META, SubjectMap
from tests._bus_helpers import settle, until
from tests.mesh.conftest import linked_to
from transports.tcp import TcpTransport


class HostOnly:
    """A ``BridgePort`` that carries nothing: it only holds on to the node's ``BridgeHost``."""

    def __init__(self) -> None:
        self.host: BridgeHost | None = None

    def bind(self, host: BridgeHost) -> None:
        self.host = host

    def mesh_interests(self, interests: MeshInterests) -> None:
        pass

    def offer(self, msg: Message) -> bool:
        return False

    def advertised(self) -> tuple[str, ...]:
        return ()

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    def statistics(self) -> NatsBridgeStatistics:
        return NatsBridgeStatistics("idle", (), False, 0, 0, 0, 0, {}, (), (), (), "")


async def test_taking_over_passes_on_a_struck_message_the_other_nodes_missed() -> None:
    """X's standby held a message and saw the active bridge's copy reach X (struck); E never
    got it. When X takes over, E gets it, and X's own pod does not get it twice."""
    port = HostOnly()
    x = Grav(transport=TcpTransport("127.0.0.1", 0), belongs_to="west", bridges=[port])
    async with x:
        e = Grav(
            transport=TcpTransport("127.0.0.1", 0),
            belongs_to="west",
            discovery=[StaticDiscovery(x.endpoints())],
        )
        async with e:
            await x.wait_for(linked_to(e), timeout=5)
            here: list[Message] = []
            x.connect().on_type("stream.n", here.append)
            assert port.host is not None
            importer = Importer(16, Shadow(16, 60.0), lambda reason, n: None, time.monotonic)
            importer.host = port.host
            importer.subjects = SubjectMap("gravpy", "west")
            uuid, stamp = "ab" * 16, time.time()
            headers = {H_META: f"{uuid} {stamp!r}"}
            importer.message("gravpy.east.stream.n", "", b"7", headers)  # held: standing by
            assert len(importer.shadow) == 1
            copy = importer.shadow.take(time.monotonic())[0].msg  # what the active delivered
            importer.message("gravpy.east.stream.n", "", b"7", headers)  # (held again)
            assert port.host.inject(copy) == 1  # it reached X (E wanted nothing yet)...
            importer.delivered(copy)  # ... and struck there
            await until(lambda: len(here) == 1)
            there: asyncio.Queue[Message] = asyncio.Queue()
            e.connect().on_type("stream.n", there.put_nowait)  # E wants it now
            await x.wait_for(linked_to(e, interest="stream.n"), timeout=5)
            importer.activate()
            got = await asyncio.wait_for(there.get(), 5)
            assert (got.uuid, got.data) == (uuid, b"7")
            await settle(x)
            assert len(here) == 1

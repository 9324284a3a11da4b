"""Groups (deliver to one) across meshes bridged through one real nats-server, in one process.

Three meshes: ``east`` sends; ``west`` is two nodes (its bridge and a peer, so a group's copy may
have to cross a LAN link after the bridge), ``north`` one. Each node is a real ``Grav`` with a
WebSocket transport on 127.0.0.1; the bridges talk through a real ``nats-server``.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

import nats
import pytest

from gravpy import Grav, Message
from gravpy.bridge import NatsBridgeConfig
from gravpy.bridge.nats import NatsBridge
from gravpy.pod import Pod
from tests._bus_helpers import until
from tests.bridge.nats_proc import NatsServer
from transports.websocket import WebSocketTransport

pytestmark = pytest.mark.timeout(60)
N = 200


@dataclass
class Mesh:
    name: str
    bridge: NatsBridge
    nodes: list[Grav]

    def knows(self, group_pattern: str) -> Callable[[], bool]:
        """A check: this mesh's bridge is connected, exports, and heard another mesh's group."""
        s = self.bridge.statistics

        def check() -> bool:
            stats = s()
            return (
                stats.state == "connected"
                and stats.exporter
                and group_pattern in stats.remote_groups
            )

        return check


@asynccontextmanager
async def meshes(url: str, *spec: tuple[str, int]) -> AsyncIterator[list[Mesh]]:
    """One mesh per (name, nodes): the first node bridges, the others link to it."""
    async with AsyncExitStack() as stack:
        out = []
        for name, size in spec:
            config = NatsBridgeConfig(servers=(url,), announce_interval=0.2, ttl=1.0)
            bridge = NatsBridge(config)
            nodes = []
            for i in range(size):
                g = Grav(
                    transport=WebSocketTransport("127.0.0.1", 0),
                    belongs_to=name,
                    bridges=[bridge] if i == 0 else [],
                )
                nodes.append(await stack.enter_async_context(g))
                if i:
                    await g.connect_endpoint(nodes[0].endpoints()[0])
            out.append(Mesh(name, bridge, nodes))
        yield out


class Tally:
    """Which member got which message uuid."""

    def __init__(self) -> None:
        self.got: dict[str, list[str]] = {}
        self.changed = asyncio.Event()

    def member(self, pod: Pod, name: str, pattern: str = "job.*", group: str = "workers") -> None:
        self.got[name] = []

        def on(msg: Message) -> None:
            self.got[name].append(msg.uuid)
            self.changed.set()

        pod.on_type(pattern, on, group=group)

    def total(self) -> int:
        return sum(len(v) for v in self.got.values())

    async def reach(self, n: int) -> None:
        async with asyncio.timeout(15):
            while self.total() < n:
                self.changed.clear()
                await self.changed.wait()


async def test_a_group_without_members_at_home_gets_each_message_once_across_meshes(
    nats_one: NatsServer,
) -> None:
    """A group with members in two other meshes (one behind a LAN link) gets each message from
    a mesh without members exactly once across both, spread over both; an ungrouped pod in one
    of them still gets every message."""
    async with meshes(nats_one.url, ("east", 1), ("west", 2), ("north", 1)) as (east, west, north):
        tally = Tally()
        tally.member(west.nodes[1].connect(), "west")
        tally.member(north.nodes[0].connect(), "north")
        plain: list[str] = []
        west.nodes[0].connect().on_type("job.*", lambda m: plain.append(m.uuid))
        await until(east.knows("workers job.*"))
        await until(lambda: len(east.bridge.statistics().remote_meshes) == 2)
        await until(lambda: "job.*" in east.bridge.statistics().remote_wants)
        sender = east.nodes[0].connect()
        sent = [Message.new("job.run", str(i)) for i in range(N)]
        for msg in sent:
            await sender.publish(msg)
        await tally.reach(N)
        got = Counter(u for uuids in tally.got.values() for u in uuids)
        assert set(got) == {m.uuid for m in sent}
        assert max(got.values()) == 1, "a message reached two members of the group"
        assert len(tally.got["west"]) >= N // 5, "the group was not spread over the meshes"
        assert len(tally.got["north"]) >= N // 5, "the group was not spread over the meshes"
        await until(lambda: len(plain) == N)
        assert east.bridge.statistics().lost == {}


async def test_a_group_with_a_member_at_home_keeps_its_copy_there(nats_one: NatsServer) -> None:
    """When the sending mesh has a member of the group, that member gets every message and the
    other mesh's members none; a plain NATS publisher's message reaches one member per mesh."""
    async with meshes(nats_one.url, ("east", 1), ("west", 2)) as (east, west):
        tally = Tally()
        tally.member(east.nodes[0].connect(), "east")
        tally.member(west.nodes[1].connect(), "west")
        await until(east.knows("workers job.*"))
        await until(west.knows("workers job.*"))
        sender = east.nodes[0].connect()
        for i in range(50):
            await sender.publish(Message.new("job.run", str(i)))
        await tally.reach(50)
        marker = Message.new("job.end")
        west_end = asyncio.get_running_loop().create_future()
        west.nodes[1].connect().on_type("job.end", lambda m: west_end.set_result(m.uuid))
        await until(lambda: "job.end" in east.bridge.statistics().remote_wants)
        await sender.publish(marker)
        assert await asyncio.wait_for(west_end, 10) == marker.uuid  # all before it crossed too
        assert (len(tally.got["east"]), len(tally.got["west"])) == (51, 0)
        nc = await nats.connect(nats_one.url)
        try:
            await nc.publish("gravpy.outside.job.plain", b"x")
            await tally.reach(53)
        finally:
            await nc.close()
        assert (len(tally.got["east"]), len(tally.got["west"])) == (52, 1)


async def test_a_request_to_a_group_in_another_mesh_is_answered_once(
    nats_one: NatsServer,
) -> None:
    """A request to a group whose members are all in another mesh reaches one of them (over a
    LAN link there) and its one reply comes back to the asker."""
    async with meshes(nats_one.url, ("east", 1), ("west", 2)) as (east, west):
        answers: Counter[str] = Counter()
        for i, node in enumerate(west.nodes):
            pod = node.connect()

            def answer(m: Message, pod: Pod = pod, name: str = f"w{i}") -> None:
                answers[name] += 1
                pod.reply_to(m, Message.new("job.done", name))

            pod.on_type("job.ask", answer, group="workers")
        await until(east.knows("workers job.ask"))
        asker = east.nodes[0].connect()
        for i in range(20):
            reply = await asker.send(Message.new("job.ask", str(i))).wait_until(5.0)
            assert reply.text() in ("w0", "w1")
        assert sum(answers.values()) == 20
        assert set(answers) == {"w0", "w1"}


async def test_a_copy_marked_for_a_group_on_the_bridging_node_still_crosses(
    nats_one: NatsServer,
) -> None:
    """A message whose group copy the sender's node placed on the bridging node (marked for
    that group) is exported like any other: the remote mesh gets every one."""
    async with meshes(nats_one.url, ("east", 2), ("west", 1)) as (east, west):
        tally = Tally()
        tally.member(east.nodes[0].connect(), "east")  # on the bridging node
        remote: list[str] = []
        west.nodes[0].connect().on_type("job.*", lambda m: remote.append(m.uuid))
        await until(lambda: "job.*" in east.bridge.statistics().remote_wants)
        await until(lambda: east.bridge.statistics().exporter)
        await east.nodes[1].wait_for(lambda peers: bool(peers))
        sender = east.nodes[1].connect()
        await until(lambda: not sender.send(Message.new("job.probe")).no_responders)
        sent = [Message.new("job.run", str(i)) for i in range(20)]
        for msg in sent:
            await sender.publish(msg)
        await tally.reach(len(sent) + 1)
        await until(lambda: {m.uuid for m in sent} <= set(remote))

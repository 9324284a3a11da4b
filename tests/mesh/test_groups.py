"""Groups across a mesh of real nodes (WebSocket on 127.0.0.1): one member anywhere per message."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

import gravpy
from gravpy import Grav, Message, Pod
from gravpy.errors import NoResponders
from gravpy.groups import GROUP_HEADER
from gravpy.mesh import PeerInfo

from .conftest import FAST, NodeFactory, linked_to
from .test_routing import mesh_of_three


def groups_known(members: dict[str, int], group: str) -> Callable[[list[PeerInfo]], bool]:
    """A ``wait_for`` predicate: each node uuid in ``members`` advertises that many of ``group``."""

    def check(peers: list[PeerInfo]) -> bool:
        told = {
            p.uuid: sum(n for g, _, n in p.groups if g == group) for p in peers if p.state == "open"
        }
        return all(told.get(uuid, 0) == n for uuid, n in members.items())

    return check


class Fence:
    """An ungrouped pod on each node: once a fence message sent last reaches all of them, every
    message sent before it from the same sender has been delivered on every node (order holds)."""

    def __init__(self, nodes: tuple[Grav, ...]) -> None:
        self.left = len(nodes)
        self.done = asyncio.Event()
        for node in nodes:
            node.connect().on_type("fence", self._on)

    def _on(self, msg: Message) -> None:
        self.left -= 1
        if self.left == 0:
            self.done.set()

    async def cross(self, sender: Pod) -> None:
        sender.send(Message.new("fence"))
        async with asyncio.timeout(10):
            await self.done.wait()


def ignore(msg: Message) -> None:
    return None


async def test_300_messages_to_three_members_on_three_nodes_spread_evenly(
    node: NodeFactory,
) -> None:
    """Each message reaches one member of the group (each gets >= 20%) and every ungrouped pod."""
    a, b, c = await mesh_of_three(node)
    members = [n.connect() for n in (a, b, c)]
    seen_headers: list[dict[str, str] | None] = []
    all_handled = asyncio.Event()

    def work(msg: Message) -> None:
        seen_headers.append(msg.headers)
        if len(seen_headers) == 300:
            all_handled.set()

    for pod in members:
        pod.on_type("jobs.*", work, group="workers")
    watcher = b.connect()
    watcher.on_type("jobs.*", ignore)
    fence = Fence((b, c))
    await a.wait_for(groups_known({b.node_uuid: 1, c.node_uuid: 1}, "workers"), timeout=5)
    await a.wait_for(linked_to(b, c, interest="fence"), timeout=5)
    sender = a.connect()
    for i in range(300):
        await sender.publish(Message.new("jobs.run", str(i)))
    await fence.cross(sender)
    counts = [p.statistics().received for p in members]
    assert sum(counts) == 300
    assert min(counts) >= 60, counts
    assert watcher.statistics().received == 300
    async with asyncio.timeout(10):
        await all_handled.wait()
    assert all(h is None or GROUP_HEADER not in h for h in seen_headers)


async def test_a_request_to_a_group_across_the_mesh_gets_exactly_one_reply(
    node: NodeFactory,
) -> None:
    """Responders on three nodes in one group: every request is answered exactly once."""
    a, b, c = await mesh_of_three(node)
    answered: list[str] = []
    for n in (a, b, c):
        pod = n.connect()

        def answer(msg: Message, pod: Pod = pod, name: str = n.node_uuid) -> None:
            answered.append(name)
            pod.reply_to(msg, Message.new("svc.answer", name))

        pod.on_type("svc.ask", answer, group="svc")
    await a.wait_for(groups_known({b.node_uuid: 1, c.node_uuid: 1}, "svc"), timeout=5)
    asker = a.connect()
    for _ in range(6):
        receipt = asker.send(Message.new("svc.ask"))
        replies = [r async for r in receipt.replies(timeout=0.3, max=2)]
        assert len(replies) == 1
    assert len(answered) == 6
    assert len(set(answered)) == 3  # shared: each node answered some


async def test_a_group_whose_last_member_left_has_no_responders(node: NodeFactory) -> None:
    """When the only member (on C) leaves and A learns it, a request fails with NoResponders."""
    a, _, c = await mesh_of_three(node)
    member = c.connect()
    member.on_type("only.c", ignore, group="lonely")
    await a.wait_for(groups_known({c.node_uuid: 1}, "lonely"), timeout=5)
    reply_pod = c.connect()
    member.on_type("only.c", lambda m: reply_pod.reply_to(m, Message.new("r")), group="lonely")
    reply = await a.connect().send(Message.new("only.c")).wait_until(5)
    assert reply.type == "r"
    member.disconnect()
    await a.wait_for(groups_known({c.node_uuid: 0}, "lonely"), timeout=5)
    with pytest.raises(NoResponders):
        await a.connect().send(Message.new("only.c")).wait_until(5)


async def test_leaf_members_share_a_group_with_node_members(node: NodeFactory) -> None:
    """A member on a leaf attached to B and one on C split messages sent from A."""
    a, b, c = await mesh_of_three(node)
    async with gravpy.connect(b.endpoints()[0], hub_config=FAST) as leaf:
        on_leaf = leaf.connect()
        on_leaf.on_type("work.>", ignore, group="mixed")
        on_c = c.connect()
        on_c.on_type("work.>", ignore, group="mixed")
        fence = Fence((b, c))
        fence_leaf = leaf.connect()
        fenced = asyncio.Event()
        fence_leaf.on_type("fence", lambda m: fenced.set())
        await a.wait_for(groups_known({b.node_uuid: 1, c.node_uuid: 1}, "mixed"), timeout=5)
        await a.wait_for(linked_to(b, c, interest="fence"), timeout=5)
        sender = a.connect()
        for i in range(40):
            sender.send(Message.new("work.item", str(i)))
        await fence.cross(sender)
        async with asyncio.timeout(10):
            await fenced.wait()
        counts = (on_leaf.statistics().received, on_c.statistics().received)
        assert counts == (20, 20)

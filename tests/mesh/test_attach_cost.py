"""Interest advertisements are incremental: one attach costs work for the links it changes only."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack

from gravpy import Grav, Message
from gravpy.mesh.interests import InterestStatistics
from gravpy.mesh.peer_link import PeerLink
from gravpy.proto import ROLE_LEAF
from gravpy.testing import MemoryNetwork, MemoryTransport


def _ignore(msg: Message) -> None:
    """Take the message."""


async def _attach(stack: AsyncExitStack, net: MemoryNetwork, url: str, pattern: str) -> Grav:
    leaf = Grav(
        transport=MemoryTransport(net),
        role=ROLE_LEAF,
        attach_to=url,
        attach_timeout=20,
    )
    await stack.enter_async_context(leaf)
    leaf.connect().on_type(pattern, _ignore)
    return leaf


async def _settled(node: Grav, links: int) -> InterestStatistics:
    """Wait until ``links`` links are open and no advertisement is pending; return the totals."""
    assert node.hub is not None
    async with asyncio.timeout(20):
        while True:
            peers = node.peers()
            if len(peers) != links or not all(p.state == "open" for p in peers):
                await node.hub.wait_changed()  # a link opened or ended, interests changed
                continue
            before = node.hub.interest_statistics()
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            if node.hub.interest_statistics() == before:
                return before


async def _attach_detach_cost(
    node: Grav, net: MemoryNetwork, url: str, attached: int
) -> tuple[int, int]:
    before = await _settled(node, attached)
    async with AsyncExitStack() as stack:
        await _attach(stack, net, url, "sensor.*")
        await _settled(node, attached + 1)
    after = await _settled(node, attached)
    return after.computed - before.computed, after.sent - before.sent


async def test_attach_cost_stays_flat_as_apps_attach() -> None:
    """With 20 and with 120 apps attached, one more attach+detach computes and sends the same few
    advertisements (not one per attached app)."""
    net = MemoryNetwork()
    async with AsyncExitStack() as stack:
        node = await stack.enter_async_context(Grav(transport=MemoryTransport(net)))
        url = node.endpoints()[0]
        costs: list[tuple[int, int]] = []
        for total in (20, 120):
            while len(node.peers()) < total:
                await _attach(stack, net, url, "sensor.*")
            costs.append(await _attach_detach_cost(node, net, url, total))
        small, large = costs
        assert small == large
        computed, sent = large
        assert computed <= 4
        assert sent <= 2


def _brute_force(
    node: Grav, to: PeerLink
) -> tuple[tuple[str, ...], tuple[tuple[str, str, int], ...]]:
    """The advertisement as the hub computed it before: from every other link, every time."""
    assert node.hub is not None
    patterns = set(node.bus.interests())
    members: dict[tuple[str, str], int] = {}
    for group, pattern, n in node.bus.group_interests():
        members[group, pattern] = n
    for link in node.hub.peers.values():
        if link is to or not link.is_open:
            continue
        patterns.update(link.interests)
        for group, pattern, n in link.group_interests:
            members[group, pattern] = members.get((group, pattern), 0) + n
    groups = tuple(sorted((g, p, n) for (g, p), n in members.items()))
    return ((">",) if ">" in patterns else tuple(sorted(patterns))), groups


async def test_incremental_advertisements_match_the_full_recomputation() -> None:
    """After leaves with shared, unique and grouped interests attach and some detach, every leaf is
    told exactly what recomputing from all links gives."""
    net = MemoryNetwork()
    async with AsyncExitStack() as stack:
        node = await stack.enter_async_context(Grav(transport=MemoryTransport(net)))
        node.connect().on_type("local.x", _ignore)
        url = node.endpoints()[0]
        inner = AsyncExitStack()
        await inner.__aenter__()
        for i in range(12):
            pattern = ("shared.*", f"own.{i}", ">")[i % 3] if i != 11 else "solo.1"
            await _attach(stack if i % 2 else inner, net, url, pattern)
        grouped = await _attach(stack, net, url, "grp.*")
        grouped.connect().on_type("job.*", _ignore, group="workers")
        await _settled(node, 13)
        await inner.aclose()  # half of them detach, the one holding ">" among them
        await _settled(node, 7)
        assert node.hub is not None
        for link in node.hub.peers.values():
            assert node.hub._interests.advertisement(link) == _brute_force(node, link)
            assert link._advertised == _brute_force(node, link)

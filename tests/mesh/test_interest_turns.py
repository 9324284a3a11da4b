"""Two links' INTERESTS reaching a node in one loop turn: each change still reaches every link it
concerns (the node advertises once per turn, for every link either change marked)."""

from __future__ import annotations

from contextlib import AsyncExitStack

import gravpy
from discovery.static import StaticDiscovery
from gravpy import Grav
from gravpy.mesh.peer_link import PeerLink
from gravpy.proto.events import InterestsReceived

from .conftest import FAST, NodeFactory, linked_to


def _link(node: Grav, uuid: str) -> PeerLink:
    assert node.hub is not None
    link = node.hub.link_for(uuid)
    assert link is not None
    assert link.is_open
    return link


async def test_a_peer_hears_a_leafs_pattern_when_its_own_interests_change_in_the_same_turn(
    node: NodeFactory,
) -> None:
    """A leaf's new pattern reaches the node's peer although the peer's own INTERESTS, adding a
    pattern nobody else holds, arrived in the same loop turn."""
    a = await node()
    b = await node(discovery=[StaticDiscovery(a.endpoints())])
    await a.wait_for(linked_to(b), timeout=5)
    async with gravpy.connect(b.endpoints()[0], hub_config=FAST) as app:
        assert b.hub is not None
        await b.wait_for(linked_to(app), timeout=5)
        leaf, peer = _link(b, app.node_uuid), _link(b, a.node_uuid)
        b.hub.link_events(leaf, [InterestsReceived(("svc.leaf",))])
        b.hub.link_events(peer, [InterestsReceived(("svc.peer",))])  # same turn
        await a.wait_for(linked_to(b, interest="svc.leaf"), timeout=5)
        await app.wait_for(linked_to(b, interest="svc.peer"), timeout=5)


async def test_a_leaf_hears_another_leafs_pattern_when_its_own_changes_in_the_same_turn(
    node: NodeFactory,
) -> None:
    """A leaf is told another leaf's new pattern although its own new pattern (and its group
    members) changed in the same loop turn."""
    hub_node = await node()
    async with AsyncExitStack() as stack:
        apps = [
            await stack.enter_async_context(
                gravpy.connect(hub_node.endpoints()[0], hub_config=FAST)
            )
            for _ in range(2)
        ]
        await hub_node.wait_for(linked_to(*apps), timeout=5)
        assert hub_node.hub is not None
        first, second = (_link(hub_node, app.node_uuid) for app in apps)
        hub_node.hub.link_events(second, [InterestsReceived(("svc.second",))])
        groups = (("workers", "job.*", 1),)
        hub_node.hub.link_events(first, [InterestsReceived(("svc.first",), groups)])
        await apps[0].wait_for(linked_to(hub_node, interest="svc.second"), timeout=5)
        await apps[1].wait_for(linked_to(hub_node, interest="svc.first"), timeout=5)

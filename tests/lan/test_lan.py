"""Several gravd meshed by mDNS alone: each scenario runs on two backends (gravpy/testing/lan/backends.py).

``netns``: one gravd per network namespace, the namespaces joined by a bridge in a namespace of its
own (gravpy/testing/lan/bed.py); traffic never leaves them. ``loopback``: every gravd on 127.0.0.1, mDNS
bound to 127.0.0.1 with a service type of the test's own. A backend that cannot run here is
skipped with the reason (netns needs root and iproute2; loopback needs multicast on 127.0.0.1);
the suite passes wherever one of them works.

Every wait is on a log line of gravd or an output line of an agent; the hang guard is
pytest-timeout. The one explicit bound is gravd's liveness (ping/pong) when a node is cut off.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from collections.abc import AsyncIterator
from functools import partial

import pytest

from gravpy.testing.lan.backends import (
    LIVENESS,
    Backend,
    Node,
    log_digest,
    open_backend,
    start_nodes,
    unavailable,
    wait_full_mesh,
)

_PROTOCOL = LIVENESS  # what the backends pass to gravd (--ping-interval, --dead-after)
_SLOW = float(os.environ.get("PYTEST_TIMEOUT", "120")) / 120  # a slow machine raises both
# a peer is silent for at most dead_after before it is declared dead, counted from its last
# frame, which came at most ping_interval before the cut; the rest is scheduling slack
LIVENESS_BOUND = (_PROTOCOL.dead_after + _PROTOCOL.ping_interval) * _SLOW
# peer_disconnected follows the dead verdict at once (the hub forgets the link before closing it)
CLOSE_TIMEOUT = 1.0 * _SLOW
MESHES = ("red", "red", "blue", "blue")


@pytest.fixture(params=["netns", "loopback"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    problem = unavailable(request.param)
    if problem is not None:
        pytest.skip(f"{request.param} backend: {problem}")
    async with open_backend(request.param) as opened:
        yield opened
        print(log_digest(opened.nodes))  # pytest shows it only if the test failed


async def publish_and_collect(senders: list[Node], receivers: list[Node], tag: str) -> list[str]:
    """Each sender publishes ``<tag>-<name>``; wait until every receiver has each one."""
    sent = sorted(f"{tag}-{node.name}" for node in senders)
    for node in senders:
        node.publish(f"{tag}-{node.name}")
    for receiver in receivers:  # the agent's listening pod also hears its own sending pod
        for data in sent:
            await receiver.wait_got(data)
    return sent


def tagged(node: Node, tag: str) -> Counter[str]:
    return Counter(data for data in node.got() if data.startswith(f"{tag}-"))


async def test_five_nodes_mesh_by_mdns_and_deliver_exactly_once(backend: Backend) -> None:
    """5 gravd with only mDNS form a full mesh; a message from each reaches every other once."""
    nodes = await start_nodes(backend, 5)
    await wait_full_mesh(nodes)
    for node in nodes:
        assert len(node.peers()) == 4
    sent = await publish_and_collect(nodes, nodes, "hello")
    for receiver in nodes:
        assert tagged(receiver, "hello") == Counter(sent)  # exactly once each


async def test_cut_off_node_is_noticed_and_rejoins(backend: Backend) -> None:
    """A node cut off is dropped by ping/pong while the others deliver; back, it rejoins and receives.

    netns cuts the node's eth0; loopback cannot cut a link, so it freezes the node's gravd with
    SIGSTOP (SIGCONT brings it back): either way the peers notice only because pings go unanswered.
    """
    nodes = await start_nodes(backend, 5)
    await wait_full_mesh(nodes)
    cut, others = nodes[-1], nodes[:-1]
    others_uuids = {node.uuid for node in others}

    backend.cut(cut)
    cut_at = asyncio.get_running_loop().time()
    # before the peers notice, their links to it still look open: the four must not wait on it
    silent = await publish_and_collect(others, others, "silent")
    async with asyncio.timeout_at(cut_at + LIVENESS_BOUND):  # declared dead by ping/pong
        for node in others:
            await node.wait_until(partial(node.declared_dead, cut.uuid))
    async with asyncio.timeout_at(cut_at + LIVENESS_BOUND + CLOSE_TIMEOUT):
        for node in others:
            await node.wait_until(partial(node.unlinked, cut.uuid))
    for node in others:
        # nodes that dial each other at once (each endpoint of each node) keep one link of
        # two: the other ends as a duplicate at start-up (refused here, or "closed by peer:
        # duplicate" there); the cut is the one ``dead`` link
        ended = node.logged("peer_disconnected", peer=cut.uuid)
        assert [e["reason"] for e in ended if not e["reason"].endswith("duplicate")] == ["dead"]
        assert node.peers() == others_uuids - {node.uuid}
    during = await publish_and_collect(others, others, "during")

    backend.restore(cut)
    await wait_full_mesh(nodes)
    after = await publish_and_collect(nodes, nodes, "after")
    for receiver in others:
        assert tagged(receiver, "silent") == Counter(silent)
        assert tagged(receiver, "during") == Counter(during)
        assert tagged(receiver, "after") == Counter(after)
    assert set(tagged(cut, "silent").values()) <= {1}  # lost to the cut perhaps, never doubled
    # sent while it had no link: resent from the origins' buffers when it relinks (resume), or
    # not at all; never twice
    assert set(tagged(cut, "during").values()) <= {1}
    assert tagged(cut, "after") == Counter(after)


async def test_two_meshes_on_one_lan_stay_apart(backend: Backend) -> None:
    """Nodes of mesh red and mesh blue see each other's records yet link and deliver only within."""
    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(backend.start(i, mesh=mesh)) for i, mesh in enumerate(MESHES)]
    nodes = [task.result() for task in tasks]
    red, blue = nodes[:2], nodes[2:]
    sent: dict[str, list[str]] = {}
    for mesh, members, strangers in (("red", red, blue), ("blue", blue, red)):
        await wait_full_mesh(members)
        for node in members:  # the other mesh's records arrived, and were refused for their mesh
            for stranger in strangers:
                await node.wait_until(partial(node.refused_for_mesh, stranger.uuid))
        sent[mesh] = await publish_and_collect(members, members, mesh)
    for mesh, members, strangers in (("red", red, blue), ("blue", blue, red)):
        for node in members:
            assert node.peers() == {m.uuid for m in members} - {node.uuid}
            assert Counter(node.got()) == Counter(sent[mesh])  # its own mesh's, once; nothing else
            for stranger in strangers:  # never dialled, linked or even tried
                assert not [
                    event
                    for event in node.events
                    if stranger.uuid in (event.get("peer"), event.get("node"))
                    or event.get("endpoint") == stranger.endpoint
                ]

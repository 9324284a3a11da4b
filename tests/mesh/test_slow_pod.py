"""A slow pod behind a link: it drops its own overflow (counted) and never holds back its siblings."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

import gravpy
from discovery.static import StaticDiscovery
from gravpy import Grav, Message
from tests._bus_helpers import GUARD

from .conftest import FAST, NodeFactory, linked_to

SENT = 5_000


@asynccontextmanager
async def _receiver(node: NodeFactory, sender: Grav, behind: str) -> AsyncIterator[Grav]:
    """The receiving side, one link away from ``sender``: a peer node, or an app attached to
    ``sender`` as a leaf."""
    if behind == "peer":
        yield await node(discovery=[StaticDiscovery(sender.endpoints())])
        return
    async with gravpy.connect(sender.endpoints()[0], hub_config=FAST) as app:
        yield app


@pytest.mark.parametrize("behind", ["peer", "leaf"])
async def test_a_slow_pod_is_set_aside_and_its_sibling_gets_everything(
    node: NodeFactory, behind: str
) -> None:
    """A pod that relieves within each of its link's steps yet cannot keep up stops holding the
    link: its sibling behind the same link gets all 5,000 messages in order, the slow pod drops
    its overflow (counted), and the link stays up."""
    a = await node()
    async with _receiver(node, a, behind) as b:

        async def slow(msg: Message) -> None:
            await asyncio.sleep(0.002)  # ~500 messages/s; 25 relieve its inbox of 100

        slow_pod = b.connect(inbox_limit=100)
        slow_pod.on_type("flow.>", slow)
        got: list[int] = []
        all_in = asyncio.Event()

        def append(msg: Message) -> None:
            got.append(int(msg.text()))
            if len(got) == SENT:
                all_in.set()

        sibling = b.connect()
        sibling.on_type("flow.>", append)
        await a.wait_for(linked_to(b, interest="flow.>"), timeout=GUARD)
        sender = a.connect()
        for i in range(SENT):
            sender.send(Message.new("flow.n", str(i)))
            if i % 500 == 499:
                await asyncio.sleep(0)  # a producer that yields now and then, like any app
        async with asyncio.timeout(GUARD):
            await all_in.wait()
        assert got == list(range(SENT))
        s = slow_pod.statistics()
        assert s.dropped_overflow > 0
        assert s.received + s.dropped_overflow == SENT
        assert [p.state for p in b.peers()] == ["open"]
        assert b.hub is not None
        assert b.hub.statistics().links_opened == 1  # never relinked

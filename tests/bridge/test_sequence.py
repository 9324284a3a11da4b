"""Numbered exports: an importer counts the numbers of another mesh's exporter that never came."""

from __future__ import annotations

import asyncio

import nats
import pytest

from gravpy import Message
from gravpy.bridge.sequence import Gaps, Numbering, sequence_of
from tests._bus_helpers import until
from tests.bridge.nats_proc import NatsServer
from tests.bridge.test_embedded import node

pytestmark = pytest.mark.timeout(60)


def test_numbers_run_per_subject_and_gaps_are_counted() -> None:
    """Each subject has its own numbers from 1 in each epoch; the importer counts the missing
    ones, those before the first it sees included, and starts afresh when the numbers go back."""
    numbering = Numbering()
    stamps = [numbering.stamp(s) for s in ("a", "a", "b", "a")]
    seqs = [sequence_of("uuid 1.0" + stamp) for stamp in stamps]
    assert seqs == [(numbering.tag, 1), (numbering.tag, 2), (numbering.tag, 1), (numbering.tag, 3)]
    assert sequence_of("uuid 1.0 p=x") is None
    gaps = Gaps()
    assert [gaps.seen("t", "a", n) for n in (4, 5, 8, 9, 2, 3)] == [3, 0, 2, 0, 1, 0]
    assert gaps.seen("u", "a", 1) == 0  # another exporter, or a new epoch
    tag = numbering.tag
    numbering.restart()
    assert numbering.tag != tag
    assert sequence_of("uuid 1.0" + numbering.stamp("a")) == (numbering.tag, 1)


async def test_a_bridge_counts_what_nats_lost_of_a_numbered_stream(nats_one: NatsServer) -> None:
    """Numbered messages on NATS whose numbers skip (what a server lost) are delivered, and the
    numbers that never came are counted as 'gap' in the importing bridge's losses."""
    g, bridge = node("west", nats_one.url)
    async with g:
        got: asyncio.Queue[Message] = asyncio.Queue()
        g.connect().on_type("stream.n", got.put_nowait)
        async with asyncio.timeout(10):
            await until(
                lambda: (
                    bridge.statistics().exporter
                    and "stream.n" in str(bridge.statistics().mesh_wants)
                )
            )
        async with asyncio.timeout(10):
            while True:
                if await subscribed(nats_one, "gravpy.*.stream.n"):
                    break
                await asyncio.sleep(0.02)  # the server has no event to wait on: re-ask
        nc = await nats.connect(nats_one.url)
        try:
            for i, n in enumerate((1, 2, 5, 6, 9)):
                meta = f"{i:032x} 1.0 s=feed:{n}"
                await nc.publish("gravpy.east.stream.n", b"x", headers={"Grav-Meta": meta})
            await nc.flush()
        finally:
            await nc.close()
        for _ in range(5):
            await asyncio.wait_for(got.get(), 10)
        assert bridge.statistics().lost == {"gap": 4}


async def subscribed(server: NatsServer, subject: str) -> bool:
    """True once ``server`` holds a subscription to ``subject`` (its /subsz)."""
    subs = (await server.monitor("subsz?subs=1")).get("subscriptions_list") or []
    return any(sub["subject"] == subject for sub in subs)

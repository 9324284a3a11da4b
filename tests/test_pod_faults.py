"""Pods under load in one process: bursts, stuck consumers and backpressure (issue-10 scenarios)."""

from __future__ import annotations

import asyncio
import os

from gravpy import Grav, Message
from tests._bus_helpers import until

GUARD = 30.0 * float(os.environ.get("GRAVPY_TEST_SCALE", "1"))  # a hang guard, not a timing


async def test_a_fast_pod_absorbs_bursts_larger_than_one_loop_turn() -> None:
    """A sender yielding every 5,000 sends into a fast pod with a 10,000 inbox loses nothing."""
    async with Grav(inbox_limit=10_000) as g:
        got = 0

        def count(msg: Message) -> None:
            nonlocal got
            got += 1

        receiver = g.connect()
        receiver.on(count)
        sender = g.connect()
        for i in range(50_000):
            sender.send(Message.new("burst.x", b"."))
            if i % 5_000 == 4_999:
                await asyncio.sleep(0)
        await until(lambda: got + receiver.statistics().dropped_overflow == 50_000)
        assert receiver.statistics().dropped_overflow == 0
        assert got == 50_000


async def test_a_stuck_pod_does_not_block_publish_or_its_healthy_sibling() -> None:
    """publish() waits only for moving consumers: a stuck pod is set aside and drops (counted)."""
    async with Grav(inbox_limit=10_000) as g:
        never = asyncio.Event()

        async def stuck(msg: Message) -> None:
            await never.wait()

        healthy_got = 0

        def healthy(msg: Message) -> None:
            nonlocal healthy_got
            healthy_got += 1

        stuck_pod = g.connect()
        stuck_pod.on(stuck)
        healthy_pod = g.connect()
        healthy_pod.on(healthy)
        sender = g.connect()
        async with asyncio.timeout(GUARD):
            for _ in range(30_000):
                await sender.publish(Message.new("work.x", b"."))
        await until(lambda: healthy_got == 30_000)
        s = stuck_pod.statistics()
        assert s.dropped_overflow > 0
        assert s.received + s.dropped_overflow == 30_000
        never.set()

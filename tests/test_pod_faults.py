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


async def test_a_slow_pod_holds_publish_only_within_its_budget_then_drops_counted() -> None:
    """publish() waits out a pod that keeps relieving yet cannot keep up (slow, not stuck) only
    until its waits outgrow the time it ran free by ``hold_budget``: then the pod is set aside
    and drops its overflow (counted), and its sibling gets every message, in order."""
    async with Grav() as g:
        g.bus.congestion.hold_budget = (
            0.2  # (3 s by default: the same budget a link gives a slow pod)
        )

        async def slow(msg: Message) -> None:
            await asyncio.sleep(0.001)  # ~1,000 messages/s at best: far slower than the sender

        slow_pod = g.connect(inbox_limit=100)
        slow_pod.on(slow)
        got: list[int] = []
        sibling = g.connect()
        sibling.on(lambda m: got.append(int(m.text())))
        sender = g.connect()
        async with asyncio.timeout(GUARD):
            for i in range(5_000):
                await sender.publish(Message.new("work.x", str(i)))
        await until(lambda: len(got) == 5_000)
        assert got == list(range(5_000))
        s = slow_pod.statistics()
        assert s.dropped_overflow > 0  # (before, publish waited for it: nothing was dropped)
        s = slow_pod.statistics()
        assert s.received + s.dropped_overflow == 5_000
        await until(lambda: slow_pod.statistics().handled == s.received)  # the rest: handled

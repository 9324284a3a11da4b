"""Leaf replay: an app attached to a real gravd replays gravd's buffer, then goes on live."""

from __future__ import annotations

import asyncio
import os

import gravpy
from gravpy import Message
from gravpy.testing.gravd import running_gravd

GUARD = 30.0 * float(os.environ.get("GRAVPY_TEST_SCALE", "1"))  # a hang guard, not a timing


def _seq(msg: Message) -> int:
    return int.from_bytes(msg.data[:4], "big")


async def test_a_leaf_replays_gravds_buffer_then_the_live_stream_without_gap_or_duplicate() -> None:
    """A replaying pod on a leaf gets gravd's buffered messages oldest first, then every live one,
    each once, while the publisher keeps sending across the seam."""
    async with (
        running_gravd() as node,
        gravpy.connect(node.endpoint) as watcher,
        gravpy.connect(node.endpoint) as publisher,
        gravpy.connect(node.endpoint) as app,
    ):
        watcher.connect().on_type("rp.x", lambda m: None)  # gravd relays rp.x, so it buffers it
        await publisher.wait_for(lambda ps: any("rp.x" in p.interests for p in ps), GUARD)
        sender = publisher.connect()
        for i in range(100):
            await sender.publish(Message.new("rp.x", i.to_bytes(4, "big")))
        got: list[int] = []
        done = asyncio.Event()

        def keep(msg: Message) -> None:
            got.append(_seq(msg))
            if got[-1] == 299:
                done.set()

        pod = app.connect_with_replay()
        pod.on_type("rp.x", keep)
        for i in range(100, 300):  # the stream goes on while the replay is asked and answered
            await sender.publish(Message.new("rp.x", i.to_bytes(4, "big")))
            if i % 10 == 0:
                await asyncio.sleep(0)
        async with asyncio.timeout(GUARD):
            await done.wait()
        assert got[0] < 100, got[:5]  # it got messages sent before it existed, from gravd
        assert got == list(range(got[0], 300)), got
        assert app.hub is not None
        assert app.hub.traffic.replays.answered == 1


async def test_a_leaf_replay_gets_only_the_types_the_pod_admits() -> None:
    """gravd's buffer holds two types; the replaying pod that admits one gets only that one."""
    async with (
        running_gravd() as node,
        gravpy.connect(node.endpoint) as watcher,
        gravpy.connect(node.endpoint) as publisher,
        gravpy.connect(node.endpoint) as app,
    ):
        watcher.connect().on_type("kind.>", lambda m: None)
        await publisher.wait_for(lambda ps: any("kind.>" in p.interests for p in ps), GUARD)
        sender = publisher.connect()
        for i in range(20):
            await sender.publish(Message.new("kind.a" if i % 2 else "kind.b", i.to_bytes(4, "big")))
        got: asyncio.Queue[Message] = asyncio.Queue(maxsize=100)
        app.connect_with_replay().on_type("kind.a", got.put_nowait)
        async with asyncio.timeout(GUARD):
            seen = [_seq(await got.get()) for _ in range(10)]
        assert seen == list(range(1, 20, 2))
        assert got.empty()

"""A bridge whose mesh's interests keep changing: it announces each change, and still becomes
ready and still forgets a bridge that fell silent (``NatsBridge._announce_loop``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from gravpy import Grav, Message
from gravpy.bridge import NatsBridgeConfig
from gravpy.bridge.nats import NatsBridge
from gravpy.bridge.subjects import Announcement, SubjectMap
from gravpy.pod import Pod
from tests._bus_helpers import until
from tests.bridge.nats_proc import NatsServer
from transports.websocket import WebSocketTransport

pytestmark = pytest.mark.timeout(60)

INTEREST = SubjectMap("gravpy", "east").interest_subject


@contextlib.asynccontextmanager
async def churning(grav: Grav, watcher: Client) -> AsyncIterator[asyncio.Event]:
    """While inside: a pod that wants ``churn.<i>`` replaced by one that wants ``churn.<i+1>``
    as soon as the bridge has announced the change (many times an interval). Yields an event
    set once an announcement was heard: the bridge subscribed to announcements before it sent
    its first, on the same connection, so from then on it hears what others announce."""
    heard: asyncio.Queue[bytes] = asyncio.Queue()
    first = asyncio.Event()

    async def on_announcement(m: Msg) -> None:
        heard.put_nowait(m.data)
        first.set()

    # (a callback, not ``next_msg``: cancelling a task inside nats-py's ``next_msg`` can leave a
    # never-awaited coroutine behind, whose warning then fails a later test)
    announcements = await watcher.subscribe(INTEREST, cb=on_announcement)

    async def churn() -> None:
        pod: Pod | None = None
        for i in range(1_000_000):
            new = grav.connect()
            new.on_type(f"churn.{i}", ignore)
            if pod is not None:
                pod.disconnect()
            pod = new
            while f"churn.{i}" not in json.loads(await heard.get())["patterns"]:
                pass

    task = asyncio.create_task(churn())
    try:
        yield first
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await announcements.unsubscribe()


def ignore(_: Message) -> None:
    pass


async def test_a_changing_mesh_still_makes_its_bridge_ready_and_forgets_the_silent(
    nats_one: NatsServer,
) -> None:
    """With its mesh's interests changing every few milliseconds, the bridge becomes ready
    within the ttl, and a bridge of another mesh heard once and silent since is forgotten
    after the ttl (counted in ``remote_expired``)."""
    config = NatsBridgeConfig(servers=(nats_one.url,), announce_interval=0.2, ttl=1.0)
    bridge = NatsBridge(config)
    grav = Grav(transport=WebSocketTransport("127.0.0.1", 0), belongs_to="east", bridges=[bridge])
    watcher = await nats.connect(nats_one.url)
    try:
        async with grav:
            async with asyncio.timeout(10):
                await until(lambda: bridge.statistics().state == "connected")
            async with churning(grav, watcher) as announcing:
                async with asyncio.timeout(5):  # ("connected" comes before it subscribes)
                    await announcing.wait()
                silent = Announcement("west", "silent-node", ("x.*",), ready=True)
                await watcher.publish(INTEREST, silent.encode())
                async with asyncio.timeout(5):
                    await until(lambda: "x.*" in bridge.statistics().remote_wants)
                async with asyncio.timeout(5):  # (ttl 1 s; a starved loop: never)
                    await until(lambda: bridge.statistics().ready)
                async with asyncio.timeout(5):
                    await until(lambda: bridge.statistics().remote_expired == 1)
                stats = bridge.statistics()
                assert "x.*" not in stats.remote_wants
                assert any(p.startswith("churn.") for p in stats.mesh_wants)
    finally:
        await watcher.close()

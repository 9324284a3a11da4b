"""Faults behind gravd: slow pods in attached apps, responders whose node dies (real gravd)."""

from __future__ import annotations

import asyncio
import json
import os
import signal

import gravpy
from gravpy import Message
from gravpy.errors import LinkClosedError
from gravpy.mesh import HubConfig
from gravpy.proto import ProtocolConfig
from gravpy.testing.gravd import GRAVD, LOCAL, running_gravd

LIVENESS = ("--ping-interval", "0.25", "--dead-after", "1")
DEAD_AFTER = 1.0
# apps ping as often as their gravd expects (each side pings on its own interval)
APP_LIVENESS = HubConfig(protocol=ProtocolConfig(ping_interval=0.25, dead_after=DEAD_AFTER))
GUARD = 60.0 * float(os.environ.get("GRAVPY_TEST_SCALE", "1"))  # a hang guard, not a timing


async def test_a_slow_pod_in_an_attached_app_never_starves_its_sibling_or_its_link() -> None:
    """10,000 x 1 KiB through gravd: the sibling gets all, the slow pod's drops are counted,
    and the app's link stays up."""
    async with running_gravd(*LIVENESS) as node:
        url = node.endpoint
        async with (
            gravpy.connect(url, hub_config=APP_LIVENESS) as app,
            gravpy.connect(url, hub_config=APP_LIVENESS) as publisher,
        ):
            stuck = asyncio.Event()  # set only as the test ends: the pod takes no more meanwhile

            async def slow(msg: Message) -> None:
                await stuck.wait()

            got: list[int] = []
            all_in = asyncio.Event()

            def append(msg: Message) -> None:
                got.append(int.from_bytes(msg.data[:4], "big"))
                if len(got) == 10_000:
                    all_in.set()

            slow_pod = app.connect(inbox_limit=1000)
            slow_pod.on_type("flood.x", slow)
            sibling = app.connect(inbox_limit=10_000)
            sibling.on_type("flood.x", append)
            await node.wait_interest("flood.x")
            # the publisher's own node must know too, or its first sends reach no one (counted
            # undelivered, not lost: a race of the test, not of the mesh)
            await publisher.wait_for(
                lambda peers: any("flood.x" in p.interests for p in peers), GUARD
            )
            sender = publisher.connect()
            payload = b"\0" * 1020
            for i in range(10_000):
                sender.send(Message.new("flood.x", i.to_bytes(4, "big") + payload))
                if i % 500 == 499:
                    await asyncio.sleep(0)  # a producer that yields now and then, like any app
            async with asyncio.timeout(GUARD):
                await all_in.wait()
            assert got == list(range(10_000))
            s = slow_pod.statistics()
            assert s.dropped_overflow > 0
            assert s.received + s.dropped_overflow == 10_000
            assert app.hub is not None
            assert app.hub.statistics().links_opened == 1  # never relinked: the link stayed up
            assert [p.state for p in app.peers()] == ["open"], "\n".join(node.process.stderr[-20:])
            stuck.set()


async def test_a_leafs_request_fails_soon_after_the_answering_node_stops() -> None:
    """Requester on gravd A, responder on gravd B: B stops mid-request, the wait fails with
    LinkClosedError within dead_after (plus slack), not after its own timeout."""
    async with (
        running_gravd(*LIVENESS) as a,
        running_gravd("--peer", a.endpoint, *LIVENESS) as b,
        gravpy.connect(b.endpoint, hub_config=APP_LIVENESS) as responder_app,
    ):
        responder = responder_app.connect()
        asked = asyncio.Event()
        responder.on_type("svc.slow", lambda m: asked.set())  # never answers
        await a.wait_interest("svc.slow")
        async with gravpy.connect(a.endpoint, hub_config=APP_LIVENESS) as requester_app:
            receipt = requester_app.connect().send(Message.new("svc.slow", b"?"))
            async with asyncio.timeout(GUARD):
                await asked.wait()
            loop = asyncio.get_running_loop()
            b.process.signal(signal.SIGSTOP)  # alive but silent: only liveness can tell
            try:
                started = loop.time()
                try:
                    await receipt.wait_until(30)
                except LinkClosedError:
                    elapsed = loop.time() - started
                else:  # pragma: no cover - the assertion below reports it
                    elapsed = -1.0
            finally:
                b.process.signal(signal.SIGCONT)
            assert 0 <= elapsed < DEAD_AFTER + 2.0, elapsed


async def test_gravd_whose_log_pipe_broke_still_links_apps_and_stops_on_sigterm() -> None:
    """A log collector that dies never breaks gravd: apps still attach, SIGTERM still stops it."""
    read_end, write_end = os.pipe()
    proc = await asyncio.create_subprocess_exec(
        *GRAVD, *LOCAL, *LIVENESS, stdin=asyncio.subprocess.DEVNULL, stderr=write_end
    )
    os.close(write_end)
    try:
        with os.fdopen(read_end, "rb") as log:
            async with asyncio.timeout(GUARD):
                while True:  # gravd's first lines, until it says where it listens
                    line = await asyncio.to_thread(log.readline)
                    assert line, "gravd exited before listening"
                    if b'"listening"' in line:
                        break
        endpoint = json.loads(line)["endpoints"][0]  # the pipe is now closed at our end
        async with gravpy.connect(endpoint, hub_config=APP_LIVENESS, timeout=10) as app:
            pod = app.connect()
            pod.on_type("after.break", lambda m: None)
            assert [p.state for p in app.peers()] == ["open"]
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(GUARD):
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()

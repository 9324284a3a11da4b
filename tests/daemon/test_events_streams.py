"""/v1/events/stream's bounds, in process over real HTTP on 127.0.0.1: a cap on open streams, and
a stream's pod released as soon as its client goes."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gravpy import Grav
from gravpy.daemon import events_http
from gravpy.daemon.config import Address, DaemonConfig
from gravpy.daemon.events_http import MAX_STREAMS
from gravpy.daemon.events_node import DaemonEvents
from gravpy.daemon.monitor import Monitor, NodeStatus
from tests._bus_helpers import GUARD, until


@dataclass
class Served:
    grav: Grav
    base: str

    def pods(self) -> int:
        return self.grav.statistics().pods


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    """A loopback monitor with events kept in memory."""
    async with Grav() as grav:
        config = DaemonConfig()
        status = NodeStatus(grav, config)
        status.events = await DaemonEvents.open(grav, config, in_memory=True)
        monitor = Monitor(status, Address("127.0.0.1", 0))
        try:
            yield Served(grav, f"http://{await monitor.start()}")
        finally:
            await monitor.stop()
            await status.events.close()


def _stream_path() -> str:
    return f"/v1/events/stream?user={uuid.uuid4()}"


async def _metric(base: str, name: str) -> float:
    async with aiohttp.ClientSession() as session, session.get(base + "/metrics") as response:
        text = await response.text()
    return next(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    )


async def test_streams_past_the_cap_answer_503_and_are_counted(served: Served) -> None:
    """With MAX_STREAMS streams open (none reading), one more answers 503 saying why and is
    counted, without a pod of its own; once one ends, a new stream is served again."""
    before = served.pods()
    async with AsyncExitStack() as streams, aiohttp.ClientSession() as session:
        opened = [
            await streams.enter_async_context(session.get(served.base + _stream_path()))
            for _ in range(MAX_STREAMS)
        ]
        assert {r.status for r in opened} == {200}
        assert served.pods() == before + MAX_STREAMS
        async with session.get(served.base + _stream_path()) as refused:
            assert refused.status == 503
            assert "streams" in (await refused.json())["error"]
        assert served.pods() == before + MAX_STREAMS
        assert await _metric(served.base, "gravd_event_streams_refused_total") == 1
        assert await _metric(served.base, "gravd_event_streams") == MAX_STREAMS
        opened[0].close()
        await until(lambda: served.pods() == before + MAX_STREAMS - 1)
        async with session.get(served.base + _stream_path()) as again:
            assert again.status == 200


async def test_a_stream_whose_client_goes_releases_its_pod_at_once(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client that closes its stream takes the stream's pod (and its interest) with it then,
    not at the next keep-alive ping (made an hour here, so only the disconnect can do it)."""
    monkeypatch.setattr(events_http, "PING_INTERVAL", 3600.0)
    before = served.pods()
    host, port = served.base.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(f"GET {_stream_path()} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    async with asyncio.timeout(GUARD):
        head = await reader.readuntil(b"\r\n\r\n")  # the stream is open: its pod exists
    assert head.startswith(b"HTTP/1.1 200")
    assert served.pods() == before + 1
    writer.close()
    await writer.wait_closed()
    await until(lambda: served.pods() == before)
    async with aiohttp.ClientSession() as session, session.get(served.base + "/v1/node") as node:
        assert json.loads(await node.text())["pods"]["count"] == before

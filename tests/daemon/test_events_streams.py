"""/v1/events/stream's bounds, in process over real HTTP on 127.0.0.1: a cap on open streams, and
a stream's pod released as soon as its client goes."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import aiohttp
import pytest

from gravpy.daemon import events_http
from gravpy.daemon.events_http import MAX_STREAMS
from tests._bus_helpers import GUARD, until
from tests.daemon.monitor_kit import Served, metric, served_monitor


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    """A loopback monitor with events kept in memory."""
    async with served_monitor() as running:
        yield running


def _stream_path() -> str:
    return f"/v1/events/stream?user={uuid.uuid4()}"


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
        assert await metric(served.base, "gravd_event_streams_refused_total") == 1
        assert await metric(served.base, "gravd_event_streams") == MAX_STREAMS
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

"""The monitoring port's limits against slow and greedy clients, in process with raw sockets on
127.0.0.1: a cap on open connections, deadlines for a request's headers and body."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import pytest

from gravpy.daemon.monitor import Monitor
from tests._bus_helpers import GUARD, until
from tests.daemon.monitor_kit import metric, served_monitor
from transports.http import guard

SLOW_HEAD = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"  # the blank line never comes


@asynccontextmanager
async def _monitor(**limits: float) -> AsyncIterator[tuple[Monitor, str]]:
    """A monitor on 127.0.0.1 with these limits and events in memory; its base URL."""
    async with served_monitor(**limits) as running:
        yield running.monitor, running.base


async def _slow(base: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = base.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(SLOW_HEAD)
    await writer.drain()
    return reader, writer


async def _closed_by_server(reader: asyncio.StreamReader) -> bytes:
    """What the server sent before it closed the connection."""
    try:
        return await reader.read()
    except ConnectionResetError:
        return b""


async def test_slow_sockets_past_the_cap_are_closed_at_once_and_counted() -> None:
    """300 sockets that never finish their headers: past the cap of 20 each is closed at once
    and counted (none is held open): refused, or, where opening them took over a second on a
    busy machine, in place of an admitted one idle that long (evicted, counted as timed out);
    20 stay open for the header deadline, and once they are gone /healthz and /metrics answer
    again."""
    async with _monitor(max_connections=20, header_timeout=3600) as (monitor, base):
        sockets = [await _slow(base) for _ in range(300)]
        readers = [asyncio.ensure_future(_closed_by_server(r)) for r, _ in sockets]
        async with asyncio.timeout(GUARD):
            while sum(r.done() for r in readers) < 280:
                await asyncio.wait(
                    [r for r in readers if not r.done()], return_when=asyncio.FIRST_COMPLETED
                )
        assert [r.result() for r in readers if r.done()] == [b""] * 280  # closed, no answer
        stats = monitor.statistics()
        assert stats.connections == 20
        assert stats.connections_refused + stats.connections_timed_out == 280
        for reader, (_, writer) in zip(readers, sockets, strict=True):
            writer.close()
            reader.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        await until(lambda: monitor.statistics().connections == 0)
        refused = await metric(base, "gravd_monitor_connections_refused_total")
        evicted = await metric(base, "gravd_monitor_connections_timed_out_total")
        assert (refused, evicted) == (stats.connections_refused, stats.connections_timed_out)
        async with aiohttp.ClientSession() as session, session.get(base + "/healthz") as answer:
            assert answer.status == 200


async def test_headers_not_sent_in_time_close_the_connection() -> None:
    """A socket that does not finish its request's headers within the deadline is closed and
    counted, freeing its place."""
    async with _monitor(max_connections=4, header_timeout=0.2) as (monitor, base):
        sockets = [await _slow(base) for _ in range(4)]
        async with asyncio.timeout(GUARD):
            answers = await asyncio.gather(*(_closed_by_server(r) for r, _ in sockets))
        assert answers == [b""] * 4
        for _, writer in sockets:
            writer.close()
        assert monitor.statistics().connections_timed_out == 4
        assert await metric(base, "gravd_monitor_connections_timed_out_total") == 4


async def test_a_body_not_sent_in_time_is_answered_408() -> None:
    """A PATCH whose body never completes is answered 408 at the body deadline and its
    connection closed, not held."""
    async with _monitor(body_timeout=0.2) as (monitor, base):
        reader, writer = await asyncio.open_connection(*base[7:].rsplit(":", 1))
        writer.write(
            f"PATCH /v1/events/{uuid.uuid4()} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode()
            + b'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"sta'
        )
        await writer.drain()
        async with asyncio.timeout(GUARD):
            answer = await _closed_by_server(reader)  # answered, then closed: nothing lingers
        assert answer.startswith(b"HTTP/1.1 408"), answer
        writer.close()
        assert monitor.statistics().connections_timed_out == 1


async def test_a_health_check_gets_in_while_silent_sockets_hold_every_place(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With the cap taken by sockets that have sent nothing (for EVICT_IDLE, here at once), a
    health check still gets its answer: the one idle longest makes room for it (counted as
    timed out)."""
    monkeypatch.setattr(guard, "EVICT_IDLE", 0.0)
    async with _monitor(max_connections=8, header_timeout=3600) as (monitor, base):
        sockets = [await _slow(base) for _ in range(8)]
        await until(lambda: monitor.statistics().connections == 8)
        async with aiohttp.ClientSession() as session, session.get(base + "/healthz") as answer:
            assert answer.status == 200
        stats = monitor.statistics()
        assert (stats.connections_refused, stats.connections_timed_out) == (0, 1)
        assert await _closed_by_server(sockets[0][0]) == b""  # the oldest went
        for _, writer in sockets:
            writer.close()

"""The HTTP listener's limits against slow and greedy clients, with raw sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from gravpy.errors import LinkClosedError
from gravpy.plugins import Link
from gravpy.transport_kit import RateLimitFilter
from tests._bus_helpers import until
from transports.http import HttpTransport

_MAX_FRAME = "X-Grav-Max-Frame-Bytes"


@asynccontextmanager
async def _listening(
    on_link: Callable[[Link], Awaitable[None]], **kwargs: object
) -> AsyncIterator[tuple[HttpTransport, int]]:
    transport = HttpTransport("127.0.0.1", 0, **kwargs)  # type: ignore[arg-type]
    await transport.start(on_link)
    try:
        port = int(transport.endpoints()[0].rsplit(":", 1)[1].split("/")[0])
        yield transport, port
    finally:
        await transport.stop()


async def _hold(link: Link) -> None:
    """Keep the link until it closes (as a node does while the handshake waits)."""
    with contextlib.suppress(LinkClosedError):
        while True:
            await link.recv()


async def _closed_by_server(reader: asyncio.StreamReader) -> bytes:
    """Read until the server closes the connection (a guard of 5 s); return what it sent."""
    async with asyncio.timeout(5):
        try:
            return await reader.read()
        except ConnectionResetError:
            return b""


async def test_a_dribbled_header_is_cut_off_at_the_header_deadline() -> None:
    """A client that sends a request line and then one header byte at a time is disconnected."""
    async with _listening(_hold, header_timeout=0.3) as (transport, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /meta/http/open HTTP/1.1\r\nHost: x\r\n")
        closed = asyncio.ensure_future(_closed_by_server(reader))
        while not closed.done():
            writer.write(b"X")  # never a full header line
            await asyncio.wait([closed], timeout=0.05)
        assert await closed == b""
        assert transport.guard.timed_out == 1
        writer.close()


async def test_a_dribbled_body_is_answered_408() -> None:
    """A request whose body never completes gets 408 after the body deadline."""
    async with _listening(_hold, body_timeout=0.3) as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST /meta/http/open HTTP/1.1\r\nHost: x\r\n"
            + f"{_MAX_FRAME}: 4096\r\nContent-Length: 0\r\n\r\n".encode()
        )
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
        session = json.loads(await reader.readexactly(length))["session"]
        writer.write(
            b"POST /meta/http/close HTTP/1.1\r\nHost: x\r\n"
            + f"X-Grav-Session: {session}\r\nContent-Length: 100\r\n\r\nab".encode()
        )
        await writer.drain()
        answer = await asyncio.wait_for(reader.readuntil(b"\r\n"), 5)
        assert b" 408 " in answer
        writer.close()


async def test_connections_past_the_cap_are_refused_at_once() -> None:
    """With 5 connections open, a 6th is closed without an answer; after one leaves, one more
    is admitted."""
    async with _listening(_hold, max_connections=5, header_timeout=30) as (transport, port):
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(5)]
        await until(lambda: transport.guard.open == 5)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await _closed_by_server(reader) == b""
        assert transport.guard.refused == 1
        writer.close()
        held[0][1].close()
        await until(lambda: transport.guard.open == 4)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b" 404 " in await asyncio.wait_for(reader.readuntil(b"\r\n"), 5)
        for _, w in [*held[1:], (reader, writer)]:
            w.close()


async def _open(port: int) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"POST /meta/http/open HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        + f"{_MAX_FRAME}: 4096\r\nContent-Length: 0\r\n\r\n".encode()
    )
    status = int((await asyncio.wait_for(reader.readuntil(b"\r\n"), 5)).split()[1])
    writer.close()
    return status


async def test_sessions_whose_link_ended_do_not_fill_the_table() -> None:
    """Bare opens whose link ends at once never poll, yet a full table still opens new sessions,
    while sessions whose link is alive keep the cap."""

    async def give_up(link: Link) -> None:
        """A handshake that fails at once."""

    async with _listening(give_up, max_sessions=3) as (_, port):
        assert [await _open(port) for _ in range(6)] == [200] * 6
    async with _listening(_hold, max_sessions=3) as (_, port):
        assert [await _open(port) for _ in range(4)] == [200, 200, 200, 503]


def test_error_logs_are_rate_limited() -> None:
    """Of 1,000 records in one burst, 10 pass (one with its traceback), and the next window says
    how many were suppressed."""
    limit = RateLimitFilter(burst=10, period=3600)
    records = [
        logging.LogRecord(
            "x", logging.ERROR, "f", 1, "boom", None, (ValueError, ValueError(), None)
        )
        for _ in range(1000)
    ]
    passed = [r for r in records if limit.filter(r)]
    assert len(passed) == 10
    assert sum(r.exc_info is not None for r in passed) == 1
    assert limit.suppressed == 990
    limit._window -= 3600
    late = logging.LogRecord("x", logging.ERROR, "f", 1, "boom", None, None)
    assert limit.filter(late)
    assert "990 similar records suppressed" in late.getMessage()

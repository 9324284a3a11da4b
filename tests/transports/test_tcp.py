"""Tests for transports.tcp: the TCP transport on 127.0.0.1, port 0."""

from __future__ import annotations

import asyncio
import itertools
import struct
from collections.abc import AsyncIterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gravpy.errors import LinkClosedError, TransportError, UsageError
from gravpy.plugins import load_transport
from gravpy.testing import check_transport
from tests.transports._link_server import LinkServer, serving
from transports.tcp import TcpTransport
from transports.tcp_link import TcpLink


def _local(**options: object) -> TcpTransport:
    settings: dict[str, object] = {"host": "127.0.0.1", "port": 0, **options}
    return TcpTransport(**settings)  # type: ignore[arg-type]


@pytest.fixture
async def server() -> AsyncIterator[LinkServer[TcpTransport]]:
    async with serving(_local(max_frame_bytes=4096, handshake_timeout=0.2)) as srv:
        yield srv


async def _raw(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


def _greeting(limit: int = 1 << 20) -> bytes:
    return struct.pack(">7sBI", b"GRAVTCP", 1, limit)


async def test_tcp_transport_passes_the_conformance_check() -> None:
    """TcpTransport meets every behaviour the core relies on."""
    await check_transport(_local)


async def test_conformance_with_a_small_frame_limit_and_queue() -> None:
    """The limit and backpressure checks hold with a small frame limit, queue and write buffer."""
    await check_transport(lambda: _local(max_frame_bytes=4096, max_queue=2, write_limit=1024))


async def test_the_plugin_is_registered_as_tcp() -> None:
    """load_transport("tcp") finds TcpTransport (entry point or built-in path)."""
    assert load_transport("tcp") is TcpTransport


async def test_endpoint_reports_the_bound_port(server: LinkServer[TcpTransport]) -> None:
    """After start() with port 0, endpoints() names tcp://127.0.0.1 and the real port."""
    assert server.transport.endpoints() == [f"tcp://127.0.0.1:{server.port}"]
    assert server.port != 0


async def test_dial_by_host_and_port(server: LinkServer[TcpTransport]) -> None:
    """dial("host:port") dials tcp://, and frames flow both ways."""
    link = await _local().dial(f"127.0.0.1:{server.port}", timeout=5)
    accepted = await server.links.get()
    await link.send(b"over host:port")
    assert await accepted.recv() == b"over host:port"
    await accepted.send(b"back")
    assert await link.recv() == b"back"
    assert link.remote_address == f"127.0.0.1:{server.port}"
    await link.close()


async def test_write_now_writes_at_once_until_the_link_is_closed_or_the_frame_too_large(
    server: LinkServer[TcpTransport],
) -> None:
    """write_now sends a frame without waiting, in order with send; it writes nothing and says
    False for a frame over the peer's limit and once the link is closed."""
    link = await _local().dial(server.url, timeout=5)
    assert isinstance(link, TcpLink)
    accepted = await server.links.get()
    assert link.write_now(b"first")
    await link.send(b"second")
    assert link.write_now(b"third")
    assert [await accepted.recv() for _ in range(3)] == [b"first", b"second", b"third"]
    assert not link.write_now(bytes(4097))  # the server's max_frame_bytes is 4096
    await link.close()
    assert not link.write_now(b"after close")
    with pytest.raises(LinkClosedError):
        await accepted.recv()


async def test_a_frame_sink_takes_frames_while_recv_waits_until_it_asks_for_the_reader(
    server: LinkServer[TcpTransport],
) -> None:
    """With a sink set, frames that arrive while recv waits go to the sink; when it returns False
    the waiting recv returns b"" once, and the frames after it queue for recv, in order."""
    link = await _local().dial(server.url, timeout=5)
    accepted = await server.links.get()
    assert isinstance(accepted, TcpLink)
    taken: list[bytes] = []

    def sink(frame: bytes) -> bool:
        taken.append(frame)
        return frame != b"stop"

    accepted.take_frames(sink)
    waiting = asyncio.create_task(accepted.recv())
    await asyncio.sleep(0)  # the task runs up to its wait
    for frame in (b"one", b"two", b"stop", b"after", b"last"):
        await link.send(frame)
    assert await asyncio.wait_for(waiting, 5) == b""
    assert taken == [b"one", b"two", b"stop"]
    assert [await accepted.recv() for _ in range(2)] == [b"after", b"last"]
    accepted.take_frames(None)
    waiting = asyncio.create_task(accepted.recv())
    await asyncio.sleep(0)
    await link.send(b"plain")
    assert await asyncio.wait_for(waiting, 5) == b"plain"
    assert taken == [b"one", b"two", b"stop"]
    await link.close()


async def test_the_receiver_refuses_a_length_over_its_limit_before_the_body(
    server: LinkServer[TcpTransport],
) -> None:
    """A length prefix over max_frame_bytes closes the link with the reason; no body is awaited."""
    reader, writer = await _raw(server.port)
    writer.write(_greeting() + struct.pack(">I", 5000))  # the 5,000-byte body never comes
    accepted = await server.links.get()
    with pytest.raises(LinkClosedError, match="frame of 5000 bytes exceeds the limit of 4096"):
        await accepted.recv()
    reason = b"frame of 5000 bytes exceeds the limit of 4096"
    answer = await reader.readexactly(12 + 4 + len(reason))  # greeting, then the close frame
    assert answer[12:] == struct.pack(">I", 0x8000_0000 | len(reason)) + reason
    writer.close()
    await writer.wait_closed()


async def test_a_sender_refuses_a_frame_over_the_peer_limit(
    server: LinkServer[TcpTransport],
) -> None:
    """send() of a frame over the limit the peer announced closes the link on both sides."""
    link = await _local().dial(server.url, timeout=5)
    accepted = await server.links.get()
    with pytest.raises(LinkClosedError) as info:
        await link.send(bytes(4097))
    assert info.value.closed_by == "local"
    with pytest.raises(LinkClosedError, match="closed by peer: frame of 4097 bytes") as peer:
        await accepted.recv()
    assert (peer.value.closed_by, peer.value.reason) == (
        "peer",
        "frame of 4097 bytes exceeds the receiver's limit of 4096",
    )


async def test_a_connection_without_a_greeting_is_dropped(server: LinkServer[TcpTransport]) -> None:
    """An accepted connection that sends no greeting within handshake_timeout is dropped unseen."""
    reader, writer = await _raw(server.port)
    assert await reader.read() == _greeting(4096)  # the server's greeting, then EOF
    writer.close()
    await writer.wait_closed()
    assert server.links.empty()


async def test_dialling_something_else_is_a_transport_error() -> None:
    """A server that answers with other bytes (here HTTP) is a failed dial naming what it sent."""

    async def http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        await writer.drain()
        writer.close()

    other = await asyncio.start_server(http, "127.0.0.1", 0)
    async with other:
        port = other.sockets[0].getsockname()[1]
        with pytest.raises(TransportError, match="not a gravpy TCP endpoint") as info:
            await _local().dial(f"tcp://127.0.0.1:{port}", timeout=5)
    assert info.value.__cause__ is not None


async def test_a_peer_that_hangs_up_leaves_a_lost_link(server: LinkServer[TcpTransport]) -> None:
    """A connection dropped without a close frame ends the link as lost, with the frames before."""
    _, writer = await _raw(server.port)
    writer.write(_greeting() + struct.pack(">I", 3) + b"abc")
    accepted = await server.links.get()
    writer.close()
    await writer.wait_closed()
    assert await accepted.recv() == b"abc"
    with pytest.raises(LinkClosedError, match="lost") as info:
        await accepted.recv()
    assert info.value.closed_by == "lost"


@pytest.mark.parametrize(
    "url",
    ["ws://127.0.0.1:1", "tcp://127.0.0.1", "tcp://127.0.0.1:1/meta/message", "tcp://:5", "x:y"],
)
def test_urls_it_cannot_dial_are_usage_errors(url: str) -> None:
    """parse_url() refuses other schemes, a missing port or host, and paths."""
    with pytest.raises(UsageError, match="not a TCP URL"):
        _local().parse_url(url)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"port": 70000},
        {"max_frame_bytes": 0},
        {"max_frame_bytes": 1 << 31},
        {"max_queue": 0},
        {"close_timeout": 0},
        {"handshake_timeout": float("inf")},
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, object]) -> None:
    """Out-of-range settings raise UsageError at construction."""
    with pytest.raises(UsageError):
        _local(**kwargs)


def test_conformance_on_uvloop() -> None:
    """TcpTransport passes the conformance check on uvloop too (gravd's loop when installed)."""
    uvloop = pytest.importorskip("uvloop")
    uvloop.run(check_transport(_local))


class _Wire:
    """What a TcpLink writes, kept in memory: the parser is driven without a socket."""

    def __init__(self) -> None:
        self.written = bytearray()

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("127.0.0.1", 9) if name == "peername" else default

    def set_write_buffer_limits(self, high: int) -> None:
        pass

    def write(self, data: bytes) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


async def _parse(stream: bytes, cuts: list[int], n: int) -> list[bytes]:
    link = TcpLink(
        initiator=True, max_frame_bytes=64, max_queue=1000, write_limit=1 << 16, close_timeout=1
    )
    link.connection_made(_Wire())  # type: ignore[arg-type]
    bounds = [0, *sorted(c % (len(stream) + 1) for c in cuts), len(stream)]
    for start, stop in itertools.pairwise(bounds):
        if stop > start:
            link.data_received(stream[start:stop])
    return [await link.recv() for _ in range(n)]


@given(st.lists(st.binary(max_size=64), max_size=20), st.lists(st.integers(0, 10_000), max_size=8))
def test_frames_cut_anywhere_by_the_network_arrive_whole(
    frames: list[bytes], cuts: list[int]
) -> None:
    """However TCP splits the greeting and the frames into reads, recv() returns them whole, in order."""
    stream = _greeting(64) + b"".join(struct.pack(">I", len(f)) + f for f in frames)
    assert asyncio.run(_parse(stream, cuts, len(frames))) == frames

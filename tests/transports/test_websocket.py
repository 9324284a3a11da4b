"""Tests for transports.websocket: the WebSocket transport on 127.0.0.1, port 0."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosedError, InvalidStatus

from gravpy.errors import LinkClosedError, TransportError, UsageError
from gravpy.testing import check_transport
from tests.transports._link_server import LinkServer, serving
from transports.websocket import WebSocketLink, WebSocketTransport


def _local(*, max_frame_bytes: int = 1 << 20, write_limit: int = 1 << 16) -> WebSocketTransport:
    return WebSocketTransport(
        "127.0.0.1", 0, max_frame_bytes=max_frame_bytes, write_limit=write_limit
    )


@pytest.fixture
async def server() -> AsyncIterator[LinkServer[WebSocketTransport]]:
    async with serving(_local()) as srv:
        yield srv


async def test_websocket_transport_passes_the_conformance_check() -> None:
    """WebSocketTransport meets every behaviour the core relies on."""
    await check_transport(_local)


async def test_conformance_with_a_small_frame_limit() -> None:
    """The limit checks hold for a non-default max_frame_bytes too."""
    await check_transport(lambda: _local(max_frame_bytes=4096, write_limit=1024))


async def test_endpoint_reports_the_bound_port(server: LinkServer[WebSocketTransport]) -> None:
    """After start() with port 0, endpoints() names the real port and the path."""
    port = server.transport._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    assert server.transport.endpoints() == [f"ws://127.0.0.1:{port}/meta/message"]
    assert port != 0


async def test_write_now_writes_at_once_in_order_with_send_until_the_link_is_closed(
    server: LinkServer[WebSocketTransport],
) -> None:
    """write_now sends a frame without waiting, in order with send (the connection state it
    reads is still there in this websockets), and writes nothing once the link is closed."""
    link = await _local().dial(server.url, timeout=5)
    accepted = await server.links.get()
    assert isinstance(link, WebSocketLink)
    write_now = link.write_now
    assert write_now(b"first")
    await link.send(b"second")
    assert write_now(b"third")
    assert [await accepted.recv() for _ in range(3)] == [b"first", b"second", b"third"]
    await link.close()
    assert not write_now(b"after close")
    with pytest.raises(LinkClosedError):
        await accepted.recv()


async def test_a_text_frame_closes_the_link(server: LinkServer[WebSocketTransport]) -> None:
    """A text frame from the peer closes the link with code 1003 and a reason on both sides."""
    async with connect(server.url, compression=None, proxy=None) as raw:
        link = await server.links.get()
        await raw.send("hello as text")
        with pytest.raises(LinkClosedError, match="text frames are not accepted"):
            await link.recv()
        with pytest.raises(ConnectionClosedError) as info:
            await raw.recv()
    assert info.value.rcvd is not None
    assert info.value.rcvd.code == 1003
    assert "binary" in info.value.rcvd.reason


async def test_a_wrong_path_is_refused_with_404(server: LinkServer[WebSocketTransport]) -> None:
    """A WebSocket request for another path gets HTTP 404, and dial() reports it."""
    wrong = server.url.replace("/meta/message", "/elsewhere")
    with pytest.raises(InvalidStatus) as raw_info:
        await connect(wrong, proxy=None)
    assert raw_info.value.response.status_code == 404
    with pytest.raises(TransportError, match="HTTP 404") as info:
        await server.transport.dial(wrong, timeout=5)
    assert isinstance(info.value.__cause__, InvalidStatus)
    assert server.links.empty()


async def test_dial_by_host_and_port(server: LinkServer[WebSocketTransport]) -> None:
    """dial("host:port") adds ws:// and the default path, and frames flow."""
    host_port = server.url.removeprefix("ws://").removesuffix("/meta/message")
    link = await _local().dial(host_port, timeout=5)
    accepted = await server.links.get()
    await link.send(b"over host:port")
    assert await accepted.recv() == b"over host:port"
    assert link.initiator
    assert link.remote_address == host_port
    await link.close()


async def test_permessage_deflate_is_never_offered() -> None:
    """dial() offers no compression extension, even to a server that supports it."""
    offered: asyncio.Queue[str | None] = asyncio.Queue(maxsize=1)

    async def handler(ws: ServerConnection) -> None:
        assert ws.request is not None
        await offered.put(ws.request.headers.get("Sec-WebSocket-Extensions"))

    async with serve(handler, "127.0.0.1", 0, compression="deflate") as raw_server:
        port = raw_server.sockets[0].getsockname()[1]
        link = await _local().dial(f"127.0.0.1:{port}", timeout=5)
        assert await offered.get() is None
        await link.close()


async def test_the_server_accepts_no_compression(server: LinkServer[WebSocketTransport]) -> None:
    """A client asking for permessage-deflate gets a connection without it."""
    async with connect(server.url, compression="deflate", proxy=None) as raw:
        assert raw.protocol.extensions == []


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/meta/message",
        "ws://127.0.0.1/meta/message",
        "127.0.0.1:notaport",
        "ws:///meta/message",
    ],
)
def test_urls_it_cannot_dial_are_usage_errors(url: str) -> None:
    """normalize_url() refuses other schemes and URLs without a host or port."""
    with pytest.raises(UsageError, match="not a WebSocket URL"):
        _local().normalize_url(url)


async def test_binding_a_port_in_use_is_a_transport_error(
    server: LinkServer[WebSocketTransport],
) -> None:
    """start() on a taken port raises TransportError with the OSError as cause."""
    port = int(server.url.rsplit(":", 1)[1].split("/")[0])
    with pytest.raises(TransportError, match="listen") as info:
        await WebSocketTransport("127.0.0.1", port).start(server.on_link)
    assert isinstance(info.value.__cause__, OSError)


@pytest.mark.parametrize(
    "kwargs",
    [{"port": 70000}, {"path": "meta"}, {"max_frame_bytes": 0}, {"max_queue": 0}],
)
def test_bad_settings_are_refused(kwargs: dict[str, object]) -> None:
    """Out-of-range settings raise UsageError at construction."""
    with pytest.raises(UsageError):
        WebSocketTransport("127.0.0.1", **kwargs)  # type: ignore[arg-type]

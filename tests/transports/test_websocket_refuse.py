"""WebSocketLink.refuse: a refused handshake's last frames and close go out at once, unwaited."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from websockets.asyncio.client import connect
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.uri import parse_uri

from gravpy.errors import LinkClosedError
from tests.transports._link_server import LinkServer, serving
from transports.websocket import WebSocketLink, WebSocketTransport

GUARD = 10.0  # hang guard; the transport's own close timeout is far longer


@pytest.fixture
async def server() -> AsyncIterator[LinkServer[WebSocketTransport]]:
    async with serving(WebSocketTransport("127.0.0.1", 0, close_timeout=60.0)) as srv:
        yield srv


class SilentClient:
    """A client that upgrades, then only reads: it never answers a close frame."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.proto = ClientProtocol(parse_uri(url))

    async def __aenter__(self) -> SilentClient:
        proto = self.proto
        self.reader, self.writer = await asyncio.open_connection(
            "127.0.0.1", parse_uri(self.url).port
        )
        proto.send_request(proto.connect())
        self.writer.write(b"".join(proto.data_to_send()))
        while proto.state is State.CONNECTING:
            proto.receive_data(await self.reader.read(4096))
        proto.data_to_send()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.writer.close()
        await self.writer.wait_closed()

    async def read_to_eof(self) -> list[Frame]:
        """Every frame the server sent until it closed the socket."""
        while data := await self.reader.read(4096):
            self.proto.receive_data(data)
        self.proto.receive_eof()
        return [e for e in self.proto.events_received() if isinstance(e, Frame)]


async def test_refuse_sends_the_frames_and_closes_without_waiting_for_the_peer(
    server: LinkServer[WebSocketTransport],
) -> None:
    """After refuse, the peer reads the frames and a 1000 close with the reason, then the socket
    is closed by the node although the peer never answered the close (close timeout 60 s)."""
    async with SilentClient(server.transport.endpoints()[0]) as client:
        link = await asyncio.wait_for(server.links.get(), GUARD)
        assert isinstance(link, WebSocketLink)
        await link.refuse([b"reject-frame", b"second"], "unknown_key")
        frames = await asyncio.wait_for(client.read_to_eof(), GUARD)
    proto = client.proto
    assert [(f.opcode, f.data) for f in frames[:2]] == [
        (Opcode.BINARY, b"reject-frame"),
        (Opcode.BINARY, b"second"),
    ]
    assert frames[2].opcode is Opcode.CLOSE
    assert proto.close_rcvd is not None
    assert (proto.close_rcvd.code, proto.close_rcvd.reason) == (1000, "unknown_key")


async def test_refuse_after_the_peer_closed_is_a_quiet_close(
    server: LinkServer[WebSocketTransport],
) -> None:
    """refuse on a link the peer has already closed raises nothing and writes nothing."""
    async with connect(server.transport.endpoints()[0], compression=None, proxy=None):
        link = await asyncio.wait_for(server.links.get(), GUARD)
    with pytest.raises(LinkClosedError):
        await asyncio.wait_for(link.recv(), GUARD)
    assert isinstance(link, WebSocketLink)
    await asyncio.wait_for(link.refuse([b"too late"], "unknown_key"), GUARD)
    await asyncio.wait_for(link.close(), GUARD)

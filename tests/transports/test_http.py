"""Tests for transports.http: the HTTP transport on 127.0.0.1, port 0."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

import gravpy
from gravpy import Grav, Message
from gravpy.errors import LinkClosedError, ProtocolError, TransportError, UsageError
from gravpy.mesh import HubConfig
from gravpy.plugins import Link
from gravpy.proto import ProtocolConfig
from gravpy.testing import check_transport
from transports.http import HttpAcceptedLink, HttpTransport, _decode_batch, _encode_batch

SESSION = "X-Grav-Session"
FAST = HubConfig(
    protocol=ProtocolConfig(handshake_timeout=2.0, ping_interval=0.2, dead_after=1.0),
    drain_timeout=1.0,
)


def _local(**kwargs: object) -> HttpTransport:
    return HttpTransport("127.0.0.1", 0, **kwargs)  # type: ignore[arg-type]


def _body(*frames: bytes) -> bytes:
    """A body as the module docstring defines it, written out independently of the module."""
    return b"".join(struct.pack(">I", len(f)) + f for f in frames)


class _Server:
    """A started transport whose accepted links go to ``links`` and wait for ``done``."""

    def __init__(self, transport: HttpTransport) -> None:
        self.transport = transport
        self.links: asyncio.Queue[HttpAcceptedLink] = asyncio.Queue(maxsize=8)
        self.done = asyncio.Event()

    async def on_link(self, link: Link) -> None:
        assert isinstance(link, HttpAcceptedLink)
        await self.links.put(link)
        await self.done.wait()

    @property
    def url(self) -> str:
        return self.transport.endpoints()[0]


async def _started(transport: HttpTransport) -> _Server:
    srv = _Server(transport)
    await transport.start(srv.on_link)
    return srv


@pytest.fixture
async def server() -> AsyncIterator[_Server]:
    srv = await _started(_local(max_frame_bytes=4096))
    yield srv
    srv.done.set()
    await srv.transport.stop()


@pytest.fixture
async def raw() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(trust_env=False) as session:
        yield session


async def _open(raw: aiohttp.ClientSession, url: str) -> str:
    headers = {"X-Grav-Max-Frame-Bytes": "4096"}
    async with raw.post(f"{url}/open", headers=headers) as resp:
        assert resp.status == 200
        answer = await resp.json()
    session: str = answer["session"]
    return session


async def _send(
    raw: aiohttp.ClientSession, url: str, session: str, seq: str, body: bytes
) -> tuple[int, str]:
    headers = {SESSION: session, "X-Grav-Seq": seq}
    async with raw.post(f"{url}/send", headers=headers, data=body) as resp:
        return resp.status, await resp.text()


async def _poll(
    raw: aiohttp.ClientSession, url: str, session: str, ack: int
) -> tuple[int, str | None, bytes]:
    headers = {SESSION: session, "X-Grav-Ack": str(ack), "X-Grav-Wait": "5", "X-Grav-Room": "4096"}
    async with raw.get(f"{url}/recv", headers=headers) as resp:
        return resp.status, resp.headers.get("X-Grav-Batch"), await resp.read()


class _Relay:
    """A TCP relay in front of a server that can cut every connection it carries at once."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.writers: set[asyncio.StreamWriter] = set()
        self.handlers: set[asyncio.Task[object]] = set()
        self.port = 0

    async def __aenter__(self) -> _Relay:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.server.close()
        self.cut()
        await asyncio.gather(*self.handlers)
        await self.server.wait_closed()

    def cut(self) -> None:
        """Abort every connection, as a proxy restarting or a NAT dropping its mapping would."""
        for writer in self.writers:
            writer.transport.abort()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.handlers.add(task)
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.writers |= {writer, up_writer}
        await asyncio.gather(_pipe(reader, up_writer, writer), _pipe(up_reader, writer, up_writer))
        self.writers -= {writer, up_writer}


async def _pipe(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, other: asyncio.StreamWriter
) -> None:
    """Copy until either side closes, then abort both connections."""
    try:
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass  # the connection was cut
    finally:
        writer.transport.abort()
        other.transport.abort()


async def _send_all(link: Link, frames: list[bytes]) -> None:
    for frame in frames:
        await link.send(frame)


async def _send_forever(link: Link) -> None:
    """Send until send() raises; each send waits for room, so this yields to the loop."""
    while True:
        await link.send(b"more")


async def _recv_n(link: Link, n: int) -> list[bytes]:
    return [await link.recv() for _ in range(n)]


# -- conformance and throughput -------------------------------------------------------------------


async def test_http_transport_passes_the_conformance_check() -> None:
    """HttpTransport meets every behaviour the core relies on."""
    await check_transport(_local)


async def test_conformance_with_a_small_frame_limit_and_queue() -> None:
    """The limit and order checks hold with a 4 KiB frame limit and a 1 KiB queue too."""
    await check_transport(lambda: _local(max_frame_bytes=4096, queue_bytes=1024))


async def test_ten_thousand_small_frames_each_way_arrive_in_order_in_batches() -> None:
    """10,000 small frames sent each way at once arrive in order, in far fewer requests."""
    srv = await _started(_local())
    try:
        link = await _local().dial(srv.url, timeout=5)
        accepted = await srv.links.get()
        frames = [i.to_bytes(4, "big") * (1 + i % 4) for i in range(10_000)]
        async with asyncio.TaskGroup() as tg:
            tg.create_task(_send_all(link, frames))
            tg.create_task(_send_all(accepted, frames[::-1]))
            to_acceptor = tg.create_task(_recv_n(accepted, len(frames)))
            to_dialler = tg.create_task(_recv_n(link, len(frames)))
        assert to_acceptor.result() == frames
        assert to_dialler.result() == frames[::-1]
        assert accepted.in_seq < 100  # send bodies
        assert accepted.out_seq < 100  # poll answers
        await link.close()
    finally:
        srv.done.set()
        await srv.transport.stop()


async def test_the_acceptor_reaches_a_dialler_that_never_listens(server: _Server) -> None:
    """A dialler that only dials (never started, as behind NAT) gets what the acceptor sends."""
    dialler = _local()
    link = await dialler.dial(server.url, timeout=5)
    accepted = await server.links.get()
    await accepted.send(b"to the leaf")
    assert await link.recv() == b"to the leaf"
    await link.send(b"and back")
    assert await accepted.recv() == b"and back"
    with pytest.raises(UsageError, match="after start"):
        dialler.endpoints()
    await link.close()


async def test_a_leaf_that_only_dials_gets_its_messages_over_http() -> None:
    """A leaf attached over HTTP, listening nowhere, receives publishes and answers requests."""
    async with (
        Grav(transport=_local(), hub_config=FAST) as node,
        gravpy.connect(node.endpoints()[0], transport=_local(), hub_config=FAST) as leaf,
    ):
        got: asyncio.Queue[str] = asyncio.Queue()
        listener, responder = leaf.connect(), leaf.connect()
        listener.on_type("news.>", lambda m: got.put_nowait(m.text()))
        responder.on_type(
            "svc.upper",
            lambda m: responder.reply_to(m, Message.new("svc.r", m.text().upper())),
        )
        await node.wait_for(
            lambda ps: bool(ps) and {"news.>", "svc.upper"} <= set(ps[0].interests), 5
        )
        sender = node.connect()
        for i in range(10):
            sender.send(Message.new("news.item", str(i)))
        assert [await got.get() for _ in range(10)] == [str(i) for i in range(10)]
        reply = await sender.send(Message.new("svc.upper", "hi")).wait_until(5)
        assert reply.text() == "HI"


async def test_a_link_survives_its_connections_being_cut(server: _Server) -> None:
    """When every connection under a link is cut (a proxy restarting), it reconnects and loses nothing."""
    port = int(server.url.rsplit(":", 1)[1].split("/")[0])
    async with _Relay(port) as relay:
        link = await _local().dial(f"127.0.0.1:{relay.port}", timeout=5)
        accepted = await server.links.get()
        await link.send(b"before")
        assert await accepted.recv() == b"before"
        await accepted.send(b"before too")
        assert await link.recv() == b"before too"
        relay.cut()
        await accepted.send(b"after")
        assert await link.recv() == b"after"
        await link.send(b"after too")
        assert await accepted.recv() == b"after too"
        relay.cut()
        await link.send(b"again")
        await accepted.send(b"again too")
        assert [await accepted.recv(), await link.recv()] == [b"again", b"again too"]
        await link.close()


async def test_a_refused_send_does_not_lose_what_the_acceptor_sent_before_closing(
    server: _Server,
) -> None:
    """A send refused because the acceptor closed (410) leaves its earlier frames to be received."""
    link = await _local(queue_bytes=1).dial(server.url, timeout=5)  # buffers one frame at a time
    accepted = await server.links.get()
    frames = [b"one", b"two", b"three"]
    await _send_all(accepted, frames)  # "one" is polled; the others wait at the acceptor
    await accepted.close("done here")
    with pytest.raises(LinkClosedError, match="closed by peer: done here"):
        await _send_forever(link)  # the acceptor answers the first send 410
    assert await _recv_n(link, 3) == frames
    with pytest.raises(LinkClosedError, match="closed by peer: done here"):
        await link.recv()
    await link.close()


# -- what the acceptor answers to what a client sends ----------------------------------------------


async def test_an_unknown_session_gets_404(server: _Server, raw: aiohttp.ClientSession) -> None:
    """send, recv and close with a session the acceptor never opened are answered 404."""
    headers = {SESSION: "no-such-session-at-all"}
    for method, op in (("POST", "send"), ("GET", "recv"), ("POST", "close")):
        async with raw.request(method, f"{server.url}/{op}", headers=headers) as resp:
            assert (op, resp.status) == (op, 404)
    assert server.links.empty()


async def test_other_paths_and_methods_get_404_and_405(
    server: _Server, raw: aiohttp.ClientSession
) -> None:
    """A path the transport does not serve is 404, a wrong method 405; no link is made."""
    async with raw.get(f"{server.url}/send") as resp:
        assert resp.status == 405
    async with raw.post(f"{server.url}/elsewhere") as resp:
        assert resp.status == 404
    async with raw.get(server.url.replace("/meta/http", "/")) as resp:
        assert resp.status == 404
    assert server.links.empty()


async def test_an_oversized_body_gets_413_and_closes_the_session(
    server: _Server, raw: aiohttp.ClientSession
) -> None:
    """A body over max_frame_bytes + 4 is refused with 413, and the link closes with the reason."""
    session = await _open(raw, server.url)
    accepted = await server.links.get()
    status, text = await _send(raw, server.url, session, "1", _body(bytes(4096), b"x"))
    assert status == 413
    assert "exceeds the limit of 4100 bytes" in text
    with pytest.raises(LinkClosedError, match="closed locally: body of 4105 bytes exceeds"):
        await accepted.recv()
    assert (await _send(raw, server.url, session, "2", _body(b"late")))[0] == 410


async def test_a_frame_over_the_limit_gets_413(server: _Server, raw: aiohttp.ClientSession) -> None:
    """A length prefix over max_frame_bytes is refused with 413 before any frame is read."""
    session = await _open(raw, server.url)
    accepted = await server.links.get()
    status, text = await _send(raw, server.url, session, "1", struct.pack(">I", 5000) + b"x")
    assert (status, text) == (413, "frame of 5000 bytes exceeds the limit of 4096")
    with pytest.raises(LinkClosedError, match="frame of 5000 bytes exceeds"):
        await accepted.recv()


@pytest.mark.parametrize(
    ("seq", "body", "reason"),
    [
        ("1", b"\x00\x00\x01", "malformed body: 3 stray bytes at offset 0"),
        ("1", _body(b"ok") + struct.pack(">I", 10) + b"abc", "a frame of 10 bytes is cut at 3"),
        ("one", _body(b"ok"), "bad or missing X-Grav-Seq header"),
        ("3", _body(b"ok"), "batch 3 out of sequence: expected 1"),
    ],
)
async def test_garbage_gets_400_and_closes_the_session(
    server: _Server, raw: aiohttp.ClientSession, seq: str, body: bytes, reason: str
) -> None:
    """A body that is not frames or a bad batch number is refused with 400 and ends the link."""
    session = await _open(raw, server.url)
    accepted = await server.links.get()
    status, text = await _send(raw, server.url, session, seq, body)
    assert status == 400
    assert reason in text
    with pytest.raises(LinkClosedError, match=reason):
        await accepted.recv()


async def test_a_poll_that_does_not_acknowledge_gets_the_same_batch_again(
    server: _Server, raw: aiohttp.ClientSession
) -> None:
    """A batch is sent again until a poll acknowledges it, so a lost answer loses no frame."""
    session = await _open(raw, server.url)
    accepted = await server.links.get()
    await accepted.send(b"one")
    first = await _poll(raw, server.url, session, ack=0)
    assert first == (200, "1", _body(b"one"))
    assert await _poll(raw, server.url, session, ack=0) == first
    await accepted.send(b"two")
    assert await _poll(raw, server.url, session, ack=1) == (200, "2", _body(b"two"))


async def test_a_repeated_send_is_queued_once(server: _Server, raw: aiohttp.ClientSession) -> None:
    """A send retried with the same number is answered 204 and its frames are not queued again."""
    session = await _open(raw, server.url)
    accepted = await server.links.get()
    assert await _send(raw, server.url, session, "1", _body(b"once")) == (204, "")
    assert await _send(raw, server.url, session, "1", _body(b"once")) == (204, "")
    assert await _send(raw, server.url, session, "2", _body(b"twice")) == (204, "")
    assert [await accepted.recv(), await accepted.recv()] == [b"once", b"twice"]


async def test_an_idle_session_is_reaped(raw: aiohttp.ClientSession) -> None:
    """A session with no request for 3 poll timeouts is closed with the reason and forgotten."""
    srv = await _started(_local(poll_timeout=0.05))
    try:
        session = await _open(raw, srv.url)
        accepted = await srv.links.get()
        with pytest.raises(LinkClosedError, match=r"session idle for 0.15 s"):
            await accepted.recv()
        assert (await _poll(raw, srv.url, session, ack=0))[0] == 404
    finally:
        srv.done.set()
        await srv.transport.stop()


async def test_a_dialler_with_a_full_buffer_is_not_reaped(raw: aiohttp.ClientSession) -> None:
    """A dialler that stops reading keeps its session alive while a silent one is reaped."""
    srv = await _started(_local(poll_timeout=0.1))
    try:
        link = await _local(queue_bytes=64).dial(srv.url, timeout=5)
        accepted = await srv.links.get()
        frames = [bytes([i]) * 100 for i in range(3)]
        await _send_all(accepted, frames)  # more than the dialler will buffer
        await raw.post(f"{srv.url}/open", headers={"X-Grav-Max-Frame-Bytes": "1"})
        silent = await srv.links.get()
        with pytest.raises(LinkClosedError, match="session idle"):
            await silent.recv()  # 0.3 s passed with the dialler's buffer full: it was not reaped
        assert await _recv_n(link, 3) == frames
        await accepted.send(b"still open")
        assert await link.recv() == b"still open"
        await link.close()
    finally:
        srv.done.set()
        await srv.transport.stop()


async def test_a_full_session_table_gets_503(raw: aiohttp.ClientSession) -> None:
    """Opening past max_sessions is answered 503, makes no link, and is counted among the
    connections refused (as a WebSocket upgrade past its cap is)."""
    srv = await _started(_local(max_sessions=1))
    try:
        await _open(raw, srv.url)
        assert srv.transport.connections_refused == 0
        async with raw.post(f"{srv.url}/open", headers={"X-Grav-Max-Frame-Bytes": "9"}) as resp:
            assert resp.status == 503
            assert "too many sessions (1)" in await resp.text()
        assert srv.links.qsize() == 1
        assert srv.transport.connections_refused == 1
    finally:
        srv.done.set()
        await srv.transport.stop()


# -- dialling -------------------------------------------------------------------------------------


async def test_endpoint_reports_the_bound_port(server: _Server) -> None:
    """After start() with port 0, endpoints() names the real port and the path."""
    runner = server.transport._runner
    assert runner is not None
    port = runner.addresses[0][1]
    assert server.transport.endpoints() == [f"http://127.0.0.1:{port}/meta/http"]
    assert port != 0


async def test_dial_by_host_and_port(server: _Server) -> None:
    """dial("host:port") adds http:// and the default path, and frames flow."""
    host_port = server.url.removeprefix("http://").removesuffix("/meta/http")
    link = await _local().dial(host_port, timeout=5)
    accepted = await server.links.get()
    await link.send(b"over host:port")
    assert await accepted.recv() == b"over host:port"
    assert link.initiator
    assert link.remote_address == host_port
    await link.close()


async def test_no_proxy_is_taken_from_the_environment(
    server: _Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A proxy named in the environment is ignored: the dial goes straight to the acceptor."""
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    link = await _local().dial(server.url, timeout=5)
    accepted = await server.links.get()
    await link.send(b"direct")
    assert await accepted.recv() == b"direct"
    await link.close()


async def test_a_wrong_path_is_refused_with_404(server: _Server) -> None:
    """dial() to a path where no transport listens raises TransportError naming the 404."""
    wrong = server.url.replace("/meta/http", "/elsewhere")
    with pytest.raises(TransportError, match="HTTP 404") as info:
        await server.transport.dial(wrong, timeout=5)
    assert info.value.__cause__ is not None
    assert server.links.empty()


async def test_dial_refuses_a_server_that_is_not_gravpy() -> None:
    """An HTTP server that answers open with something else is a TransportError, not a link."""

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hello")

    app = web.Application()
    app.router.add_post("/meta/http/open", hello)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        with pytest.raises(TransportError, match="not a gravpy HTTP session") as info:
            await _local().dial(f"127.0.0.1:{site.port}", timeout=5)
        assert isinstance(info.value.__cause__, ValueError)
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(
    "url",
    [
        "ws://127.0.0.1:8081/meta/http",
        "127.0.0.1:notaport",
        "http:///meta/http",
        "http://user@127.0.0.1:8081/meta/http",
        "http://127.0.0.1:8081/meta/http?session=x",
        "http://127.0.0.1:0/meta/http",
    ],
)
def test_urls_it_cannot_dial_are_usage_errors(url: str) -> None:
    """normalize_url() refuses other schemes, bad ports, credentials and queries."""
    with pytest.raises(UsageError, match="not an HTTP URL"):
        _local().normalize_url(url)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("10.0.0.1:8081", "http://10.0.0.1:8081/meta/http"),
        ("https://example.org/grav/", "https://example.org/grav"),
        ("http://[::1]:8081", "http://[::1]:8081/meta/http"),
    ],
)
def test_urls_are_completed(url: str, expected: str) -> None:
    """normalize_url() adds the scheme and the default path, and drops a trailing slash."""
    assert _local().normalize_url(url) == expected


# -- lifecycle ------------------------------------------------------------------------------------


async def test_stop_tells_dialled_links_why() -> None:
    """stop() closes accepted links, and the dialler's recv says the transport stopped."""
    srv = await _started(_local())
    link = await _local().dial(srv.url, timeout=5)
    await srv.links.get()
    srv.done.set()
    await srv.transport.stop()
    with pytest.raises(LinkClosedError, match="closed by peer: transport stopped"):
        await link.recv()
    await link.close()


async def test_binding_a_port_in_use_is_a_transport_error(server: _Server) -> None:
    """start() on a taken port raises TransportError with the OSError as cause."""
    port = int(server.url.rsplit(":", 1)[1].split("/")[0])
    with pytest.raises(TransportError, match="listen") as info:
        await HttpTransport("127.0.0.1", port).start(server.on_link)
    assert isinstance(info.value.__cause__, OSError)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"port": 70000},
        {"path": "meta"},
        {"path": "/meta/"},
        {"max_frame_bytes": 0},
        {"max_frame_bytes": 1 << 32},
        {"queue_bytes": 0},
        {"max_sessions": 0},
        {"poll_timeout": 0},
        {"close_timeout": float("nan")},
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, object]) -> None:
    """Out-of-range settings raise UsageError at construction."""
    with pytest.raises(UsageError):
        HttpTransport("127.0.0.1", **kwargs)  # type: ignore[arg-type]


# -- bodies ---------------------------------------------------------------------------------------


@given(st.lists(st.binary(max_size=64), max_size=20))
def test_a_body_gives_back_its_frames(frames: list[bytes]) -> None:
    """Decoding an encoded batch returns the same frames, and the encoding is the documented one."""
    body = _encode_batch(frames)
    assert body == _body(*frames)
    assert _decode_batch(body, 64) == frames


@given(st.binary(max_size=64))
def test_any_bytes_decode_or_raise_protocol_error(body: bytes) -> None:
    """Arbitrary bytes either decode to frames within the limit or raise ProtocolError."""
    try:
        frames = _decode_batch(body, 16)
    except ProtocolError:
        return
    assert all(len(f) <= 16 for f in frames)
    assert _encode_batch(frames) == body

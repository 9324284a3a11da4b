"""TLS on every transport, with real certificates from trustme: meshes, leaves and refusals."""

from __future__ import annotations

import asyncio
import datetime as dt
import queue
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import trustme

import gravpy
import gravpy.sync
from gravpy.errors import TransportError
from gravpy.grav import Grav
from gravpy.message import Message
from gravpy.plugins import Link, Transport
from gravpy.testing import check_transport
from gravpy.tls import TlsContexts, as_tls
from tests._bus_helpers import GUARD, until
from transports.http import HttpTransport
from transports.tcp import TcpTransport
from transports.websocket import WebSocketTransport

HOST = "127.0.0.1"


@dataclass(frozen=True)
class Pki:
    """A CA, a node certificate and a client certificate it signed, as contexts."""

    ca: trustme.CA
    node: trustme.LeafCert
    app: trustme.LeafCert

    def server(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.node.configure_cert(ctx)
        return ctx

    def mtls_server(self) -> TlsContexts:
        """Listening that asks for a client certificate and refuses, with a reason, a client without."""
        ctx = self.server()
        self.ca.configure_trust(ctx)
        ctx.verify_mode = ssl.CERT_OPTIONAL
        return TlsContexts(server=ctx, require_client_cert=True)

    def client(self, *, with_cert: bool = False) -> ssl.SSLContext:
        ctx = ssl.create_default_context()
        self.ca.configure_trust(ctx)
        if with_cert:
            self.app.configure_cert(ctx)
        return ctx

    def node_tls(self, *, verify_clients: bool = False) -> TlsContexts:
        client = self.client()
        self.node.configure_cert(client)  # a node shows its own certificate when it dials
        if verify_clients:
            return TlsContexts(self.mtls_server().server, client, require_client_cert=True)
        return TlsContexts(self.server(), client)


@pytest.fixture(scope="module")
def pki() -> Pki:
    ca = trustme.CA()
    return Pki(ca, ca.issue_cert(HOST), ca.issue_cert("app.example"))


Factory = Callable[..., Transport]
KINDS: dict[str, Factory] = {
    "wss": lambda **kw: WebSocketTransport(HOST, 0, **kw),
    "https": lambda **kw: HttpTransport(HOST, 0, **kw),
    "tls": lambda **kw: TcpTransport(HOST, 0, **kw),
}


class _Accepting:
    """An on_link handler that keeps each link open until the test ends."""

    def __init__(self) -> None:
        self.links: list[Link] = []

    async def on_link(self, link: Link) -> None:
        self.links.append(link)
        try:
            while True:
                await link.recv()
        finally:
            self.links.remove(link)


async def _refused(server: Transport, dialler: Transport) -> TransportError:
    """Start ``server``, dial it from ``dialler``; the dial must fail. Returns the error."""
    await server.start(_Accepting().on_link)
    try:
        with pytest.raises(TransportError) as info:
            await dialler.dial(server.endpoints()[0], timeout=5)
        return info.value
    finally:
        await server.stop()


@pytest.mark.parametrize("kind", KINDS)
async def test_each_transport_passes_the_conformance_check_over_tls(kind: str, pki: Pki) -> None:
    """Every transport keeps its Link guarantees with TLS on, listening and dialling."""
    await check_transport(lambda: KINDS[kind](ssl=pki.node_tls()))


@pytest.mark.parametrize("kind", KINDS)
async def test_endpoints_keep_the_tls_scheme(kind: str, pki: Pki) -> None:
    """A transport listening with a server context advertises only TLS endpoints."""
    transport = KINDS[kind](ssl=pki.server())
    await transport.start(_Accepting().on_link)
    try:
        assert [url.partition("://")[0] for url in transport.endpoints()] == [kind]
    finally:
        await transport.stop()


@pytest.mark.parametrize("kind", KINDS)
async def test_a_certificate_from_another_ca_is_refused(kind: str, pki: Pki) -> None:
    """A dialler that does not trust the server's CA refuses it, saying the verify failed."""
    stranger = trustme.CA()
    ctx = ssl.create_default_context()
    stranger.configure_trust(ctx)
    error = await _refused(KINDS[kind](ssl=pki.server()), KINDS[kind](ssl=ctx))
    assert "certificate verify failed" in str(error)
    assert "unable to get local issuer certificate" in str(error)


@pytest.mark.parametrize("kind", KINDS)
async def test_dialling_without_tls_to_a_tls_listener_suggests_the_tls_scheme(
    kind: str, pki: Pki
) -> None:
    """A plain ws://, http:// or tcp:// dial to a listener that speaks TLS fails with a hint to
    wss://, https:// or tls://."""
    server = KINDS[kind](ssl=pki.server())
    await server.start(_Accepting().on_link)
    try:
        secure = server.endpoints()[0]
        scheme = secure.split("://", 1)[0]
        plain = {"wss": "ws", "https": "http", "tls": "tcp"}[scheme]
        with pytest.raises(TransportError, match=rf"a TLS listener\? then dial {scheme}://"):
            await KINDS[kind]().dial(plain + secure[len(scheme) :], timeout=5)
    finally:
        await server.stop()


@pytest.mark.parametrize("kind", KINDS)
async def test_an_expired_certificate_is_refused(kind: str, pki: Pki) -> None:
    """A server whose certificate has expired is refused, and the error says it expired."""
    now = dt.datetime.now(dt.UTC)
    old = pki.ca.issue_cert(
        HOST, not_before=now - dt.timedelta(days=30), not_after=now - dt.timedelta(days=1)
    )
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    old.configure_cert(server_ctx)
    error = await _refused(KINDS[kind](ssl=server_ctx), KINDS[kind](ssl=pki.client()))
    assert "certificate has expired" in str(error)


@pytest.mark.parametrize("kind", KINDS)
async def test_mtls_refuses_a_client_without_a_certificate(kind: str, pki: Pki) -> None:
    """Under mTLS a dialler that shows no certificate is refused, and told a certificate is
    required; the listener counts the refusal as a failed TLS handshake."""
    server = KINDS[kind](ssl=pki.mtls_server())
    error = await _refused(server, KINDS[kind](ssl=pki.client()))
    assert "a client certificate is required (mTLS) and none was presented" in str(error)
    assert getattr(server, "tls_handshakes_failed", None) == 1


@pytest.mark.parametrize("kind", KINDS)
async def test_mtls_refusing_a_certificate_of_another_ca_says_it_may_be_the_certificate(
    kind: str, pki: Pki
) -> None:
    """Under mTLS a dialler whose certificate another CA signed is hung up on in the handshake;
    its error says the node may have refused its certificate, and the listener counts it (the
    TCP listener when the connection's handshake deadline ends it: asyncio does not tell it)."""
    rogue = pki.client()
    trustme.CA().issue_cert("app.example").configure_cert(rogue)
    options: dict[str, object] = {"handshake_timeout": 0.5} if kind == "tls" else {}
    server = KINDS[kind](ssl=pki.mtls_server(), **options)
    await server.start(_Accepting().on_link)
    try:
        with pytest.raises(TransportError) as info:
            await KINDS[kind](ssl=rogue).dial(server.endpoints()[0], timeout=5)
        assert "may have refused this client's certificate" in str(info.value)
        async with asyncio.timeout(GUARD):
            await until(lambda: getattr(server, "tls_handshakes_failed", None) == 1)
    finally:
        await server.stop()


@pytest.mark.parametrize("kind", KINDS)
async def test_mtls_accepts_a_client_with_a_certificate(kind: str, pki: Pki) -> None:
    """Under mTLS a dialler showing a certificate the CA signed gets a working link."""
    accepting = _Accepting()
    server = KINDS[kind](ssl=pki.mtls_server())
    await server.start(accepting.on_link)
    try:
        link = await KINDS[kind](ssl=pki.client(with_cert=True)).dial(
            server.endpoints()[0], timeout=5
        )
        await link.send(b"hello")
        await link.close()
    finally:
        await server.stop()


@pytest.mark.parametrize("kind", KINDS)
async def test_two_nodes_mesh_over_tls(kind: str, pki: Pki) -> None:
    """Two Grav nodes given ssl= link over TLS and a request gets its reply across."""
    tls = pki.node_tls(verify_clients=True)
    async with (
        Grav(transport=KINDS[kind](), ssl=tls) as a,
        Grav(transport=KINDS[kind](), ssl=tls) as b,
    ):
        assert all(ep.startswith(f"{kind}://") for ep in a.endpoints())
        responder = a.connect()
        responder.on_type(
            "svc.upper", lambda m: responder.reply_to(m, Message.new("ok", m.text().upper()))
        )
        await b.connect_endpoint(a.endpoints()[0])
        await b.wait_for(lambda peers: any("svc.upper" in p.interests for p in peers), timeout=5)
        reply = await b.connect().send(Message.new("svc.upper", "tls")).wait_until(5)
        assert reply.text() == "TLS"


async def test_a_leaf_attaches_over_wss_with_gravpy_connect(pki: Pki) -> None:
    """gravpy.connect(url, ssl=ctx) attaches a leaf over wss:// and messages flow."""
    async with Grav(transport=KINDS["wss"](), ssl=pki.server()) as node:
        got = node.connect()
        got.on_type("news", lambda m: None)
        async with gravpy.connect(node.endpoints()[0], ssl=pki.client()) as leaf:
            reply_pod = node.connect()
            reply_pod.on_type(
                "svc.echo", lambda m: reply_pod.reply_to(m, Message.new("ok", m.data))
            )
            await leaf.wait_for(
                lambda peers: any("svc.echo" in p.interests for p in peers), timeout=5
            )
            reply = await leaf.connect().send(Message.new("svc.echo", "hi")).wait_until(5)
            assert reply.text() == "hi"


def test_the_blocking_api_attaches_over_tls(pki: Pki) -> None:
    """gravpy.sync.connect(url, ssl=ctx) attaches over tls:// from code without asyncio."""
    ready: queue.Queue[tuple[str, asyncio.AbstractEventLoop, asyncio.Event]] = queue.Queue(1)

    async def node() -> None:
        async with Grav(transport=KINDS["tls"](), ssl=pki.server()) as g:
            pod = g.connect()
            pod.on_type("svc.echo", lambda m: pod.reply_to(m, Message.new("ok", m.data)))
            stop = asyncio.Event()
            ready.put((g.endpoints()[0], asyncio.get_running_loop(), stop))
            await stop.wait()

    thread = threading.Thread(target=asyncio.run, args=(node(),))
    thread.start()
    url, loop, stop = ready.get(timeout=10)
    try:
        with gravpy.sync.connect(url, ssl=pki.client()) as leaf:
            leaf.wait_for(lambda peers: any("svc.echo" in p.interests for p in peers), timeout=5)
            assert (
                leaf.connect().send(Message.new("svc.echo", "sync")).wait_until(5).text() == "sync"
            )
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)


def test_one_context_is_placed_by_its_protocol(pki: Pki) -> None:
    """A server-protocol context listens, a client one dials; a pair is taken as given."""
    server, client = pki.server(), pki.client()
    assert as_tls(server) == TlsContexts(server=server)
    assert as_tls(client) == TlsContexts(client=client)
    assert as_tls(None) == TlsContexts()


@pytest.mark.parametrize("kind", KINDS)
def test_each_transport_passes_the_conformance_check_over_tls_on_uvloop(
    kind: str, pki: Pki
) -> None:
    """With TLS on uvloop (gravd's loop when installed) every transport keeps its guarantees."""
    uvloop = pytest.importorskip("uvloop")
    uvloop.run(check_transport(lambda: KINDS[kind](ssl=pki.node_tls())))


def test_a_missing_client_certificate_is_refused_with_the_reason_on_uvloop(pki: Pki) -> None:
    """Under mTLS on uvloop, a tls:// dialler without a certificate is told why it is refused."""
    uvloop = pytest.importorskip("uvloop")
    error = uvloop.run(
        _refused(KINDS["tls"](ssl=pki.mtls_server()), KINDS["tls"](ssl=pki.client()))
    )
    assert "a client certificate is required (mTLS) and none was presented" in str(error)

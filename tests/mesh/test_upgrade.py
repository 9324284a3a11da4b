"""A live link moves to the fastest transport both nodes speak (gravpy.mesh.upgrade)."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import random
import socket
import time
from collections.abc import Callable
from pathlib import Path

from gravpy import Grav, Message
from gravpy.backoff import BackoffPolicy
from gravpy.bus import Bus
from gravpy.daemon.advertise import AdvertisedTransport
from gravpy.daemon.parsers import Address
from gravpy.mesh import PeerInfo
from gravpy.mesh.hub import Hub
from gravpy.mesh.link_stats import LinkDrops
from gravpy.mesh.link_writer import LinkWriter
from gravpy.mesh.upgrade import upgrade_endpoint
from gravpy.plugins import Transport
from gravpy.proto import (
    HelloReceived,
    LinkState,
    MessagesReceived,
    MovedReceived,
    NodeInfo,
    PeerProtocol,
    Rejected,
)
from gravpy.testing import capture_logs
from tests._bus_helpers import settle, until
from tests.daemon.tcp_proxy import pipe
from tests.transports._link_server import serving
from transports.tcp import TcpTransport
from transports.websocket import WebSocketTransport

from .conftest import FAST, NodeFactory, linked_to

GUARD = 10.0


def unused_port_no_dial_takes() -> int:
    """A free port on 127.0.0.1 below the kernel's range of source ports, so that no outgoing
    connection takes it meanwhile: not one of this test's own dials to it, which on Linux may
    connect to themselves when the port is in that range and nothing listens."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for port in random.sample(range(max(1025, low - 8000), low), 200):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port found below {low}")


def ws_and_tcp() -> list[Transport]:
    return [WebSocketTransport(host="127.0.0.1", port=0), TcpTransport(host="127.0.0.1", port=0)]


def ws_only() -> list[Transport]:  # gravd with listen_tcp off
    return [WebSocketTransport(host="127.0.0.1", port=0)]


def ws_of(g: Grav) -> str:
    return next(ep for ep in g.endpoints() if ep.startswith("ws://"))


def hub(g: Grav) -> Hub:
    assert g.hub is not None
    return g.hub


def over(transport: str, *nodes: Grav) -> Callable[[list[PeerInfo]], bool]:
    """A ``wait_for`` predicate: the one link to each of ``nodes`` is open over ``transport``."""
    wanted = {n.node_uuid for n in nodes}
    return lambda peers: (
        wanted <= {p.uuid for p in peers if p.state == "open" and p.transport == transport}
    )


def transports(g: Grav) -> list[tuple[str, str]]:
    return [(p.transport, p.state) for p in g.peers()]


async def test_a_static_peer_named_by_its_websocket_url_ends_up_linked_over_tcp(
    node: NodeFactory,
) -> None:
    """A is given B's ws:// URL; the link opens over WebSocket and moves to B's TCP endpoint on
    both sides, with no peer_disconnected, one link per side, and connect_endpoint of the
    ws:// URL answers with the moved link."""
    a = await node(transport=ws_and_tcp())
    b = await node(transport=ws_and_tcp())
    with capture_logs(logger="gravpy.mesh") as logs:
        first = await a.connect_endpoint(ws_of(b))
        assert first.transport == "websocket"
        await a.wait_for(over("tcp", b), timeout=GUARD)
        await b.wait_for(over("tcp", a), timeout=GUARD)
        await a.wait_for(lambda _: hub(a).upgrades.statistics().in_progress == 0, timeout=GUARD)
        await b.wait_for(lambda _: hub(b).upgrades.statistics().in_progress == 0, timeout=GUARD)
    assert transports(a) == [("tcp", "open")]
    assert transports(b) == [("tcp", "open")]
    moved = sorted(e["node"] for e in logs if e.get("event") == "link_moved")
    assert moved == sorted([a.node_uuid, b.node_uuid])
    assert not [e for e in logs if e.get("event") == "peer_disconnected"]
    assert hub(a).upgrades.statistics().moved == 1
    assert hub(a).statistics().link_moves == {"moved": 1, "failed": 0, "refused": 0}
    again = await asyncio.wait_for(a.connect_endpoint(ws_of(b)), GUARD)
    assert (again.uuid, again.transport) == (b.node_uuid, "tcp")


async def stream(sender: Grav, kind: str, moved: Callable[[], bool], after: int) -> tuple[int, int]:
    """Send numbered ``kind`` messages from ``sender`` until ``moved()``, then ``after`` more;
    returns (how many were sent before the move was seen, how many in all)."""
    pod = sender.connect()
    i = before = 0
    async with asyncio.timeout(GUARD):
        while not before or i < before + after:
            pod.send(Message.new(kind, str(i)))
            i += 1
            if not before and moved():
                before = i
            if i % 16 == 0:
                await asyncio.sleep(0)  # let the links work between bursts
    return before, i


async def test_numbered_streams_across_the_move_arrive_complete_once_and_in_order(
    node: NodeFactory,
) -> None:
    """Streams of numbered messages each way, sent before, during and after the move, arrive
    complete, once each, in order, and nothing more arrives afterwards."""
    a = await node(transport=ws_and_tcp())
    b = await node(transport=ws_and_tcp())
    at_a: asyncio.Queue[Message] = asyncio.Queue()
    at_b: asyncio.Queue[Message] = asyncio.Queue()
    a.connect().on_type("n.ba", at_a.put_nowait)
    b.connect().on_type("n.ab", at_b.put_nowait)
    await a.connect_endpoint(ws_of(b))
    await a.wait_for(linked_to(b, interest="n.ab"), timeout=GUARD)
    await b.wait_for(linked_to(a, interest="n.ba"), timeout=GUARD)

    def moved() -> bool:
        return over("tcp", b)(a.peers()) and over("tcp", a)(b.peers())

    (before_ab, sent_ab), (before_ba, sent_ba) = await asyncio.gather(
        stream(a, "n.ab", moved, 300), stream(b, "n.ba", moved, 300)
    )
    assert before_ab > 0  # some went before the move was complete
    assert before_ba > 0
    for got, sent in ((at_b, sent_ab), (at_a, sent_ba)):
        async with asyncio.timeout(GUARD):
            numbers = [int((await got.get()).text()) for _ in range(sent)]
        assert numbers == list(range(sent))
    await settle(a)
    await settle(b)
    assert at_a.empty()  # nothing twice
    assert at_b.empty()
    assert hub(a).upgrades.statistics().moved == 1
    assert hub(b).statistics().lost_by_origin == {}


def echo(g: Grav) -> None:
    """A pod on ``g`` that answers ``svc.echo`` with the request's data."""
    responder = g.connect()
    responder.on_type(
        "svc.echo", lambda m: responder.reply_to(m, Message.new("svc.echo.r", m.data))
    )


def hold_from_others(g: Grav, held: list[tuple[Grav, Message]]) -> Callable[[Message], None]:
    """A handler keeping the requests other nodes ask of ``g`` in ``held``, unanswered."""

    def keep(m: Message) -> None:
        if m.text() != g.node_uuid:
            held.append((g, m))

    return keep


async def test_requests_across_the_move_are_all_answered(node: NodeFactory) -> None:
    """Requests each way, asked before, during and after the move, every one with a reply; and
    requests asked over WebSocket but answered only once the link moved get their replies."""
    a = await node(transport=ws_and_tcp())
    b = await node(transport=ws_and_tcp())
    held: list[tuple[Grav, Message]] = []
    for g in (a, b):
        echo(g)
        g.connect().on_type("svc.later", hold_from_others(g, held))
    await a.connect_endpoint(ws_of(b))
    await a.wait_for(linked_to(b, interest="svc.echo"), timeout=GUARD)
    await b.wait_for(linked_to(a, interest="svc.later"), timeout=GUARD)
    assert transports(a) == [("websocket", "open")]
    later = [g.connect().send(Message.new("svc.later", g.node_uuid)) for g in (a, b)]

    async def ask(asker: Grav, stop: asyncio.Event) -> int:
        pod = asker.connect()
        n = 0
        while not stop.is_set() or n < 20:
            data = f"{asker.node_uuid}-{n}".encode()
            reply = await pod.send(Message.new("svc.echo", data)).wait_until(GUARD)
            assert reply.data == data
            n += 1
        return n

    moved = asyncio.Event()

    async def watch() -> None:
        await a.wait_for(over("tcp", b), timeout=GUARD)
        await b.wait_for(over("tcp", a), timeout=GUARD)
        moved.set()

    async with asyncio.timeout(GUARD * 2):
        watching = asyncio.ensure_future(watch())
        counts = await asyncio.gather(*(ask(g, moved) for g in (a, b, a, b)))
        await watching
    assert all(n >= 20 for n in counts)
    assert hub(a).upgrades.statistics().moved == 1
    assert sorted(m.text() for _, m in held) == sorted([a.node_uuid, b.node_uuid])  # one each
    for g, request in held:  # answered over TCP, asked over WebSocket
        g.connect().reply_to(request, Message.new("svc.later.r", request.data))
    replies = [await receipt.wait_until(GUARD) for receipt in later]
    assert [r.text() for r in replies] == [a.node_uuid, b.node_uuid]


async def impostor_hello(endpoint: str, uuid: str, token: bytes) -> Rejected:
    """Dial ``endpoint`` over TCP claiming node ``uuid`` with upgrade ``token``; the refusal."""
    link = await TcpTransport().dial(endpoint, timeout=GUARD)
    proto = PeerProtocol(
        NodeInfo(uuid), initiator=True, now=time.monotonic(), nonce=os.urandom(16),
        upgrade_token=token,
    )  # fmt: skip
    try:
        async with asyncio.timeout(GUARD):
            for frame in proto.data_to_send():
                await link.send(frame)
            while True:
                for event in proto.receive_frame(await link.recv(), time.monotonic()):
                    if isinstance(event, Rejected):
                        return event
                for frame in proto.data_to_send():
                    await link.send(frame)
    finally:
        await link.close("normal")


async def test_a_hello_with_a_wrong_or_missing_token_does_not_replace_the_live_link(
    node: NodeFactory,
) -> None:
    """Dials claiming A's uuid reach B over TCP with a wrong token and with none: both are
    refused as duplicates (the wrong token counted and logged as such), and B's link to A, over
    WebSocket, stays the one it was and carries messages."""
    a = await node(transport=ws_only())  # A cannot move the link itself
    b = await node(transport=ws_and_tcp())
    got: asyncio.Queue[Message] = asyncio.Queue()
    b.connect().on_type("still.>", got.put_nowait)
    await a.connect_endpoint(ws_of(b))
    await a.wait_for(linked_to(b, interest="still.>"), timeout=GUARD)
    await b.wait_for(linked_to(a), timeout=GUARD)
    live = hub(b).link_for(a.node_uuid)
    assert live is not None
    assert live.proto.upgrade_token  # B issued a token on it
    tcp_b = next(ep for ep in b.endpoints() if ep.startswith("tcp://"))
    with capture_logs(logger="gravpy.mesh") as logs:
        wrong = await impostor_hello(tcp_b, a.node_uuid, os.urandom(16))
        missing = await impostor_hello(tcp_b, a.node_uuid, b"")
    assert (wrong.reason, missing.reason) == ("duplicate", "duplicate")
    assert "upgrade token" in wrong.detail
    assert hub(b).link_for(a.node_uuid) is live
    assert live.is_open
    assert hub(b).upgrades.statistics().refused == 1
    assert hub(b).statistics().link_moves["refused"] == 1
    assert hub(b).statistics().handshakes_rejected["duplicate"] == 2
    refused = [e for e in logs if e.get("event") == "handshake_refused"]
    assert any("upgrade token" in e["detail"] for e in refused)
    a.connect().send(Message.new("still.here", "yes"))
    async with asyncio.timeout(GUARD):
        assert (await got.get()).text() == "yes"


async def test_a_peer_without_a_tcp_endpoint_stays_on_websocket(node: NodeFactory) -> None:
    """A dials B (no TCP endpoint) and C (one) by their ws:// URLs: the link to C moves to TCP,
    the link to B stays on WebSocket (B's HELLO names nothing faster)."""
    a = await node(transport=ws_and_tcp())
    b = await node(transport=ws_only())
    c = await node(transport=ws_and_tcp())
    await a.connect_endpoint(ws_of(b))
    await a.connect_endpoint(ws_of(c))
    await a.wait_for(over("tcp", c), timeout=GUARD)
    link_b = hub(a).link_for(b.node_uuid)
    assert link_b is not None
    assert link_b.link.transport == "websocket"
    assert upgrade_endpoint(link_b, "peer", hub(a).transports) == ""
    assert hub(a).upgrades.statistics().moved == 1  # the link to C, not B
    await settle(a)
    assert over("websocket", a)(b.peers())


async def test_with_listen_tcp_off_nothing_changes(node: NodeFactory) -> None:
    """A without a TCP transport (gravd's listen_tcp off) dials B by its ws:// URL and stays on
    WebSocket, while B, which has one, moves its own link to C."""
    a = await node(transport=ws_only())
    b = await node(transport=ws_and_tcp())
    c = await node(transport=ws_and_tcp())
    await a.connect_endpoint(ws_of(b))
    await b.connect_endpoint(ws_of(c))
    await b.wait_for(over("tcp", c), timeout=GUARD)
    await b.wait_for(over("websocket", a), timeout=GUARD)
    link_b = hub(a).link_for(b.node_uuid)
    assert link_b is not None
    assert link_b.remote is not None
    assert link_b.remote.endpoint.startswith("tcp://")  # B names its TCP endpoint...
    assert upgrade_endpoint(link_b, "peer", hub(a).transports) == ""  # ...A cannot dial it
    assert link_b.link.transport == "websocket"
    assert link_b.is_open
    assert hub(a).upgrades.statistics().moved == 0


def open_pair() -> tuple[PeerProtocol, PeerProtocol]:
    """Two protocols, shaken hands in memory: the initiator and the acceptor, both OPEN."""
    a = PeerProtocol(NodeInfo("a"), initiator=True, now=0.0, nonce=os.urandom(16))
    b = PeerProtocol(NodeInfo("b"), initiator=False, now=0.0, nonce=os.urandom(16))
    while a.has_data_to_send or b.has_data_to_send:
        for sender, receiver in ((a, b), (b, a)):
            for frame in sender.data_to_send():
                for event in receiver.receive_frame(frame, 0.0):
                    if isinstance(event, HelloReceived):
                        receiver.accept()
    assert (a.state, b.state) == (LinkState.OPEN, LinkState.OPEN)
    return a, b


async def test_moved_follows_every_message_queued_before_it() -> None:
    """On a real TCP link, MOVED asked for while 2,500 messages wait in the link's queue
    reaches the other end after all of them."""
    async with serving(TcpTransport(host="127.0.0.1", port=0)) as server:
        dialled = await TcpTransport().dial(server.url, timeout=GUARD)
        accepted = await server.links.get()
        a, b = open_pair()
        writer = LinkWriter(
            dialled, a, LinkDrops(), Bus().congestion, queue_limit=4096, queue_bytes=1 << 20
        )
        for i in range(2500):  # more than one MSGS batch (max_batch 1024)
            assert writer.enqueue(Message.new("q.n", str(i)), 0)
        writer.after_queue(a.send_moved)
        await writer.write_all()
        got: list[str] = []
        async with asyncio.timeout(GUARD):
            while True:
                events = b.receive_frame(await accepted.recv(), 0.0)
                got += [
                    m.text() for e in events if isinstance(e, MessagesReceived) for m in e.messages
                ]
                if any(isinstance(e, MovedReceived) for e in events):
                    break
        await dialled.close("normal")
    assert got == [str(i) for i in range(2500)]


async def test_nodes_with_a_mesh_key_move_their_link_too(node: NodeFactory) -> None:
    """With a mesh key (every frame after AUTH tagged, MOVED too), the ws:// link moves to TCP
    and a message sent across the move arrives."""
    key = os.urandom(32)
    a = await node(transport=ws_and_tcp(), mesh_key=key)
    b = await node(transport=ws_and_tcp(), mesh_key=key)
    got: asyncio.Queue[Message] = asyncio.Queue()
    b.connect().on_type("keyed.>", got.put_nowait)
    await a.connect_endpoint(ws_of(b))
    await a.wait_for(linked_to(b, interest="keyed.>"), timeout=GUARD)
    a.connect().send(Message.new("keyed.x", "across"))
    await a.wait_for(over("tcp", b), timeout=GUARD)
    await b.wait_for(over("tcp", a), timeout=GUARD)
    await a.wait_for(lambda _: hub(a).upgrades.statistics().in_progress == 0, timeout=GUARD)
    async with asyncio.timeout(GUARD):
        assert (await got.get()).text() == "across"
    assert hub(a).statistics().protocol_violations == {}
    assert hub(b).statistics().protocol_violations == {}


async def test_a_move_whose_moved_frame_is_lost_resumes_on_the_new_link(
    node: NodeFactory,
) -> None:
    """B's MOVED is lost (a fault injected into B): A sees the old link end without it, asks B
    on the new link for what B numbered since, and B's stream still arrives complete, once
    and in order, nothing counted lost."""
    a = await node(transport=ws_and_tcp(), buffer_size=4096)
    b = await node(transport=ws_and_tcp(), buffer_size=4096)
    at_a: asyncio.Queue[Message] = asyncio.Queue()
    a.connect().on_type("n.ba", at_a.put_nowait)
    hub(b).upgrades.mark = lambda old: None  # type: ignore[method-assign]
    with capture_logs(logger="gravpy.mesh") as logs:
        await a.connect_endpoint(ws_of(b))
        await b.wait_for(linked_to(a, interest="n.ba"), timeout=GUARD)
        _, sent = await stream(b, "n.ba", lambda: hub(b).upgrades.moved == 1, 200)
        async with asyncio.timeout(GUARD):
            numbers = [int((await at_a.get()).text()) for _ in range(sent)]
        await settle(a)
    assert numbers == list(range(sent))
    assert at_a.empty()
    undrained = [e for e in logs if e.get("event") == "move_undrained"]
    assert [e["node"] for e in undrained] == [a.node_uuid]
    resent = [e for e in logs if e.get("event") == "resent" and e["node"] == b.node_uuid]
    assert resent
    assert resent[-1]["messages"] > 0
    assert hub(a).statistics().lost_by_origin == {}


async def test_a_move_whose_dial_fails_is_retried_until_the_endpoint_answers(
    node: NodeFactory,
) -> None:
    """B advertises a TCP endpoint nothing listens on yet (a port a firewall opens later): A's
    move fails, is retried with backoff, and the link moves once a forwarder to B's TCP
    listener answers there."""
    later = unused_port_no_dial_takes()
    inner = TcpTransport(host="127.0.0.1", port=0)
    b = await node(
        transport=[
            WebSocketTransport(host="127.0.0.1", port=0),
            AdvertisedTransport(inner, Address("127.0.0.1", later)),
        ]
    )
    quick = dataclasses.replace(FAST, backoff=BackoffPolicy(initial=0.05, maximum=0.2))
    a = await node(transport=ws_and_tcp(), hub_config=quick)
    await a.connect_endpoint(ws_of(b))
    await until(lambda: hub(a).upgrades.statistics().failed >= 2)
    assert transports(a) == [("websocket", "open")]
    real = next(ep for ep in b.endpoints() if ep.startswith("tcp://") and f":{later}" not in ep)
    port = int(real.rsplit(":", 1)[1])
    pipes: list[asyncio.Task[None]] = []

    async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
        pipes.extend(
            asyncio.create_task(p) for p in (pipe(reader, up_writer), pipe(up_reader, writer))
        )

    forwarder = await asyncio.start_server(forward, "127.0.0.1", later)
    try:
        await a.wait_for(over("tcp", b), timeout=GUARD)
        assert hub(a).upgrades.statistics().moved == 1
    finally:
        forwarder.close()
        for task in pipes:
            task.cancel()
        await asyncio.gather(*pipes, return_exceptions=True)
        await forwarder.wait_closed()

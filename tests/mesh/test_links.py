"""Links between real nodes: liveness, redial, duplicates, self, withdraw, refusals, bad input."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import msgpack
import pytest
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

import gravpy
from discovery.static import StaticDiscovery
from gravpy import Message
from gravpy.backoff import BackoffPolicy
from gravpy.errors import (
    HandshakeRejectedError,
    LinkClosedError,
    NodeUUIDMismatch,
    UsageError,
    WaitTimeout,
)
from gravpy.mesh import HubConfig, PeerInfo
from gravpy.mesh.dialer import DialOutcome, WantedEndpoint
from gravpy.plugins import DiscoveryContext, PeerReport, Transport
from gravpy.proto import ProtocolConfig
from gravpy.testing import capture_logs
from tests._bus_helpers import until
from transports.tcp import TcpTransport
from transports.websocket import WebSocketTransport

from .conftest import NodeFactory, linked_to

ROOT = Path(__file__).resolve().parents[2]


@contextlib.asynccontextmanager
async def node_process(
    port: int = 0,
) -> AsyncIterator[tuple[asyncio.subprocess.Process, dict[str, str]]]:
    """A node in its own process (tests/mesh/node_proc.py); killed by this handle at the end."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.mesh.node_proc",
        "--port",
        str(port),
        cwd=ROOT,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(20):
            while not (line := await proc.stdout.readline()).startswith(b"{"):
                assert line, "node process exited before it was listening"
        yield proc, json.loads(line)
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGCONT)
                proc.kill()
        await proc.wait()


def ready(uuid: str) -> Callable[[list[PeerInfo]], bool]:
    """Linked to ``uuid``, which advertises the echo service."""
    return lambda peers: any(p.uuid == uuid and "svc.echo" in p.interests for p in peers)


async def test_dead_peer_is_noticed_and_its_requests_fail_then_it_is_redialled(
    node: NodeFactory,
) -> None:
    """A stopped peer is found dead by ping/pong, its requests fail then, and it is redialled."""
    async with node_process() as (proc, info):
        port = int(info["endpoint"].rsplit(":", 1)[1].split("/")[0])
        a = await node(discovery=[StaticDiscovery([info["endpoint"]])])
        await a.wait_for(ready(info["uuid"]), timeout=10)
        pod = a.connect()
        reply = await pod.send(Message.new("svc.echo", b"1")).wait_until(5)
        assert reply.data == b"1"

        os.kill(proc.pid, signal.SIGSTOP)  # alive but silent: only liveness can tell
        receipt = pod.send(Message.new("svc.echo", b"2"))
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(LinkClosedError):
            await receipt.wait_until(30)
        assert loop.time() - started < 10  # found by dead_after (1 s here), not the 30 s timeout
        assert not any(p.uuid == info["uuid"] for p in a.peers())
        proc.kill()
        await proc.wait()

    async with node_process(port) as (_, again):  # the same endpoint comes back
        await a.wait_for(ready(again["uuid"]), timeout=15)
        reply = await pod.send(Message.new("svc.echo", b"3")).wait_until(5)
        assert reply.data == b"3"


async def test_simultaneous_dials_end_with_one_link(node: NodeFactory) -> None:
    """Two nodes that dial each other at the same instant keep exactly one link, and both
    connect_endpoint calls return it (no duplicate refusal reaches the caller)."""
    a = await node()
    b = await node()
    from_a, from_b = await asyncio.gather(
        a.connect_endpoint(b.endpoints()[0]),
        b.connect_endpoint(a.endpoints()[0]),
    )
    assert from_a.uuid == b.node_uuid
    assert from_b.uuid == a.node_uuid
    await a.wait_for(linked_to(b), timeout=5)
    await b.wait_for(linked_to(a), timeout=5)
    assert a.hub is not None
    assert b.hub is not None
    async with asyncio.timeout(5):
        while len(a.hub.links) != 1 or len(b.hub.links) != 1:
            await b.hub.wait_changed()
    assert [p.uuid for p in a.peers()] == [b.node_uuid]
    assert [p.uuid for p in b.peers()] == [a.node_uuid]


async def test_node_never_links_to_itself(node: NodeFactory) -> None:
    """Dialling one's own endpoint is refused with reason 'self'."""
    a = await node()
    with pytest.raises(HandshakeRejectedError) as caught:
        await a.connect_endpoint(a.endpoints()[0])
    assert caught.value.reason == "self"
    assert a.peers() == []


async def test_wrong_mesh_and_wrong_key_are_refused_with_the_reason(node: NodeFactory) -> None:
    """A link between different meshes, or with a wrong key, is refused and the caller sees why."""
    key = b"k" * 32
    lab = await node(belongs_to="lab", mesh_key=key)
    other = await node(belongs_to="other", mesh_key=key)
    with pytest.raises(HandshakeRejectedError) as caught:
        await other.connect_endpoint(lab.endpoints()[0])
    assert caught.value.reason == "mesh"
    wrong = await node(belongs_to="lab", mesh_key=b"x" * 32)
    with pytest.raises(HandshakeRejectedError) as caught:
        await wrong.connect_endpoint(lab.endpoints()[0])
    assert caught.value.reason == "proof"
    right = await node(belongs_to="lab", mesh_key=key)
    info = await right.connect_endpoint(lab.endpoints()[0])
    assert info.uuid == lab.node_uuid


async def test_stopping_node_withdraws_before_closing(node: NodeFactory) -> None:
    """A node that stops withdraws first: its peer logs the withdrawal before the disconnect."""
    a = await node()
    b = await node(discovery=[StaticDiscovery(a.endpoints())])
    await b.wait_for(linked_to(a), timeout=5)
    await a.wait_for(linked_to(b), timeout=5)  # the accepting side opens a round trip later
    with capture_logs() as logs:
        await a.stop()
        await b.wait_for(lambda ps: not ps, timeout=5)
    events = [e["event"] for e in logs if e.get("peer") == a.node_uuid]
    assert "peer_withdrew" in events
    assert events.index("peer_withdrew") < events.index("peer_disconnected")
    closed = [e for e in logs if e["event"] == "peer_disconnected" and e["peer"] == a.node_uuid]
    assert "shutdown" in closed[0]["reason"]


async def read_until_closed(ws: ClientConnection) -> None:
    """Read frames until the connection closes (raises ConnectionClosed), at most 10 s."""
    async with asyncio.timeout(10):
        while True:
            await ws.recv()


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\xc1garbage", "bad_frame"),
        (msgpack.packb([99, "what"]), "bad_frame"),
        (b"\x00" * (3 << 20), "1009"),  # over the frame limit: the transport refuses it
    ],
)
async def test_bad_input_closes_that_link_only(
    node: NodeFactory, payload: bytes, reason: str
) -> None:
    """Garbage or an oversized frame closes that link with a reason; the node serves others."""
    a = await node()
    b = await node(discovery=[StaticDiscovery(a.endpoints())])
    await a.wait_for(linked_to(b), timeout=5)
    with capture_logs() as logs:
        async with ws_connect(a.endpoints()[0], compression=None, max_size=None) as ws:
            await ws.send(payload)
            with pytest.raises(ConnectionClosed) as closed:
                await read_until_closed(ws)
    said = f"{closed.value.rcvd.code if closed.value.rcvd else ''} " + str(closed.value)
    logged = " ".join(str(e) for e in logs)
    assert reason in said or reason in logged
    responder = b.connect()
    responder.on_type("svc.ok", lambda m: responder.reply_to(m, Message.new("svc.ok.r", b"ok")))
    await a.wait_for(linked_to(b, interest="svc.ok"), timeout=5)
    reply = await a.connect().send(Message.new("svc.ok", b"")).wait_until(5)
    assert reply.data == b"ok"


async def test_silent_client_is_cut_off_at_the_handshake_deadline(node: NodeFactory) -> None:
    """A client that never sends its HELLO is closed once the handshake deadline passes."""
    a = await node()
    loop = asyncio.get_running_loop()
    started = loop.time()
    with capture_logs() as logs:
        async with ws_connect(a.endpoints()[0], compression=None) as ws:
            with pytest.raises(ConnectionClosed):
                await read_until_closed(ws)  # the node's HELLO, then its REJECT and close
    assert loop.time() - started < 8
    assert any(e.get("reason") == "deadline" for e in logs)


async def test_message_over_the_mesh_limit_is_refused_at_send(node: NodeFactory) -> None:
    """A message too large for any link raises UsageError at send; the link keeps working."""
    a = await node()
    b = await node(discovery=[StaticDiscovery(a.endpoints())])
    responder = b.connect()
    responder.on_type("svc.ok", lambda m: responder.reply_to(m, Message.new("svc.ok.r", b"ok")))
    await a.wait_for(linked_to(b, interest="svc.ok"), timeout=5)
    pod = a.connect()
    with pytest.raises(UsageError, match="over the mesh limit"):
        pod.send(Message.new("svc.ok", b"x" * (2 << 20)))
    reply = await pod.send(Message.new("svc.ok", b"small")).wait_until(5)
    assert reply.data == b"ok"


async def test_message_whose_headers_overflow_a_frame_is_refused_at_send(
    node: NodeFactory,
) -> None:
    """Small data with headers over a frame (counted in UTF-8 bytes) raises UsageError at send
    instead of dying on the link; headers that fit go."""
    a = await node()
    b = await node(discovery=[StaticDiscovery(a.endpoints())])
    responder = b.connect()
    responder.on_type("svc.ok", lambda m: responder.reply_to(m, Message.new("svc.ok.r", b"ok")))
    await a.wait_for(linked_to(b, interest="svc.ok"), timeout=5)
    pod = a.connect()
    with pytest.raises(UsageError, match="one frame carries"):
        pod.send(Message.new("svc.ok", b"s", headers={"big": "h" * 1_600_000}))
    with pytest.raises(UsageError, match="one frame carries"):  # 600,000 characters, 1.2 MB
        pod.send(Message.new("svc.ok", b"s", headers={"big": "\u00e9" * 600_000}))
    pod.send(Message.new("svc.ok", b"s", headers={"big": "h" * 400_000}))  # 400 kB: fits
    reply = await pod.send(Message.new("svc.ok", b"small", headers={"k": "v"})).wait_until(5)
    assert reply.data == b"ok"


class ScriptedDiscovery:
    """A discovery plugin whose reports the test makes by hand."""

    name = "scripted"

    def __init__(self) -> None:
        self.report: Callable[[PeerReport], None] | None = None
        self.running = asyncio.Event()

    async def run(self, ctx: DiscoveryContext, report: Callable[[PeerReport], None]) -> None:
        self.report = report
        self.running.set()
        await asyncio.Event().wait()


async def test_a_node_reported_gone_is_not_redialled(node: NodeFactory) -> None:
    """When discovery says a node left, the hub stops its dial loop for that endpoint."""
    a = await node()
    endpoint = a.endpoints()[0]
    scripted = ScriptedDiscovery()
    b = await node(discovery=[scripted])
    await scripted.running.wait()
    assert scripted.report is not None
    scripted.report(PeerReport(endpoint, a.node_uuid, "scripted"))
    await b.wait_for(linked_to(a), timeout=5)
    assert b.hub is not None
    dialer = b.hub.want(endpoint)
    scripted.report(PeerReport(endpoint, a.node_uuid, "scripted", gone=True))
    assert endpoint not in b.hub.dialers()
    await a.stop()
    assert dialer.task is not None
    async with asyncio.timeout(5):  # the loop ends once the open link does, without a redial
        await asyncio.gather(dialer.task, return_exceptions=True)
    assert endpoint not in b.hub.dialers()


async def test_an_unreachable_endpoint_wanted_again_keeps_backing_off(node: NodeFactory) -> None:
    """An endpoint that discovery reports gone and found again and again (a flapping record)
    while nothing answers there is not dialled at each report: the new loop waits out the
    backoff the old one was in."""
    a = await node(
        hub_config=HubConfig(backoff=BackoffPolicy(initial=30.0, maximum=60.0)),
        transport=TcpTransport(host="127.0.0.1", port=0),
    )
    hub = a.hub
    assert hub is not None
    dials: list[str] = []
    dial = hub.dial

    async def counted(wanted: WantedEndpoint) -> DialOutcome:
        dials.append(wanted.endpoint)
        return await dial(wanted)

    hub.dial = counted  # type: ignore[method-assign]
    endpoint = (
        "tcp://127.0.0.1:1"  # nothing listens on port 1 (and tcp, the fastest, dials at once)
    )
    first = hub.want(endpoint, "flapping-node", "scripted")
    await until(lambda: first.unreachable == 1)
    for _ in range(5):
        hub.unwant(endpoint)
        hub.want(endpoint, "flapping-node", "scripted")
        for _ in range(5):  # (a new loop's first dial is in its first step)
            await asyncio.sleep(0)
    assert dials == [endpoint]


async def test_an_endpoint_no_transport_dials_is_abandoned_not_crashed(
    node: NodeFactory,
) -> None:
    """An http:// endpoint found for a WebSocket-only node ends its dial loop with a log line."""
    scripted = ScriptedDiscovery()
    a = await node(discovery=[scripted])
    await scripted.running.wait()
    assert scripted.report is not None
    assert a.hub is not None
    endpoint = "http://127.0.0.1:9/meta/http"  # what mDNS reports for a node that listens on both
    with capture_logs() as logs:
        scripted.report(PeerReport(endpoint, "other-node", "scripted"))
        task = a.hub.want(endpoint).task  # the dialer the report started
        assert task is not None
        await asyncio.wait_for(task, 5)
    assert task.exception() is None
    assert {"event": "dial_abandoned", "endpoint": endpoint, "reason": "no_transport"}.items() <= (
        next(e for e in logs if e["event"] == "dial_abandoned").items()
    )
    assert not [e for e in logs if e["event"] == "task_failed"]
    with pytest.raises(UsageError, match="no transport of this node dials"):
        await asyncio.wait_for(a.connect_endpoint(endpoint), 5)


async def test_a_message_at_the_size_limit_crosses_the_mesh(node: NodeFactory) -> None:
    """A message with the largest data the mesh allows (1 MiB) reaches the other node."""
    a = await node()
    b = await node(discovery=[StaticDiscovery(a.endpoints())])
    big = b"x" * (1 << 20)
    got = asyncio.get_running_loop().create_future()
    b.connect().on_type("big.>", lambda m: got.done() or got.set_result(m.data))
    await a.wait_for(linked_to(b, interest="big.>"), timeout=5)
    a.connect().send(Message.new("big.one", big))
    async with asyncio.timeout(10):
        assert await got == big


async def test_hub_totals_survive_the_links_that_made_them(node: NodeFactory) -> None:
    """Hub statistics keep what a closed link carried, and count refused handshakes by reason."""
    a = await node()
    b = await node(discovery=[StaticDiscovery(a.endpoints())])
    counter_done = asyncio.Event()
    seen: list[Message] = []

    def on(msg: Message) -> None:
        seen.append(msg)
        if len(seen) == 10:
            counter_done.set()

    b.connect().on_type("tot.>", on)
    await a.wait_for(linked_to(b, interest="tot.>"), timeout=5)
    sender = a.connect()
    for i in range(10):
        sender.send(Message.new("tot.n", str(i)))
    async with asyncio.timeout(5):
        await counter_done.wait()
    await b.stop()
    await a.wait_for(lambda peers: not peers, timeout=5)
    with pytest.raises(HandshakeRejectedError):
        await a.connect_endpoint(a.endpoints()[0])
    assert a.hub is not None
    stats = a.hub.statistics()
    assert stats.messages_out == 10
    assert stats.links_opened == 1
    assert stats.links_closed == 1
    assert stats.handshakes_rejected.get("self", 0) >= 1


async def test_node_other_than_the_reported_one_raises_uuid_mismatch(node: NodeFactory) -> None:
    """A dial expecting another node's uuid is refused with NodeUUIDMismatch naming both."""
    a = await node()
    b = await node()
    assert a.hub is not None
    expected = str(uuid.uuid4())
    wanted = a.hub.want(b.endpoints()[0], expected_uuid=expected)
    with pytest.raises(NodeUUIDMismatch) as caught:
        async with asyncio.timeout(5):
            await asyncio.shield(wanted.first_link())
    assert caught.value.expected == expected
    assert caught.value.actual == b.node_uuid


async def test_attach_to_a_silent_server_raises_wait_timeout() -> None:
    """gravpy.connect to a server that accepts but never answers raises WaitTimeout in time."""
    held: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(WaitTimeout):
            async with gravpy.connect(f"ws://127.0.0.1:{port}/meta/message", timeout=0.5):
                pass
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_a_killed_peer_under_traffic_is_forgotten_at_once_and_relinked(
    node: NodeFactory,
) -> None:
    """With traffic flowing, a killed peer's link is dropped as soon as the socket closes (not
    after a close handshake or dead_after), and the peer is relinked once it is back."""
    slow_liveness = HubConfig(
        protocol=ProtocolConfig(ping_interval=5.0, dead_after=30.0),
        backoff=BackoffPolicy(initial=0.05, maximum=0.2),
    )
    async with node_process() as (proc, info):
        port = int(info["endpoint"].rsplit(":", 1)[1].split("/")[0])
        a = await node(discovery=[StaticDiscovery([info["endpoint"]])], hub_config=slow_liveness)
        await a.wait_for(ready(info["uuid"]), timeout=10)
        pod = a.connect()
        stop = asyncio.Event()

        async def stream() -> None:
            payload = b"x" * 16_384
            while not stop.is_set():
                pod.send(Message.new("svc.echo", payload))
                await asyncio.sleep(0)

        streaming = asyncio.create_task(stream())
        try:
            assert a.hub is not None
            while a.hub.statistics().messages_out < 2_000:  # noqa: ASYNC110 - a plain counter
                await asyncio.sleep(0)  # traffic is flowing: the writer is mid-send
            loop = asyncio.get_running_loop()
            proc.kill()
            killed_at = loop.time()
            await a.wait_for(lambda peers: not peers, timeout=25)
            forgotten_after = loop.time() - killed_at
        finally:
            stop.set()
            await streaming
        await proc.wait()
        assert forgotten_after < 3.0, forgotten_after  # dead_after is 30 s here
    async with node_process(port) as (_, again):
        await a.wait_for(ready(again["uuid"]), timeout=15)


async def test_a_replaced_link_resumes_from_the_old_links_hello(node: NodeFactory) -> None:
    """Two nodes that link twice (each dialled the other) keep one link; each side asks the other
    to resend from the origin number the replaced link's HELLO carried (what crossed the switch
    on the old link is not lost though nothing numbered was heard before), and messages flow
    on the kept link."""

    def both() -> list[Transport]:  # a node's HELLO names its tcp endpoint; b dials its ws one
        return [
            WebSocketTransport(host="127.0.0.1", port=0),
            TcpTransport(host="127.0.0.1", port=0),
        ]

    a = await node(node_uuid="f" * 8 + "-a", transport=both())
    b = await node(node_uuid="0" * 8 + "-b", transport=both())  # its dial wins the tie
    got: asyncio.Queue[Message] = asyncio.Queue()
    b.connect().on_type("kept.>", got.put_nowait)
    sender = a.connect()
    for i in range(3):  # numbered 1..3 at a before any link: a's HELLOs carry 3
        sender.send(Message.new("unheard.n", str(i)))
    with capture_logs(logger="gravpy.mesh") as logs:
        await a.connect_endpoint(b.endpoints()[0])
        ws_a = next(ep for ep in a.endpoints() if ep.startswith("ws://"))
        await b.connect_endpoint(ws_a)
        await until(
            lambda: any(e.get("event") == "resent" and e["node"] == a.node_uuid for e in logs)
        )
        await a.wait_for(linked_to(b, interest="kept.>"), timeout=5)
    replaced = sorted(e["peer"] for e in logs if e.get("event") == "link_replaced")
    assert replaced == sorted([a.node_uuid, b.node_uuid])  # each side replaced the first link
    resent = [(e["node"], e["after"]) for e in logs if e.get("event") == "resent"]
    assert (a.node_uuid, 3) in resent  # b asked a from the number in a's first HELLO
    sender.send(Message.new("kept.n", "after the switch"))
    async with asyncio.timeout(5):
        assert (await got.get()).text() == "after the switch"

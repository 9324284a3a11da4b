"""NatsBridge embedded in a Grav: two meshes in one process through one real nats-server."""

from __future__ import annotations

import asyncio
import json

import nats
import pytest
from msgspec.structs import replace
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from gravpy import Grav, Message
from gravpy.bridge import NatsBridgeConfig
from gravpy.bridge.nats import NatsBridge
from gravpy.bridge.subjects import SubjectMap
from gravpy.bridge.wire import Sink, WireClient
from gravpy.errors import NoResponders, UsageError, WaitTimeout
from gravpy.message import PROCESS_DIGITS
from tests._bus_helpers import until
from tests.bridge.nats_proc import NatsServer
from transports.websocket import WebSocketTransport

pytestmark = pytest.mark.timeout(60)


def node(mesh: str, url: str, request_limit: int = 65_536) -> tuple[Grav, NatsBridge]:
    config = NatsBridgeConfig(
        servers=(url,), announce_interval=0.2, ttl=1.0, request_limit=request_limit
    )
    bridge = NatsBridge(config)
    transport = WebSocketTransport("127.0.0.1", 0)
    return Grav(transport=transport, belongs_to=mesh, bridges=[bridge]), bridge


async def test_embedded_bridges_carry_messages_and_requests(nats_one: NatsServer) -> None:
    """Grav(bridges=[NatsBridge(url)]) joins two in-process meshes: a message and a request
    cross with uuid, headers and data intact, and the reply comes back to the asker."""
    g1, b1 = node("east", nats_one.url)
    g2, b2 = node("west", nats_one.url)
    async with g1, g2:
        got: asyncio.Queue[Message] = asyncio.Queue()
        west = g2.connect()
        west.on_type("sensor.*", got.put_nowait)
        east = g1.connect()
        async with asyncio.timeout(10):
            await until(lambda: b1.statistics().exporter and bool(b1.statistics().remote_wants))
        sent = Message.new("sensor.temp", b"21", headers={"unit": "C"})
        assert not east.send(sent).no_responders
        msg = await asyncio.wait_for(got.get(), 10)
        assert (msg.uuid, msg.data, msg.headers) == (
            sent.uuid,
            b"21",
            {"unit": "C", "grav-bridge-origin": "east"},
        )
        west.on_type("svc.echo", lambda m: west.reply_to(m, Message.new("svc.r", m.data + b"!")))
        async with asyncio.timeout(10):
            await until(lambda: "svc.echo" in b1.statistics().remote_wants)
        reply = await east.send(Message.new("svc.echo", b"hi")).wait_until(5.0)
        assert reply.data == b"hi!"
        assert b2.statistics().imported >= 2


async def test_a_reply_that_copies_the_requests_headers_still_crosses_back(
    nats_one: NatsServer,
) -> None:
    """A responder that gives its reply the request's headers (grav-bridge-origin included, as
    code passing context on does) still answers the asker in the other mesh."""
    g1, b1 = node("east", nats_one.url)
    g2, _ = node("west", nats_one.url)
    async with g1, g2:
        west = g2.connect()
        west.on_type(
            "svc.echo",
            lambda m: west.reply_to(m, Message.new("svc.r", m.data, headers=dict(m.headers or {}))),
        )
        east = g1.connect()
        async with asyncio.timeout(10):
            await until(
                lambda: b1.statistics().exporter and "svc.echo" in b1.statistics().remote_wants
            )
        asked = Message.new("svc.echo", b"hi", headers={"trace": "1"})
        reply = await east.send(asked).wait_until(5.0)
        assert (reply.data, reply.headers["trace"]) == (b"hi", "1")


async def test_a_late_reply_crosses_back_however_many_messages_came_since(
    nats_one: NatsServer,
) -> None:
    """A request from another process of another mesh, answered after more messages came
    from NATS than its bridge keeps reply subjects for, still gets its reply back."""
    g1, b1 = node("east", nats_one.url)
    g2, _ = node("west", nats_one.url, request_limit=4)
    async with g1, g2:
        held: asyncio.Queue[Message] = asyncio.Queue()
        west = g2.connect()
        west.on_type("svc.*", held.put_nowait)
        east = g1.connect()
        async with asyncio.timeout(10):
            await until(
                lambda: b1.statistics().exporter and "svc.*" in b1.statistics().remote_wants
            )
        asked = Message.new("svc.slow", b"hi")  # as a process other than this one would ask:
        asked = replace(asked, uuid="ab" * 10 + asked.uuid[PROCESS_DIGITS:])  # its own digits
        receipt = east.send(asked)
        request = await asyncio.wait_for(held.get(), 10)
        for i in range(8):  # twice the reply subjects the west bridge keeps per request
            east.send(Message.new("svc.other", str(i)))
        for _ in range(8):
            await asyncio.wait_for(held.get(), 10)
        west.reply_to(request, Message.new("svc.answer", b"late"))
        assert (await receipt.wait_until(5.0)).data == b"late"


async def announced(nc: Client, mesh: str, pattern: str) -> None:
    """Wait until the bridge of ``mesh`` announces ``pattern``: it subscribed for it first, on
    the connection it announces on, so NATS delivers what is published from then on."""
    heard = asyncio.Event()

    async def on_announcement(m: Msg) -> None:
        if pattern in json.loads(m.data)["patterns"]:
            heard.set()

    subscription = await nc.subscribe(
        SubjectMap("gravpy", mesh).interest_subject, cb=on_announcement
    )
    try:
        await heard.wait()
    finally:
        await subscription.unsubscribe()


async def test_a_late_reply_to_a_plain_nats_client_is_counted(nats_one: NatsServer) -> None:
    """A plain NATS client's request answered after its bridge forgot the reply subject is not
    answered, and counted ``reply_forgotten``; one answered in time reaches the client."""
    g2, bridge = node("west", nats_one.url, request_limit=4)
    async with g2:
        held: asyncio.Queue[Message] = asyncio.Queue()
        west = g2.connect()
        west.on_type("svc.*", held.put_nowait)
        nc = await nats.connect(nats_one.url)
        try:
            inbox = nc.new_inbox()
            replies = await nc.subscribe(f"{inbox}.>")
            async with asyncio.timeout(10):
                await announced(nc, "west", "svc.*")
                await nc.publish("gravpy.outside.svc.slow", b"", reply=f"{inbox}.late")
                for i in range(8):  # twice the reply subjects the bridge keeps
                    await nc.publish("gravpy.outside.svc.more", b"", reply=f"{inbox}.{i}")
                asked = [await held.get() for _ in range(9)]
            west.reply_to(asked[0], Message.new("svc.answer", b"too late"))
            west.reply_to(asked[-1], Message.new("svc.answer", b"in time"))
            answer = await replies.next_msg(timeout=5)
            assert (answer.subject, answer.data) == (f"{inbox}.7", b"in time")
            assert bridge.statistics().lost.get("reply_forgotten") == 1
        finally:
            await nc.close()


async def test_a_bridge_says_connected_once_the_server_has_its_subscriptions(
    nats_one: NatsServer,
) -> None:
    """A plain NATS client that publishes as soon as the bridge says "connected" is heard: the
    state changes only once the server has the subscriptions for what the pods want."""
    nc = await nats.connect(nats_one.url)
    try:
        g2, bridge = node("west", nats_one.url)
        async with g2:
            got: asyncio.Queue[Message] = asyncio.Queue()
            g2.connect().on_type("early.*", got.put_nowait)
            await until(lambda: bridge.statistics().state == "connected")  # (every loop turn)
            await nc.publish("gravpy.outside.early.bird", b"first")
            await nc.flush()
            msg = await asyncio.wait_for(got.get(), 5)
            assert (msg.type, msg.data) == ("early.bird", b"first")
    finally:
        await nc.close()


async def test_an_unexpected_error_ends_a_connection_not_the_bridge(
    nats_one: NatsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error the bridge does not expect while it serves a connection (a bug, here or in
    nats-py) ends that connection only: it is counted in ``errors`` and kept in
    ``last_error``, and the bridge connects again and carries messages."""
    subscribe_direct = WireClient.subscribe_direct
    calls = 0

    async def fails_once(self: WireClient, subject: str, sink: Sink) -> Subscription:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("injected")
        return await subscribe_direct(self, subject, sink)

    monkeypatch.setattr(WireClient, "subscribe_direct", fails_once)
    g1, b1 = node("east", nats_one.url)
    g2, b2 = node("west", nats_one.url)
    async with g1, g2:
        got: asyncio.Queue[Message] = asyncio.Queue()
        g2.connect().on_type("sensor.*", got.put_nowait)
        async with asyncio.timeout(20):
            await until(lambda: b1.statistics().exporter and bool(b1.statistics().remote_wants))
        failed = [s for s in (b1.statistics(), b2.statistics()) if s.errors]
        assert [(s.errors, s.connects, s.last_error) for s in failed] == [
            (1, 2, "RuntimeError: injected")
        ]
        sent = Message.new("sensor.temp", b"21")
        g1.connect().send(sent)
        assert (await asyncio.wait_for(got.get(), 10)).uuid == sent.uuid


async def test_what_a_lone_bridge_is_sent_before_it_is_ready_crosses_when_it_is(
    nats_one: NatsServer,
) -> None:
    """A bridge that has heard what another mesh wants but is not ready yet (it has not had a
    quiet announce interval) holds what its mesh sends for export, and publishes it, in order,
    once it becomes its mesh's active bridge: nothing sent in that first interval is lost."""
    g2, b2 = node("west", nats_one.url)
    config = NatsBridgeConfig(servers=(nats_one.url,), announce_interval=2.0, ttl=5.0)
    b1 = NatsBridge(config)
    g1 = Grav(transport=WebSocketTransport("127.0.0.1", 0), belongs_to="east", bridges=[b1])
    async with g2:
        got: asyncio.Queue[Message] = asyncio.Queue()
        g2.connect().on_type("early.*", got.put_nowait)
        async with asyncio.timeout(10):
            await until(lambda: b2.statistics().ready)
        async with g1:
            async with asyncio.timeout(10):
                await until(lambda: "early.*" in b1.statistics().remote_wants)
            assert not b1.statistics().ready  # (the case under test: a quiet interval is 2 s)
            east = g1.connect()
            sent = [Message.new("early.n", str(i)) for i in range(3)]
            for m in sent:
                await east.publish(m)
            assert b1.statistics().export_held == 3
            received = [await asyncio.wait_for(got.get(), 10) for _ in sent]
            assert [m.uuid for m in received] == [m.uuid for m in sent]
            stats = b1.statistics()
            assert (stats.ready, stats.export_recovered, stats.lost) == (True, 3, {})


async def test_what_nats_py_held_while_reconnecting_in_vain_is_counted(
    nats_one: NatsServer,
) -> None:
    """Messages handed to nats-py while it reconnects wait in its pending buffer; when it gives
    up reconnecting they are gone, and counted as ``not_reconnected``."""
    # one reconnect attempt, made ``reconnect_wait`` after the loss: the window in which the
    # messages below must reach nats-py (2 s, so that a loaded machine still makes it)
    config = NatsBridgeConfig(
        servers=(nats_one.url,), ttl=30.0, reconnect_attempts=1, reconnect_wait=2.0
    )
    b1 = NatsBridge(config)
    g1 = Grav(transport=WebSocketTransport("127.0.0.1", 0), belongs_to="east", bridges=[b1])
    g2, _ = node("west", nats_one.url)
    async with g1, g2:
        g2.connect().on_type("sensor.*", lambda m: None)
        async with asyncio.timeout(10):
            await until(lambda: b1.statistics().exporter and bool(b1.statistics().remote_wants))
        await nats_one.stop()
        async with asyncio.timeout(10):
            await until(lambda: b1.statistics().state == "reconnecting")
        east = g1.connect()
        for i in range(5):
            await east.publish(Message.new("sensor.temp", str(i)))
        async with asyncio.timeout(10):
            await until(lambda: b1.statistics().exported == 5)
        assert b1.statistics().state == "reconnecting"  # (else the window was missed)
        async with asyncio.timeout(20):
            await until(lambda: b1.statistics().state != "reconnecting")
            await until(lambda: "not_reconnected" in b1.statistics().lost)
        assert b1.statistics().lost == {"not_reconnected": 5}


def test_a_bridge_needs_a_peer_node() -> None:
    """A bridge on a node without a transport is refused at once."""
    with pytest.raises(UsageError):
        Grav(bridges=[NatsBridge("nats://127.0.0.1:4222")])
    with pytest.raises(UsageError):
        NatsBridgeConfig(servers=("http://x",))


async def test_no_subscriber_on_nats_fails_a_wait_here_and_makes_no_message(
    nats_one: NatsServer,
) -> None:
    """A type exported to NATS with no subscriber there: NATS answers every message with its
    no-responders status. A wait on one, started before or after that status came, raises
    ``NoResponders``; the other messages (nobody waits) cost no failure message in the mesh."""
    bridge = NatsBridge(
        NatsBridgeConfig(
            servers=(nats_one.url,), export=("metrics.>",), announce_interval=0.2, ttl=1.0
        )
    )
    grav = Grav(transport=WebSocketTransport("127.0.0.1", 0), belongs_to="east", bridges=[bridge])
    async with grav:
        pod = grav.connect()
        async with asyncio.timeout(10):
            await until(lambda: bridge.statistics().exporter and bridge.statistics().ready)
            while True:  # until NATS says so: right after it became active, the bridge still
                try:  # hears its own mesh's subjects (``gravpy.bridge.export_shadow``)
                    await pod.send(Message.new("metrics.probe")).wait_until(0.5)
                except NoResponders:
                    break
                except WaitTimeout:
                    continue
        before = bridge.statistics()
        for i in range(200):
            await pod.publish(Message.new("metrics.cpu", str(i)))
        early = pod.send(Message.new("metrics.mem"))  # its wait starts after its status came:
        with pytest.raises(NoResponders):  # NATS answers in order, so this one's came later
            await pod.send(Message.new("metrics.cpu")).wait_until(5.0)
        with pytest.raises(NoResponders):
            await early.wait_until(5.0)
        stats = bridge.statistics()
        assert stats.exported - before.exported == 202
        assert stats.imported == 0  # (each status used to come in as a failure message)
        assert not stats.lost

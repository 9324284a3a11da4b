"""What the NATS bridge cannot carry fails its asker's wait at once, saying why; NATS's
no-responders status does not beat an answer from the asker's own mesh; a closing bridge stays
closing when nats-py reconnects. Against real nats-servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from urllib.parse import unquote

import nats
import pytest
from nats.aio.msg import Msg

from discovery.static import StaticDiscovery
from gravpy import Grav, Message
from gravpy.bridge import NatsBridgeConfig
from gravpy.bridge import exporter as exporter_module
from gravpy.bridge.nats import NatsBridge
from gravpy.bridge.wire import NOW_BYTES
from gravpy.errors import MessageDropped, NoResponders
from tests._bus_helpers import until
from tests.bridge.conftest import BIG, MAX_PAYLOAD
from tests.bridge.nats_proc import NatsServer
from tests.bridge.test_standby_export import admits
from transports.websocket import WebSocketTransport

pytestmark = pytest.mark.timeout(60)


def bridged(
    mesh: str, *servers: str, export: tuple[str, ...] = ("svc.>",), **options: float
) -> tuple[Grav, NatsBridge]:
    """A node of ``mesh`` whose bridge exports ``export`` (no other mesh need want it)."""
    config = NatsBridgeConfig(
        servers=servers, export=export, announce_interval=0.2, ttl=1.0, **options
    )
    bridge = NatsBridge(config)
    transport = WebSocketTransport("127.0.0.1", 0)
    return Grav(transport=transport, belongs_to=mesh, bridges=[bridge]), bridge


def edge_of(mesh: str, g: Grav) -> Grav:
    """A node of ``mesh`` without a bridge, linked to ``g``."""
    return Grav(
        transport=WebSocketTransport("127.0.0.1", 0),
        belongs_to=mesh,
        discovery=[StaticDiscovery(g.endpoints())],
    )


async def exporting(bridge: NatsBridge) -> None:
    """Until ``bridge`` is connected and its mesh's active bridge (it exports)."""

    def ready() -> bool:
        stats = bridge.statistics()
        return stats.state == "connected" and stats.exporter

    await until(ready)


# -- a request the bridge does not send --------------------------------------------------------


async def test_a_request_the_bridges_full_queue_drops_fails_at_once_with_queue_full(
    nats_one: NatsServer,
) -> None:
    """A request dropped because the bridge's queue is full fails its asker's wait at once with
    ``MessageDropped`` (reason ``queue_full``), not with ``NoResponders``."""
    g, bridge = bridged("east", nats_one.url, queue_limit=1, high_water=1)
    async with g:
        await exporting(bridge)
        pod = g.connect()
        fill = b"x" * (NOW_BYTES // 2 + 1)  # two: more than nats-py is handed at once, so the
        for _ in range(2):  # second one waits in the queue (or the first, and the second is
            pod.send(Message.new("svc.fill", fill))  # dropped)
        receipt = pod.send(Message.new("svc.ask", b"?"))  # (no await since: still full)
        with pytest.raises(MessageDropped, match="queue was full") as caught:
            await receipt.wait_until(3600)  # (at once: the test's hang guard is a minute)
        assert caught.value.reason == "queue_full"
        assert bridge.statistics().lost["queue_full"] >= 1


async def test_a_request_whose_type_is_too_long_for_nats_fails_at_once_saying_so(
    nats_one: NatsServer,
) -> None:
    """A request whose escaped type makes its NATS command line too long (counted
    ``subject_too_long``) fails its wait at once with ``MessageDropped`` saying so."""
    g, bridge = bridged("east", nats_one.url)
    async with g:
        await exporting(bridge)
        msg_type = "svc." + "\N{GRINNING FACE}" * 170  # 12 bytes each, escaped, in two subjects
        receipt = g.connect().send(Message.new(msg_type, b"?"))
        with pytest.raises(MessageDropped, match="type is too long for NATS") as caught:
            await receipt.wait_until(3600)
        assert caught.value.reason == "subject_too_long"
        assert bridge.statistics().lost == {"subject_too_long": 1}


@pytest.mark.parametrize("uuid", ["my request", "dotted.id", "star*", "café", "tab\there"])
async def test_a_request_whose_uuid_is_no_nats_token_fails_at_once_saying_so(
    nats_one: NatsServer, uuid: str
) -> None:
    """A request whose uuid (chosen by the app) is not one NATS subject token (counted
    ``bad_id``) fails its wait at once with ``MessageDropped`` saying so."""
    g, bridge = bridged("east", nats_one.url)
    async with g:
        await exporting(bridge)
        request = Message(uuid, "", "", "svc.ask", time.time(), b"?", None)
        receipt = g.connect().send(request)
        with pytest.raises(MessageDropped, match="is not one NATS subject token") as caught:
            await receipt.wait_until(3600)
        assert caught.value.reason == "bad_id"
        assert repr(uuid) in str(caught.value)
        assert bridge.statistics().lost == {"bad_id": 1}


async def test_a_request_while_the_bridge_is_not_connected_fails_at_once_saying_so(
    nats_one: NatsServer,
) -> None:
    """A request only the bridge would carry, while it is not connected to NATS and knows no
    other bridge of its mesh (counted ``disconnected``), fails its wait at once with
    ``MessageDropped`` (reason ``disconnected``)."""
    await nats_one.stop()  # the bridge's server is down
    g, bridge = bridged("east", nats_one.url)
    async with g:
        await until(lambda: bridge.statistics().failed_connects >= 1)
        receipt = g.connect().send(Message.new("svc.ask", b"?"))
        with pytest.raises(MessageDropped, match="bridge is not connected") as caught:
            await receipt.wait_until(3600)
        assert caught.value.reason == "disconnected"
        assert bridge.statistics().lost == {"disconnected": 1}


async def test_failure_replies_for_losses_under_load_keep_to_their_budget(
    nats_one: NatsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stream lost while the bridge is not connected gets failure replies up to the budget
    per second, and the rest of the stream is only counted lost (and ``failures_unsent``)."""
    monkeypatch.setattr(exporter_module, "FAILURE_BUDGET", 3)
    await nats_one.stop()
    g, bridge = bridged("east", nats_one.url)
    async with g:
        await until(lambda: bridge.statistics().failed_connects >= 1)
        pod = g.connect()
        receipts = [pod.send(Message.new("svc.ask", b"%d" % i)) for i in range(10)]
        stats = bridge.statistics()
        assert stats.lost == {"disconnected": 10}
        assert stats.failures_unsent == 7  # (ten sends take far less than the budget's second)
        with pytest.raises(MessageDropped, match="bridge is not connected"):
            await receipts[0].wait_until(3600)
        with pytest.raises(NoResponders):  # (over the budget: no failure reply, nobody took it)
            await receipts[-1].wait_until(3600)


async def test_a_request_the_bridge_cannot_send_asked_on_another_node_fails_there_at_once(
    nats_one: NatsServer,
) -> None:
    """A request asked on a node without a bridge, which its mesh's bridge cannot send (here:
    not connected), fails its wait there at once with ``MessageDropped`` instead of running
    out its timeout."""
    await nats_one.stop()
    g, bridge = bridged("east", nats_one.url)
    async with g, edge_of("east", g) as edge:
        await edge.wait_for(admits(g.node_uuid, "svc.>"), 10)  # (the export pattern)
        receipt = edge.connect().send(Message.new("svc.ask", b"?"))
        with pytest.raises(MessageDropped, match="bridge is not connected") as caught:
            await receipt.wait_until(20.0)
        assert caught.value.reason == "disconnected"
        assert bridge.statistics().lost == {"disconnected": 1}


async def test_a_request_the_bridge_cannot_send_is_still_answered_in_its_own_mesh(
    nats_one: NatsServer,
) -> None:
    """A request the bridge cannot send (here: not connected) that a pod of its own mesh
    admits is not failed by the bridge: that pod answers it (counted lost all the same)."""
    await nats_one.stop()
    g, bridge = bridged("east", nats_one.url)
    async with g:
        home = g.connect()
        home.on_type("svc.ask", lambda m: home.reply_to(m, Message.new("svc.r", b"home")))
        await until(lambda: "svc.ask" in bridge.statistics().mesh_wants)
        reply = await g.connect().send(Message.new("svc.ask", b"?")).wait_until(3600)
        assert reply.data == b"home"
        assert bridge.statistics().lost == {"disconnected": 1}


# -- a reply too large for NATS ------------------------------------------------------------------


def big_responder(g: Grav) -> None:
    pod = g.connect()
    pod.on_type("svc.big", lambda m: pod.reply_to(m, Message.new("svc.r", BIG)))


async def test_a_reply_too_large_for_nats_fails_the_askers_wait_at_once(
    small_nats: NatsServer,
) -> None:
    """A reply over the NATS server's max_payload, from a responder in another mesh, fails the
    asker's wait at once with ``MessageDropped`` (reason ``too_large``) saying the reply was
    too large, instead of leaving it to run out its timeout."""
    g1, b1 = bridged("east", small_nats.url, export=())
    g2, b2 = bridged("west", small_nats.url, export=())
    async with g1, g2:
        big_responder(g2)
        await exporting(b1)
        await exporting(b2)
        await until(lambda: "svc.big" in b1.statistics().remote_wants)
        receipt = g1.connect().send(Message.new("svc.big", b"?"))
        with pytest.raises(MessageDropped, match="the reply was too large for NATS") as caught:
            await receipt.wait_until(20.0)
        assert caught.value.reason == "too_large"
        assert f"max_payload of {MAX_PAYLOAD} bytes" in str(caught.value)
        assert "the bridge of mesh 'west' did not send reply" in str(caught.value)
        assert b2.statistics().lost == {"too_large": 1}
        assert b1.statistics().lost == {}


async def test_a_plain_nats_asker_gets_a_failure_for_a_reply_too_large_for_nats(
    small_nats: NatsServer,
) -> None:
    """A plain NATS client whose request gets a reply over max_payload receives at once an
    empty message whose ``Grav-H-gravpy-error`` header says ``too_large``."""
    g, bridge = bridged("west", small_nats.url, export=())
    nc = await nats.connect(small_nats.url)
    try:
        async with g:
            announced: asyncio.Queue[tuple[str, ...]] = asyncio.Queue()

            async def heard(m: Msg) -> None:
                announced.put_nowait(tuple(json.loads(m.data)["patterns"]))

            await nc.subscribe("_GRAV_BRIDGE.gravpy.interest", cb=heard)
            big_responder(g)
            await exporting(bridge)
            while "svc.big" not in await announced.get():  # (announced once subscribed)
                pass
            answer = await nc.request("gravpy.plain.svc.big", b"?", timeout=20)
    finally:
        await nc.close()
    assert answer.data == b""
    assert answer.headers is not None
    assert answer.headers["Grav-H-gravpy-error"] == "too_large"
    assert "the reply was too large for NATS" in unquote(
        answer.headers["Grav-H-gravpy-error-detail"]
    )
    assert bridge.statistics().lost == {"too_large": 1}


# -- NATS's no-responders status and the asker's own mesh --------------------------------------


async def unheard(server: NatsServer, subject: str) -> None:
    """Until no subscription on ``server`` matches ``subject``: a request published on it gets
    NATS's no-responders status. (The server has no event to wait on: re-ask.)"""
    while (await server.monitor(f"subsz?subs=1&test={subject}"))["total"]:
        pass


async def test_nats_no_responders_does_not_beat_an_answer_from_the_askers_own_mesh(
    nats_one: NatsServer,
) -> None:
    """A request exported with no NATS subscriber (an ``export`` pattern), sent as a pod of
    the asker's own mesh starts admitting its type (before the bridge's subscription for that
    pod reaches NATS), gets that pod's answer even though NATS's no-responders status came
    first: not ``NoResponders``."""
    g, bridge = bridged("east", nats_one.url)
    async with g:
        await exporting(bridge)
        await unheard(nats_one, "gravpy.east.svc.ask")  # (a bridge just made active still
        release = asyncio.Event()  # hears its own mesh's subjects a moment: export shadow)
        home, asker = g.connect(), g.connect()

        async def answer(m: Message) -> None:
            await release.wait()
            home.reply_to(m, Message.new("svc.r", b"home"))

        home.on_type("svc.ask", answer)  # the bridge subscribes for it a few loop turns later,
        asked = asker.send(Message.new("svc.ask", b"?"))  # after this is on its way to NATS
        probe = asker.send(Message.new("svc.none", b"?"))  # after it; nobody admits this one
        with pytest.raises(NoResponders):
            await probe.wait_until(3600)  # (so NATS's status for ``asked`` came back before)
        release.set()
        reply = await asked.wait_until(3600)
        assert reply.data == b"home"
        assert bridge.statistics().lost == {}


# -- reconnected while closing -----------------------------------------------------------------


class WatchedBridge(NatsBridge):
    """A bridge that tells the test when nats-py reported a reconnect to it, and its state
    just after."""

    def __init__(self, config: NatsBridgeConfig) -> None:
        super().__init__(config)
        self.reconnected = asyncio.Event()
        self.state_then = ""

    async def _on_reconnected(self) -> None:
        await super()._on_reconnected()
        self.state_then = self.state
        self.reconnected.set()


async def test_a_closing_bridge_stays_closing_when_nats_reconnects_meanwhile(
    nats_pair: list[NatsServer],
) -> None:
    """A bridge whose NATS server dies while it stops, and which nats-py reconnects to another
    server meanwhile, stays ``closing`` until it is ``closed``: it never says ``connected``."""
    config = NatsBridgeConfig(
        servers=tuple(s.url for s in nats_pair),
        announce_interval=0.2,
        ttl=1.0,
        connect_timeout=5.0,  # what ``stop`` waits for its last flush
    )
    bridge = WatchedBridge(config)
    g = Grav(transport=WebSocketTransport("127.0.0.1", 0), belongs_to="east", bridges=[bridge])
    async with g:
        await until(lambda: bridge.statistics().state == "connected")
        serving = [s for s in nats_pair if (await s.monitor("connz"))["num_connections"]]
        (server,) = serving
        assert server.proc is not None
        server.proc.send_signal(signal.SIGSTOP)  # it answers nothing: ``stop`` waits to flush
        stopping = asyncio.create_task(bridge.stop())
        await until(lambda: bridge.state == "closing")
        await server.stop()  # (killed): nats-py reconnects to the other server
        await bridge.reconnected.wait()
        assert bridge.state_then == "closing"
        await stopping
        assert bridge.statistics().state == "closed"

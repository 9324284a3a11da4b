"""A stopping bridge says ``closing`` then ``closed`` whatever nats-py does meanwhile, and what
nats-py held unwritten when its connection closed for good is counted lost. Against real
nats-servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import signal

import nats
import pytest
from nats.aio.msg import Msg

from gravpy import Grav, Message, Pod
from gravpy.bridge import NatsBridgeConfig, wire
from gravpy.bridge.nats import NatsBridge
from gravpy.bridge.subjects import SubjectMap
from gravpy.bridge.wire import _hpub, pending_messages
from tests._bus_helpers import until
from tests.bridge.nats_proc import NatsServer
from transports.websocket import WebSocketTransport

pytestmark = pytest.mark.timeout(60)

SIZE = 16 * 1024  # each message's data: a stream of them fills the socket's buffers quickly
HELD = 1024 * 1024  # what nats-py is to hold unwritten before the server is killed


def exporting(url: str, **options: float) -> tuple[Grav, NatsBridge]:
    """A node of mesh ``east`` whose bridge exports ``metrics.>`` and gives up reconnecting
    after one attempt (``options`` override the bridge's config)."""
    settings: dict[str, float] = {"reconnect_attempts": 1, "reconnect_wait": 0.1, **options}
    config = NatsBridgeConfig(
        servers=(url,), export=("metrics.>",), announce_interval=0.2, ttl=1.0, **settings
    )
    bridge = NatsBridge(config)
    g = Grav(transport=WebSocketTransport("127.0.0.1", 0), belongs_to="east", bridges=[bridge])
    return g, bridge


async def stream(pod: Pod, count: int, start: int = 0) -> None:
    """Publish ``count`` messages of ``SIZE`` bytes, their number first (8 digits)."""
    for i in range(start, start + count):
        await pod.publish(Message.new("metrics.cpu", b"%08d" % i + b"x" * (SIZE - 8)))


def nats_pending(bridge: NatsBridge) -> int:
    """The bytes nats-py holds unwritten for ``bridge`` (its public ``pending_data_size``)."""
    nc = bridge._nc
    return 0 if nc is None else nc.pending_data_size


def test_pending_messages_counts_the_headed_publishes_whatever_their_payloads_hold() -> None:
    """``pending_messages`` counts the ``HPUB`` commands among whole NATS commands, however they
    are split into buffers, and not the plain ``PUB`` (announcements), ``SUB`` or ``PING``
    commands, nor what a payload holds that looks like a command."""
    tricky = b"HPUB a b 1 2\r\nPUB c 3\r\n"
    batch = b"".join(
        b"".join(_hpub(("gravpy.east.t", "_INBOX.x.1.t", data, "m1", ""))) for data in (tricky, b"")
    )
    commands = [
        b"SUB _GRAV_BRIDGE.gravpy.interest 1\r\n",
        b"PUB _GRAV_BRIDGE.gravpy.interest %d\r\n%s\r\n" % (len(tricky), tricky),
        batch,
        b"PING\r\n",
        b"".join(_hpub(("gravpy.east.t", "", b"\r\n", "m2", "Grav-H-k: v\r\n"))),
    ]
    assert pending_messages(commands) == 3
    assert pending_messages([b"".join(commands)]) == 3
    assert pending_messages([]) == 0


class WatchedBridge(NatsBridge):
    """A bridge that tells the test when nats-py closed its connection for good."""

    def __init__(self, config: NatsBridgeConfig) -> None:
        super().__init__(config)
        self.nats_closed = asyncio.Event()

    async def _on_closed(self) -> None:
        await super()._on_closed()
        self.nats_closed.set()


async def test_a_stopping_bridge_stays_closing_when_nats_py_gives_up_meanwhile(
    nats_one: NatsServer,
) -> None:
    """A bridge whose only NATS server dies while it stops, and on which nats-py gives up
    reconnecting meanwhile, stays ``closing`` (it does not start connecting again) until it is
    ``closed``."""
    config = NatsBridgeConfig(
        servers=(nats_one.url,),
        announce_interval=0.2,
        ttl=1.0,
        reconnect_attempts=1,
        reconnect_wait=0.1,
        connect_timeout=5.0,  # what ``stop`` waits for its last flush: nats-py gives up before
    )
    bridge = WatchedBridge(config)
    g = Grav(transport=WebSocketTransport("127.0.0.1", 0), belongs_to="east", bridges=[bridge])
    async with g:
        await until(lambda: bridge.statistics().state == "connected")
        failed = bridge.statistics().failed_connects
        assert nats_one.proc is not None
        nats_one.proc.send_signal(signal.SIGSTOP)  # it answers nothing: ``stop`` waits to flush
        stopping = asyncio.create_task(bridge.stop())
        await until(lambda: bridge.statistics().state == "closing")
        await nats_one.stop()  # (killed): nats-py fails its one reconnect attempt, gives up
        await bridge.nats_closed.wait()
        await until(lambda: stopping.done() or bridge.statistics().state != "closing")
        left_closing = bridge.statistics().state  # ("closed" once ``stop`` returned)
        await stopping
        stats = bridge.statistics()
        assert (left_closing, stats.state) == ("closed", "closed")
        assert stats.failed_connects == failed  # (no connection attempted while stopping)


async def test_what_nats_py_held_unwritten_when_its_server_was_killed_mid_stream_is_counted(
    nats_one: NatsServer,
) -> None:
    """A stream into a NATS server that stops reading (SIGSTOP) and is then killed: the messages
    nats-py took while connected but still held unwritten when it gave up reconnecting are
    counted ``not_reconnected``, and none of them reached the subscriber."""
    g, bridge = exporting(nats_one.url)
    got: list[int] = []

    async def heard(m: Msg) -> None:
        got.append(int(m.data[:8]))

    async def ignored(_: Exception) -> None:
        pass  # (the watcher loses its server too)

    watcher = await nats.connect(nats_one.url, allow_reconnect=False, error_cb=ignored)
    await watcher.subscribe(SubjectMap("gravpy", "east").subject("metrics.cpu"), cb=heard)
    try:
        async with g:
            await until(lambda: bridge.statistics().exporter and bridge.statistics().ready)
            pod = g.connect()
            await stream(pod, 100)
            await until(lambda: len(got) == 100)
            assert nats_one.proc is not None
            nats_one.proc.send_signal(signal.SIGSTOP)
            sent = 100
            while nats_pending(bridge) < HELD:  # once the socket's buffers are full
                await stream(pod, 1, start=sent)
                sent += 1
                await until(lambda: bridge.statistics().queued == 0)  # (handed to nats-py)
            assert bridge.statistics().state == "connected"
            await nats_one.stop()  # (killed): nats-py fails its one reconnect attempt, gives up
            await until(lambda: "not_reconnected" in bridge.statistics().lost)
            stats = bridge.statistics()
    finally:
        await watcher.close()
    unwritten = stats.lost.get("not_reconnected", 0)
    assert stats.exported == sent
    assert stats.lost == {"not_reconnected": unwritten}
    assert 0 < unwritten <= HELD // SIZE  # (nats-py held at most that at the kill)
    assert len(got) + unwritten <= stats.exported  # (none of them was heard)


@pytest.mark.parametrize("fast", [True, False], ids=["internals", "public-api-only"])
async def test_what_nats_py_held_while_reconnecting_is_counted_when_the_bridge_stops(
    nats_one: NatsServer, fast: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Messages handed to nats-py while it reconnects, when the bridge stops before nats-py
    reconnects or gives up, are counted ``not_reconnected``; the bridge ends ``closed``. So
    too where this nats-py lacks the internals the wire fast path reads (``FAST`` off)."""
    monkeypatch.setattr(wire, "FAST", fast)
    g, bridge = exporting(nats_one.url, reconnect_attempts=60, reconnect_wait=0.5)
    async with g:
        await until(lambda: bridge.statistics().exporter and bridge.statistics().ready)
        await nats_one.stop()
        await until(lambda: bridge.statistics().state == "reconnecting")
        await stream(g.connect(), 5)
        await until(lambda: bridge.statistics().exported == 5)
        assert bridge.statistics().state == "reconnecting"  # (nats-py holds the 5)
        await bridge.stop()
        stats = bridge.statistics()
        assert (stats.state, stats.lost) == ("closed", {"not_reconnected": 5})

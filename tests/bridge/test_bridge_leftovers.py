"""Leftovers of the bridge's QA pass, against a real nats-server: a request too large for NATS
says so, the last error is kept with when it happened, a standby's export shadow is readable."""

from __future__ import annotations

import argparse
import asyncio
from contextlib import AsyncExitStack
from datetime import datetime

import pytest

from discovery.static import StaticDiscovery
from gravpy import Grav, Message, Pod
from gravpy.cli.monitoring import WARNING, verdict
from gravpy.errors import MessageDropped
from tests._bus_helpers import until
from tests.bridge.conftest import BIG, MAX_PAYLOAD
from tests.bridge.nats_proc import NatsServer
from tests.bridge.test_embedded import node
from tests.bridge.test_standby_export import ACTIVE, STANDBY, admits, bridged
from transports.websocket import WebSocketTransport

pytestmark = pytest.mark.timeout(60)


def responder(g: Grav, answer: bytes) -> Pod:
    pod = g.connect()
    pod.on_type("svc.big", lambda m: pod.reply_to(m, Message.new("svc.r", answer)))
    return pod


# -- a request too large for NATS ------------------------------------------------------------------


async def test_a_request_too_large_for_nats_fails_at_once_saying_so(small_nats: NatsServer) -> None:
    """A request over the NATS server's max_payload, which no pod of its own mesh admits, fails
    its asker's wait at once with an error saying it was too large for NATS, not with
    ``NoResponders`` (as if no pod anywhere admitted its type)."""
    g1, b1 = node("east", small_nats.url)
    g2, _ = node("west", small_nats.url)
    async with g1, g2:
        responder(g2, b"west")
        async with asyncio.timeout(10):
            await until(
                lambda: b1.statistics().exporter and "svc.big" in b1.statistics().remote_wants
            )
        receipt = g1.connect().send(Message.new("svc.big", BIG))
        with pytest.raises(MessageDropped, match="too large for NATS") as caught:
            await receipt.wait_until(3600)  # (at once: the test's hang guard is a minute)
        assert caught.value.reason == "too_large"
        assert f"over the server's max_payload of {MAX_PAYLOAD} bytes" in str(caught.value)
        assert b1.statistics().lost == {"too_large": 1}


async def test_a_request_too_large_for_nats_asked_on_another_node_fails_there_at_once(
    small_nats: NatsServer,
) -> None:
    """A request over NATS's max_payload asked on a node without a bridge (it travels to the
    bridging node of its mesh) fails its wait with the same error, instead of waiting out its
    timeout."""
    async with AsyncExitStack() as stack:
        g1, b1 = node("east", small_nats.url)
        g2, _ = node("west", small_nats.url)
        await stack.enter_async_context(g1)
        await stack.enter_async_context(g2)
        edge = await stack.enter_async_context(
            Grav(
                transport=WebSocketTransport("127.0.0.1", 0),
                belongs_to="east",
                discovery=[StaticDiscovery(g1.endpoints())],
            )
        )
        responder(g2, b"west")
        async with asyncio.timeout(10):
            await until(
                lambda: b1.statistics().exporter and "svc.big" in b1.statistics().remote_wants
            )
        await edge.wait_for(admits(g1.node_uuid, "svc.big"), 10)
        receipt = edge.connect().send(Message.new("svc.big", BIG))
        with pytest.raises(MessageDropped, match="too large for NATS"):
            await receipt.wait_until(10.0)
        assert b1.statistics().lost == {"too_large": 1}


async def test_a_request_too_large_for_nats_is_still_answered_in_its_own_mesh(
    small_nats: NatsServer,
) -> None:
    """A request over NATS's max_payload that a pod of its own mesh admits is not failed by the
    bridge: that pod answers it (the bridge counts it ``too_large``, as before)."""
    g1, b1 = node("east", small_nats.url)
    g2, _ = node("west", small_nats.url)
    async with g1, g2:
        responder(g2, b"west")
        responder(g1, b"east")
        async with asyncio.timeout(10):
            await until(
                lambda: b1.statistics().exporter and "svc.big" in b1.statistics().remote_wants
            )
            await until(lambda: "svc.big" in b1.statistics().mesh_wants)
        reply = await g1.connect().send(Message.new("svc.big", BIG)).wait_until(10.0)
        assert reply.data == b"east"
        assert b1.statistics().lost == {"too_large": 1}


# -- the last error --------------------------------------------------------------------------------


async def test_the_last_error_is_kept_after_reconnecting_with_when_it_happened(
    nats_one: NatsServer,
) -> None:
    """After its server went away and came back, a connected bridge still shows why it last
    failed, with when (``last_error_at``), before the time it is connected since
    (``connected_since``): a past error, told apart from a current one; ``/v1/node`` shows both
    times in ISO 8601."""
    g, bridge = node("east", nats_one.url)
    async with g:
        async with asyncio.timeout(20):
            await until(lambda: bridge.statistics().state == "connected")
        first = bridge.statistics()
        assert (first.last_error, first.last_error_at) == ("", None)
        assert first.connected_since is not None
        await nats_one.stop()
        async with asyncio.timeout(20):
            await until(lambda: bridge.statistics().state != "connected")
            await until(lambda: bool(bridge.statistics().last_error))
        down = bridge.statistics()
        assert down.connected_since is None
        assert down.last_error_at is not None
        assert down.last_error_at >= first.connected_since
        await nats_one.start()
        async with asyncio.timeout(30):
            await until(lambda: bridge.statistics().state == "connected")
        up = bridge.statistics()
        assert up.last_error  # kept: why it last failed
        assert up.last_error_at is not None
        assert up.connected_since is not None
        assert up.last_error_at <= up.connected_since  # from before this connection: past
        shown = up.as_json()
        assert shown["last_error"] == up.last_error
        assert datetime.fromisoformat(str(shown["last_error_at"])).timestamp() == pytest.approx(
            up.last_error_at
        )
        assert datetime.fromisoformat(str(shown["connected_since"])).timestamp() == pytest.approx(
            up.connected_since
        )


def check_args(bridge_down: str = "warning") -> argparse.Namespace:
    return argparse.Namespace(
        warn_peers=0, crit_peers=0, warn_drops=None, crit_drops=None, bridge_down=bridge_down
    )


def test_gravctl_check_names_a_down_bridges_last_error_with_its_age() -> None:
    """gravctl check names a bridge that is not connected with its last error and how long ago
    that was by the node's clock, so an error from an earlier outage reads as such."""
    node_doc = {
        "state": "serving",
        "started_at": "2025-01-01T10:00:00+00:00",
        "uptime_seconds": 7_230.0,  # the node's clock says 12:00:30
        "peers": [],
        "bridges": [
            {
                "state": "reconnecting",
                "servers": ["nats://127.0.0.1:4222"],
                "last_error": "nats: unexpected EOF",
                "last_error_at": "2025-01-01T12:00:26+00:00",
                "lost": {},
            },
            {
                "state": "connecting",
                "servers": ["nats://127.0.0.2:4222"],
                "last_error": "Authorization Violation",
                "last_error_at": "2025-01-01T10:00:30+00:00",
                "lost": {},
            },
        ],
    }
    code, summary = verdict(200, node_doc, check_args())
    assert code == WARNING
    assert (
        "bridge nats://127.0.0.1:4222 reconnecting (last error 4 s ago: nats: unexpected EOF)"
        in summary
    )
    assert (
        "bridge nats://127.0.0.2:4222 connecting (last error 2 h ago: Authorization Violation)"
        in summary
    )


# -- a standby's export shadow ---------------------------------------------------------------------


async def test_a_standby_reports_the_exports_it_heard_back_from_nats(nats_one: NatsServer) -> None:
    """A standby bridge holds what its active bridge exports until NATS echoes it, and reports
    how many it heard back (``export_struck``, in its statistics and ``/v1/node``)."""
    async with AsyncExitStack() as stack:
        active = await stack.enter_async_context(bridged(ACTIVE, nats_one.url, ("sensor.>",), []))
        standby = await stack.enter_async_context(
            bridged(STANDBY, nats_one.url, ("sensor.>",), active.endpoints())
        )
        edge = await stack.enter_async_context(
            Grav(
                transport=WebSocketTransport("127.0.0.1", 0),
                belongs_to="lan1",
                discovery=[StaticDiscovery([*active.endpoints(), *standby.endpoints()])],
            )
        )

        def elected() -> bool:
            views = [g.bridges[0].statistics() for g in (active, standby)]
            return all(v.ready for v in views) and [v.exporter for v in views] == [True, False]

        async with asyncio.timeout(10):
            await until(elected)
        await edge.wait_for(admits(ACTIVE, "sensor.>"), 10)
        await edge.wait_for(admits(STANDBY, "sensor.>"), 10)
        sender = edge.connect()
        for i in range(20):
            await sender.publish(Message.new("sensor.t", str(i)))
        stats = standby.bridges[0].statistics
        async with asyncio.timeout(10):
            await until(lambda: stats().export_struck == 20)
        assert (stats().export_held, stats().export_recovered, stats().export_expired) == (0, 0, 0)
        assert stats().as_json()["export_struck"] == 20

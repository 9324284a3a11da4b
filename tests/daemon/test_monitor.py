"""Tests for gravpy.daemon.monitor and logging, in process (no gravd subprocess)."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest
import structlog
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from gravpy import Grav, Message
from gravpy.daemon.config import Address, DaemonConfig
from gravpy.daemon.logging import configure_logging, resolve_format
from gravpy.daemon.monitor import METRIC_NAMES, Monitor, NodeStatus
from gravpy.testing import MemoryNetwork, MemoryTransport


@pytest.fixture
async def grav() -> AsyncIterator[Grav]:
    async with Grav() as g:
        yield g


async def _get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.text()


async def test_healthz_turns_503_when_draining(grav: Grav) -> None:
    """/healthz answers 200 while serving and 503 once the node starts draining."""
    status = NodeStatus(grav, DaemonConfig())
    monitor = Monitor(status, Address("127.0.0.1", 0))
    address = await monitor.start()
    try:
        assert (await _get(f"http://{address}/healthz"))[0] == 200
        status.set_draining()
        code, body = await _get(f"http://{address}/healthz")
        assert code == 503
        assert json.loads(body)["status"] == "draining"
    finally:
        await monitor.stop()


async def test_metrics_reflect_the_bus_counters_at_scrape_time(grav: Grav) -> None:
    """Messages sent between local pods show in gravd_messages_*, read when scraped."""
    monitor = Monitor(NodeStatus(grav, DaemonConfig()), Address("127.0.0.1", 0))
    received: list[Message] = []
    grav.connect().on(received.append)
    sender = grav.connect()
    for i in range(3):
        sender.send(Message.new("local.x", str(i)))
    address = await monitor.start()
    try:
        _, text = await _get(f"http://{address}/metrics")
    finally:
        await monitor.stop()
    samples = {
        s.name: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if not s.labels
    }
    assert samples["gravd_local_messages_sent_total"] == 3
    assert samples["gravd_local_messages_delivered_total"] == 3
    assert samples["gravd_local_pods"] == 2
    assert samples["process_cpu_seconds_total"] > 0  # prometheus-client's standard collector
    families = {family.name for family in text_string_to_metric_families(text)}
    assert {m.removesuffix("_total") for m in METRIC_NAMES} <= families
    assert not any(name.startswith("gravd_process") for name in families)


async def test_each_monitor_has_its_own_registry() -> None:
    """Two nodes in one process never share metrics, and the global registry stays untouched."""
    async with Grav() as one, Grav() as two:
        first = Monitor(NodeStatus(one, DaemonConfig()), Address("127.0.0.1", 0))
        second = Monitor(NodeStatus(two, DaemonConfig()), Address("127.0.0.1", 0))
        assert first.registry is not second.registry
        assert first.registry is not REGISTRY
        assert REGISTRY.get_sample_value("gravd_uptime_seconds") is None
        info = first.registry.get_sample_value(
            "gravd_info", {"node": one.node_uuid, "version": "0.1.0", "mesh": "*"}
        )
        assert info == 1
        assert (
            second.registry.get_sample_value(
                "gravd_info", {"node": one.node_uuid, "version": "0.1.0", "mesh": "*"}
            )
            is None
        )


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    structlog.reset_defaults()
    root.handlers[:] = handlers
    root.setLevel(level)


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_auto_format_is_console_on_a_tty_and_json_elsewhere() -> None:
    """'auto' resolves to console on a terminal and JSON on anything else."""
    assert resolve_format("auto", _Tty()) == "console"
    assert resolve_format("auto", io.StringIO()) == "json"
    assert resolve_format("console", io.StringIO()) == "console"


@pytest.mark.usefixtures("restore_logging")
def test_json_logging_writes_one_object_per_line_for_structlog_and_stdlib() -> None:
    """In JSON mode, structlog events and stdlib records are JSON lines with event and level."""
    out = io.StringIO()
    assert configure_logging("auto", "info", out) == "json"
    structlog.get_logger("t").info("peer_connected", node="n1", peer="p1")
    structlog.get_logger("t").debug("hidden_below_level")
    logging.getLogger("some.library").warning("disk %s", "full")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert lines[0]["event"] == "peer_connected"
    assert (lines[0]["node"], lines[0]["peer"], lines[0]["level"]) == ("n1", "p1", "info")
    assert lines[1]["event"] == "disk full"
    assert lines[1]["level"] == "warning"
    assert len(lines) == 2


async def test_readyz_is_503_until_ready_and_again_while_draining(grav: Grav) -> None:
    """/readyz answers 503 "starting" before gravd marks the node ready, 200 then, 503 draining."""
    status = NodeStatus(grav, DaemonConfig())
    monitor = Monitor(status, Address("127.0.0.1", 0))
    address = await monitor.start()
    try:
        code, body = await _get(f"http://{address}/readyz")
        assert (code, json.loads(body)["status"]) == (503, "starting")
        status.ready = True
        assert (await _get(f"http://{address}/readyz"))[0] == 200
        status.set_draining()
        code, body = await _get(f"http://{address}/readyz")
        assert (code, json.loads(body)["status"]) == (503, "draining")
    finally:
        await monitor.stop()


async def test_metrics_show_link_bytes_drops_by_reason_and_histograms() -> None:
    """With an app attached, /metrics has bytes by role, drops by role and reason, and the
    request and handler histograms of the node's own pods."""
    net = MemoryNetwork()
    async with Grav(transport=MemoryTransport(net), timings=True) as node:
        responder = node.connect()
        responder.on_type("ask", lambda m: responder.reply_to(m, Message.new("answer", b"")))
        await node.connect().send(Message.new("ask", b"")).wait_until(2)
        async with Grav(transport=MemoryTransport(net), role="leaf", attach_to=node.endpoints()[0]):
            monitor = Monitor(NodeStatus(node, DaemonConfig()), Address("127.0.0.1", 0))
            address = await monitor.start()
            try:
                _, text = await _get(f"http://{address}/metrics")
            finally:
                await monitor.stop()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples["gravd_link_bytes_sent_total", (("role", "leaf"),)] > 0
    assert samples["gravd_link_bytes_received_total", (("role", "leaf"),)] > 0
    assert samples["gravd_link_bytes_sent_total", (("role", "peer"),)] == 0
    reasons = {
        dict(labels)["reason"]
        for name, labels in samples
        if name == "gravd_link_messages_dropped_total"
    }
    assert reasons == {
        "queue_full",
        "queue_bytes",
        "link_closed",
        "remote_withdrew",
        "too_large",
        "permission_denied",
        "arrived_closed",
    }
    assert samples["gravd_local_request_seconds_count", ()] == 1
    assert samples["gravd_local_handler_seconds_count", ()] == 1
    assert samples["gravd_local_handler_seconds_bucket", (("le", "+Inf"),)] == 1

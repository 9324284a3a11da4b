"""What a remote, or the configuration, can make gravd's monitoring and logs show: never a
label per connection, never a credential, never a line per connection without a limit."""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
import websockets
from prometheus_client.parser import text_string_to_metric_families

import gravpy
from gravpy import Message
from gravpy.daemon.log_limits import RefusalLogLimit
from gravpy.daemon.metrics import METRIC_NAMES
from gravpy.proto.codec import encode_frame
from gravpy.proto.frames import Close, Reject
from gravpy.testing.gravd import Gravd, running_gravd
from tests.daemon.monitor_kit import metric, served_monitor

SECRET = "s3cret-pw"


def _samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    return [
        (sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    ]


async def _say_first(node: Gravd, frame: bytes) -> None:
    """Open a WebSocket to ``node``, send ``frame`` before any HELLO, wait until gravd closes."""
    async with websockets.connect(node.endpoint) as ws:
        await ws.send(frame)
        with pytest.raises(websockets.ConnectionClosed):
            await ws.recv()


async def test_reject_reasons_a_remote_invents_are_counted_as_other_not_as_labels() -> None:
    """Three connections that each send a REJECT with a reason of their own making, before any
    HELLO, are counted as three refusals under reason "other", in /metrics and in /v1/node."""
    async with running_gravd() as node:
        for i in range(3):
            await _say_first(node, encode_frame(Reject(f"made-up-{i}", "")))
        doc = await node.wait_http(lambda d: sum(d["links"]["rejected"].values()) == 3)
        _, text = await node.get("/metrics")
    assert doc["links"]["rejected"] == {"other": 3}
    assert _samples(text, "gravd_handshakes_rejected_total") == [({"reason": "other"}, 3.0)]


@pytest.fixture
def unreachable_port() -> Iterator[int]:
    """A 127.0.0.1 port bound by the test and not listening: connecting to it is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


async def test_nats_url_credentials_are_not_shown_in_metrics_node_document_or_gravd_info(
    unreachable_port: int,
) -> None:
    """With --nats nats://user:password@host, the password appears neither in the
    gravd_bridge_* labels, nor in /v1/node, nor in the gravd.info answer any app can ask for;
    the server is shown with its credentials as ***."""
    url = f"nats://alice:{SECRET}@127.0.0.1:{unreachable_port}"
    shown = f"nats://***@127.0.0.1:{unreachable_port}"
    async with running_gravd("--nats", url) as node, gravpy.connect(node.endpoint) as app:
        _, text = await node.get("/metrics")
        _, body = await node.get("/v1/node")
        await app.wait_for(lambda links: any("gravd.info" in p.interests for p in links))
        info = await app.connect().send(Message.new("gravd.info", b"")).wait_until(10)
    assert SECRET not in text
    assert {labels["server"] for labels, _ in _samples(text, "gravd_bridge_state")} == {shown}
    assert SECRET not in body
    assert json.loads(body)["bridges"][0]["servers"] == [shown]
    assert SECRET not in info.text()
    assert json.loads(info.text())["bridges"][0]["servers"] == [shown]


async def test_closes_before_hello_write_a_few_link_closed_lines_not_one_each() -> None:
    """Twenty connections that each send CLOSE, with a reason of their own, before any HELLO
    make gravd write at most five link_closed lines (the rest are dropped, counted in the next
    line let through); a program attaching afterwards is still logged."""
    async with running_gravd() as node:
        for i in range(20):
            await _say_first(node, encode_frame(Close(f"made-up-{i}", "x" * 1000)))
        async with gravpy.connect(node.endpoint):
            await node.process.wait_event("peer_connected")  # every earlier line was read
        closed = [
            e
            for e in node.process.events()
            if e.get("event") == "link_closed" and str(e.get("reason")).startswith("made-up-")
        ]
    assert 1 <= len(closed) <= 5


def _closed(reason: str) -> logging.LogRecord:
    rec = logging.LogRecord("gravpy.mesh.hub", logging.INFO, __file__, 1, "link_closed", None, None)
    rec.reason = reason
    return rec


def test_closed_log_limit_passes_a_burst_per_known_reason_and_one_for_all_others() -> None:
    """Five link_closed lines pass per known reason and five for every unknown reason together;
    after the period the next one passes carrying how many were dropped; other events pass."""
    clock = [100.0]
    limit = RefusalLogLimit(burst=5, period=10.0, clock=lambda: clock[0])
    invented = [limit.filter(_closed(f"made-up-{i}")) for i in range(50)]
    normal = [limit.filter(_closed("normal")) for _ in range(7)]
    others = logging.LogRecord(
        "gravpy.mesh.hub", logging.INFO, __file__, 1, "peer_connected", (), None
    )
    assert (invented.count(True), normal.count(True)) == (5, 5)
    assert all(limit.filter(others) for _ in range(20))
    clock[0] += 10.0
    late = _closed("made-up-again")
    assert limit.filter(late)
    assert getattr(late, "suppressed", None) == 45


async def test_every_metric_gravd_exposes_is_named_in_operations_md(unreachable_port: int) -> None:
    """Each gravd_* series a gravd with a NATS bridge exposes is in docs/operations.md under the
    name a query uses (``_total`` for a counter), and the code's list of them holds every one."""
    operations = (Path(__file__).parents[2] / "docs" / "operations.md").read_text()
    async with running_gravd("--nats", f"nats://127.0.0.1:{unreachable_port}") as node:
        _, text = await node.get("/metrics")
    exposed = {
        family.name + ("_total" if family.type == "counter" else "")
        for family in text_string_to_metric_families(text)
        if family.name.startswith("gravd_")
    }
    assert {name for name in exposed if f"`{name}`" not in operations} == set()
    local = {name for name in exposed if not name.startswith("gravd_bridge_")}
    assert local - set(METRIC_NAMES) == set()


async def test_messages_no_receiver_took_are_counted_in_metrics_and_the_node_document() -> None:
    """What the node's own pods send that nothing anywhere admits is counted: in /metrics
    (gravd_local_messages_undelivered_total) and /v1/node (undelivered_from_pods)."""
    async with served_monitor() as served:
        before = served.grav.bus.statistics().undelivered  # (its own start sent some)
        sender = served.grav.connect()
        for _ in range(3):
            assert sender.send(Message.new("nobody.wants.this")).no_responders
        undelivered = await metric(served.base, "gravd_local_messages_undelivered_total")
        async with (
            aiohttp.ClientSession() as session,
            session.get(served.base + "/v1/node") as response,
        ):
            doc = await response.json()
    assert undelivered == before + 3
    assert doc["messages"]["undelivered_from_pods"] == before + 3

"""End-to-end: a real gravd lists leaves by app name, counts bytes and drops, keeps closed links."""

from __future__ import annotations

import asyncio
import json

from prometheus_client.parser import text_string_to_metric_families

import gravpy
from gravpy import Message
from gravpy.testing.gravd import GRAVCTL, Process, gravctl, running_gravd

N = 200
LEAF = (("role", "leaf"),)


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): float(s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_gravd_lists_a_leaf_by_its_app_name_with_bytes() -> None:
    """An app attached with name='billing' appears under that name in /v1/node (with bytes and
    drops by reason) and in gravctl peers."""
    async with running_gravd() as node, gravpy.connect(node.endpoint, name="billing"):
        doc = await node.wait_http(lambda d: any(x["name"] == "billing" for x in d["leaves"]))
        table = await gravctl("peers", "--monitor", node.monitor)
    (leaf,) = doc["leaves"]
    assert leaf["bytes_in"] > 0
    assert leaf["bytes_out"] > 0
    assert set(leaf["drops"]) >= {"queue_full", "queue_bytes", "link_closed", "too_large"}
    assert table.code == 0, table.stderr
    assert any(row.split()[2] == "billing" for row in table.stdout.splitlines()[2:]), table.stdout


async def test_leaf_totals_survive_the_leaf_disconnecting() -> None:
    """A leaf sends 200 messages through gravd and disconnects: /metrics' leaf counters still
    hold them, and no leaf counter went down."""
    async with running_gravd() as node:
        async with gravpy.connect(node.endpoint, name="sink") as sink:
            got: asyncio.Queue[Message] = asyncio.Queue()
            sink.connect().on_type("flow.*", got.put_nowait)
            async with gravpy.connect(node.endpoint, name="source") as source:
                await source.wait_for(lambda links: any("flow.*" in p.interests for p in links))
                pod = source.connect()
                for i in range(N):
                    pod.send(Message.new("flow.x", str(i)))
                async with asyncio.timeout(10):
                    for _ in range(N):
                        await got.get()
                _, live_text = await node.get("/metrics")
            await node.wait_http(lambda d: [x["name"] for x in d["leaves"]] == ["sink"])
            _, closed_text = await node.get("/metrics")
        doc = json.loads((await node.get("/v1/node"))[1])
    live, closed = _samples(live_text), _samples(closed_text)
    leaf = LEAF
    assert live["gravd_link_messages_received_total", leaf] >= N
    assert closed["gravd_link_messages_received_total", leaf] >= N
    for name in (
        "gravd_link_messages_received_total",
        "gravd_link_messages_sent_total",
        "gravd_link_bytes_received_total",
        "gravd_link_bytes_sent_total",
    ):
        assert closed[name, leaf] >= live[name, leaf], name
    assert closed["gravd_link_bytes_received_total", leaf] >= N * len("flow.x")
    assert doc["messages"]["by_role"]["leaf"]["received"] >= N


async def test_gravd_times_its_own_handler() -> None:
    """A request answered by gravd's own gravd.info responder shows in its handler histogram."""
    async with running_gravd() as node, gravpy.connect(node.endpoint) as app:
        reply = await app.connect().send(Message.new("gravd.info", b"")).wait_until(5)
        _, text = await node.get("/metrics")
    assert json.loads(reply.data)["uuid"] == node.uuid
    samples = _samples(text)
    assert samples["gravd_local_handler_seconds_count", ()] >= 1
    assert samples["gravd_local_handler_seconds_bucket", (("le", "+Inf"),)] >= 1
    assert ("gravd_local_request_seconds_count", ()) in samples


async def test_gravctl_attaches_under_its_subcommand_name() -> None:
    """A running ``gravctl sub`` is listed by its node as the leaf named 'gravctl sub'."""
    async with running_gravd() as node:
        sub = await Process.start([*GRAVCTL, "--url", node.endpoint, "sub", "demo.>"])
        try:
            doc = await node.wait_http(lambda d: len(d["leaves"]) == 1)
        finally:
            await sub.close()
    assert doc["leaves"][0]["name"] == "gravctl sub"


async def test_the_blocking_api_passes_the_app_name_too() -> None:
    """gravpy.sync.connect(url, name='batch') attaches under that name."""
    from gravpy import sync

    async with running_gravd() as node:
        app = await asyncio.to_thread(sync.connect, node.endpoint, name="batch")
        try:
            doc = await node.wait_http(lambda d: len(d["leaves"]) == 1)
        finally:
            await asyncio.to_thread(app.close)
    assert doc["leaves"][0]["name"] == "batch"


async def test_gravd_times_the_requests_it_relays_between_leaves() -> None:
    """Three requests from one app answered by another through gravd are three round trips in
    gravd_relayed_request_seconds."""
    async with (
        running_gravd() as node,
        gravpy.connect(node.endpoint, name="svc") as service,
        gravpy.connect(node.endpoint, name="client") as client,
    ):
        responder = service.connect()
        responder.on_type("svc.ask", lambda m: responder.reply_to(m, Message.new("ans", b"")))
        await client.wait_for(lambda links: any("svc.ask" in p.interests for p in links))
        asker = client.connect()
        for _ in range(3):
            await asker.send(Message.new("svc.ask", b"")).wait_until(5)
        _, text = await node.get("/metrics")
    samples = _samples(text)
    assert samples["gravd_relayed_request_seconds_count", ()] == 3
    assert samples["gravd_relayed_request_seconds_sum", ()] > 0

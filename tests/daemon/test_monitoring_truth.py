"""End-to-end: gravd's monitoring counts what passes through it, pages leaves, reports readiness."""

from __future__ import annotations

import asyncio
import json

from prometheus_client.parser import text_string_to_metric_families

import gravpy
from gravpy import Message
from gravpy.testing.gravd import running_gravd


def _value(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    raise AssertionError(f"no sample {name}{labels}")


async def test_metrics_count_traffic_between_leaves_not_just_gravds_own_pod() -> None:
    """100 messages from one app to another through gravd show as leaf traffic, not as local."""
    async with (
        running_gravd() as node,
        gravpy.connect(node.endpoint) as sender,
        gravpy.connect(node.endpoint) as receiver,
    ):
        got: list[Message] = []
        done = asyncio.Event()

        def take(msg: Message) -> None:
            got.append(msg)
            if len(got) == 100:
                done.set()

        receiver.connect().on_type("flow.*", take)
        await sender.wait_for(lambda links: any("flow.*" in p.interests for p in links))
        pod = sender.connect()
        for i in range(100):
            pod.send(Message.new("flow.x", str(i)))
        await done.wait()
        _, text = await node.get("/metrics")
    assert _value(text, "gravd_link_messages_received_total", role="leaf") >= 100
    assert _value(text, "gravd_link_messages_sent_total", role="leaf") >= 100
    assert _value(text, "gravd_local_messages_sent_total") < 100  # gravd's own events, not these
    assert _value(text, "gravd_links", role="leaf") == 2


async def test_node_document_pages_leaves_and_readyz_is_200() -> None:
    """/v1/node?leaves_limit=1 lists one leaf of two with the total; a bad limit, or a
    parameter it does not take (a misspelt one), is a 400 that names it."""
    async with (
        running_gravd() as node,
        gravpy.connect(node.endpoint),
        gravpy.connect(node.endpoint),
    ):
        await node.wait_http(lambda doc: doc["leaves_page"]["total"] == 2)
        status, body = await node.get("/v1/node?leaves_limit=1&leaves_offset=1")
        bad, _ = await node.get("/v1/node?leaves_limit=0")
        misspelt, why = await node.get("/v1/node?leaves_limt=1")
        ready, _ = await node.get("/readyz")
    doc = json.loads(body)
    assert status == 200
    assert len(doc["leaves"]) == 1
    assert doc["leaves_page"] == {"offset": 1, "limit": 1, "total": 2}
    assert doc["leaves"][0]["remote_address"].startswith("127.0.0.1:")
    assert bad == 400
    assert (misspelt, json.loads(why)["error"]) == (
        400,
        "unknown parameter 'leaves_limt': /v1/node takes leaves_offset, leaves_limit",
    )
    assert ready == 200

"""Trace context across a two-node mesh, recorded by the OpenTelemetry SDK's in-memory exporter."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from discovery.static import StaticDiscovery
from gravpy import Message

from .conftest import NodeFactory, linked_to

_EXPORTER = InMemorySpanExporter()
_PROVIDER = TracerProvider()
_PROVIDER.add_span_processor(SimpleSpanProcessor(_EXPORTER))


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """The SDK's in-memory exporter, installed as the global tracer provider, emptied per test."""
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        trace.set_tracer_provider(_PROVIDER)
    _EXPORTER.clear()
    yield _EXPORTER
    _EXPORTER.clear()


def by_name(finished: tuple[ReadableSpan, ...], name: str) -> ReadableSpan:
    matching = [s for s in finished if s.name == name]
    assert len(matching) == 1, [s.name for s in finished]
    return matching[0]


async def test_one_trace_runs_from_the_sender_through_the_handler_and_back(
    node: NodeFactory, spans: InMemorySpanExporter
) -> None:
    """A request sent inside a span gives one trace: send (producer) -> process (consumer) ->
    the reply's send, each the parent of the next, and the reply carries the trace back."""
    a = await node()
    b = await node(discovery=[StaticDiscovery(a.endpoints())])
    responder = b.connect()
    responder.on_type(
        "svc.trace", lambda m: responder.reply_to(m, Message.new("svc.trace.reply", b"ok"))
    )
    await a.wait_for(linked_to(b, interest="svc.trace"), timeout=5)
    asker = a.connect()
    tracer = trace.get_tracer("test")
    with tracer.start_as_current_span("client") as client:
        reply = await asker.send(Message.new("svc.trace", b"?")).wait_until(5)
    trace_id = client.get_span_context().trace_id
    assert reply.headers is not None
    assert f"{trace_id:032x}" in reply.headers["traceparent"]
    finished = spans.get_finished_spans()
    send = by_name(finished, "send svc.trace")
    process = by_name(finished, "process svc.trace")
    answer = by_name(finished, "send svc.trace.reply")
    assert send.kind is trace.SpanKind.PRODUCER
    assert process.kind is trace.SpanKind.CONSUMER
    assert {s.context.trace_id for s in (send, process, answer)} == {trace_id}
    assert send.parent is not None
    assert send.parent.span_id == client.get_span_context().span_id
    assert process.parent is not None
    assert process.parent.span_id == send.context.span_id
    assert answer.parent is not None
    assert answer.parent.span_id == process.context.span_id
    assert process.attributes is not None
    assert process.attributes["messaging.system"] == "gravpy"
    assert process.attributes["messaging.destination.name"] == "svc.trace"


async def test_no_span_active_means_no_trace_headers(
    node: NodeFactory, spans: InMemorySpanExporter
) -> None:
    """Without an active span nothing is injected and no span is recorded."""
    a = await node()
    got: asyncio.Queue[Message] = asyncio.Queue()
    receiver = a.connect()
    receiver.on_type("plain.x", got.put_nowait)
    a.connect().send(Message.new("plain.x", b"."))
    async with asyncio.timeout(5):
        msg = await got.get()
    assert msg.headers is None
    assert spans.get_finished_spans() == ()

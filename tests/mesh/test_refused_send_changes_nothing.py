"""A send refused because its uuid was seen here leaves the message as it was: on a node with a
mesh (in memory), the object a pod here received, or a reply another pod here holds, is the very
object a refused send was handed."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from gravpy import Grav, Message
from gravpy.errors import UsageError
from gravpy.testing import MemoryNetwork, MemoryTransport
from tests._bus_helpers import GUARD, recorder, settle

from .test_tracing import spans as spans  # (the SDK's in-memory exporter, per test)


@pytest.fixture
async def node() -> AsyncIterator[Grav]:
    """One node with a mesh (a memory transport): it keeps the ids it saw."""
    async with Grav(transport=MemoryTransport(MemoryNetwork())) as g:
        yield g


async def test_a_refused_reuse_of_a_reply_leaves_the_reply_its_asker_holds(node: Grav) -> None:
    """A responder that answers a second request with the reply it gave the first is refused;
    the asker here, which holds that very reply, still sees it answer the first request."""
    responder = node.connect()
    canned = Message.new("qa.answer", "canned")
    refused: list[UsageError] = []

    def answer(request: Message) -> None:
        try:
            responder.reply_to(request, canned)
        except UsageError as exc:
            refused.append(exc)

    responder.on_type("qa.ask", answer)
    asker = node.connect()
    request = Message.new("qa.ask")
    first = await asker.send(request).wait_until(GUARD)
    asker.send(Message.new("qa.ask"))
    await settle(node)
    assert len(refused) == 1
    assert first is canned  # (delivered here: the same object)
    assert (first.reply_to, first.parent_id) == (request.uuid, request.uuid)


async def test_a_refused_send_on_under_a_span_leaves_the_received_message_untraced(
    node: Grav, spans: InMemorySpanExporter
) -> None:
    """A pod that sends on a message it received, inside a span, is refused, and the message
    its sibling got (the same object) has no trace context written into it."""
    assert isinstance(trace.get_tracer_provider(), TracerProvider)
    forwarder = node.connect()
    got = recorder(forwarder)
    forwarder.filter_type("qa.on")
    sibling = node.connect()
    beside = recorder(sibling)
    sibling.filter_type("qa.on")
    node.connect().send(Message.new("qa.on", "x"))
    await settle(node)
    spans.clear()
    with trace.get_tracer("test").start_as_current_span("client"), pytest.raises(UsageError):
        forwarder.send(got[0])
    assert beside[0] is got[0]
    assert beside[0].headers is None


async def test_a_refused_send_under_a_span_records_its_send_span_as_failed(
    node: Grav, spans: InMemorySpanExporter
) -> None:
    """The send span of a refused resend says so: error status and the UsageError recorded;
    the first send's span is an ordinary one."""
    pod = node.connect()
    msg = Message.new("qa.twice", "x")
    tracer = trace.get_tracer("test")
    with tracer.start_as_current_span("client"):
        pod.send(msg)
        with pytest.raises(UsageError, match="already sent or received"):
            pod.send(msg)
    sends = [s for s in spans.get_finished_spans() if s.name == "send qa.twice"]
    assert [s.status.status_code for s in sends] == [StatusCode.UNSET, StatusCode.ERROR]
    [event] = sends[1].events
    assert event.name == "exception"
    assert event.attributes is not None
    assert event.attributes["exception.type"] == "gravpy.errors.UsageError"
    assert sends[0].events == ()

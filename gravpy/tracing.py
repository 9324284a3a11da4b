"""Trace context across the bus: W3C ``traceparent``/``tracestate`` in message headers.

Theory of operation
-------------------
With ``opentelemetry-api`` installed (``pip install gravpy[otel]``) and a span active when a pod
sends, ``send_in_span`` runs the send inside a PRODUCER span ``send <type>``, a child of the
active span, and writes its context into the message's headers with the globally configured
propagator (W3C trace context by default); a send refused leaves that span with its error. A pod runs its handler for a message carrying a ``traceparent`` inside a
CONSUMER span ``process <type>`` whose parent is that context (``call_in_span``,
``await_in_span``; the pod looks for the ``traceparent`` header inline, so untraced messages pay
one header lookup and no extra call); a reply the handler sends is injected in turn, so the trace comes back to the asker.
Attributes follow OpenTelemetry's messaging semantic conventions (``messaging.system``,
``messaging.destination.name``, ``messaging.message.id``, ``messaging.operation.type``).

Without opentelemetry, or with no span active and no ``traceparent`` on a message, nothing here
runs on the hot path beyond one check.
"""

from __future__ import annotations

import contextvars
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from gravpy.message import Message

__all__ = ["ENABLED", "TRACEPARENT", "await_in_span", "call_in_span", "send_in_span", "traced"]

try:
    from opentelemetry import context as _context
    from opentelemetry import propagate as _propagate
    from opentelemetry import trace as _trace
except ImportError:  # pragma: no cover - exercised where the otel extra is not installed
    ENABLED = False
else:
    ENABLED = True


def _context_reader() -> Callable[[], object]:
    """What reads OpenTelemetry's current context for ``inject``, on every send: the ``get`` of
    the ContextVar its default runtime context keeps it in (one C call, where ``get_current``
    is two Python calls: about 3% of a send), or ``get_current`` where the runtime context is
    another (``OTEL_PYTHON_CONTEXT``) or this opentelemetry keeps it elsewhere."""
    if not ENABLED:
        return dict
    var = getattr(getattr(_context, "_RUNTIME_CONTEXT", None), "_current_context", None)
    if isinstance(var, contextvars.ContextVar):
        return var.get
    return _context.get_current


_current: Callable[[], object] = _context_reader()

Handler = Callable[[Message], Awaitable[object] | object]
_SYSTEM = "gravpy"
TRACEPARENT = "traceparent"
R = TypeVar("R")


def _tracer() -> Any:
    return _trace.get_tracer("gravpy")


def _attributes(msg: Message, operation: str) -> dict[str, str]:
    return {
        "messaging.system": _SYSTEM,
        "messaging.destination.name": msg.type,
        "messaging.message.id": msg.uuid,
        "messaging.operation.type": operation,
    }


def traced(msg: Message) -> bool:
    """True if a span is active to record the send of ``msg`` under (``send_in_span``); False
    also for anything but a ``Message``, which send refuses."""
    if not ENABLED or not _current():  # an empty context holds no span: done
        return False
    return msg.__class__ is Message and _trace.get_current_span().get_span_context().is_valid


def send_in_span(msg: Message, send: Callable[[Message], R]) -> R:
    """``send(msg)`` inside a PRODUCER span ``send <type>`` whose context is put in ``msg``'s
    headers first. A send that raises (refused: a uuid seen here, too large...) leaves the
    span with its exception and an error status, and puts the headers back: ``msg`` may be one
    pods here hold."""
    kind = _trace.SpanKind.PRODUCER
    with _tracer().start_as_current_span(
        f"send {msg.type}", kind=kind, attributes=_attributes(msg, "send")
    ):
        carrier: dict[str, str] = dict(msg.headers) if msg.headers else {}
        _propagate.inject(carrier)
        before, msg.headers = msg.headers, carrier
        try:
            return send(msg)
        except BaseException:
            msg.headers = before
            raise


def call_in_span(handler: Handler, msg: Message) -> object:
    """Call a plain ``handler`` inside a CONSUMER span continuing ``msg``'s trace context."""
    token = _context.attach(_propagate.extract(msg.headers or {}))
    try:
        with _consumer_span(msg):
            return handler(msg)
    finally:
        _context.detach(token)


async def await_in_span(handler: Handler, msg: Message) -> object:
    """Run an ``async`` ``handler`` inside a CONSUMER span continuing ``msg``'s trace context."""
    token = _context.attach(_propagate.extract(msg.headers or {}))
    try:
        with _consumer_span(msg):
            result = handler(msg)
            return await result if inspect.isawaitable(result) else result
    finally:
        _context.detach(token)


def _consumer_span(msg: Message) -> Any:
    kind = _trace.SpanKind.CONSUMER
    return _tracer().start_as_current_span(
        f"process {msg.type}", kind=kind, attributes=_attributes(msg, "process")
    )

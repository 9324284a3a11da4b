"""ServiceBus: Grafana's bus of events, commands and queries, over Pods, across the mesh.

Theory of operation
-------------------
Everything travels as ordinary messages from ordinary pods; the ServiceBus adds typed payloads
(``gravpy.service.payloads``) and the conventions of Grafana's bus:

- **Events** (``publish``): one message of type ``event.<Name>``. Each ServiceBus keeps one
  ungrouped pod per event class, which decodes each event once and calls that class's listeners
  in the order they were added; so every listener on every node gets every event, once. A
  listener that raises is logged and counted; the others still run.
- **Commands and queries** (``dispatch``): a request of type ``command.<Name>`` (``query.<Name>``
  for a class with a ``result``/``results`` field). Each ServiceBus keeps one pod per handled
  class, in the group named by the wire type, so exactly one handler anywhere on the mesh runs it
  (handlers in several processes share the load). The handler's pod answers with an *outcome*
  (``_Outcome``: ok, or the error's type name, message and node; for a query, the filled-in
  payload). No handler anywhere: the request has no responders, so ``HandlerNotFound`` comes at
  once. A payload that does not decode into the handler's class is answered as a failure (never
  a crash) and counted in ``refused``.

Every argument is checked before anything is sent or registered (``UsageError``). A handler's pod
never fails on an answer: a failure's text is sent with what UTF-8 cannot carry escaped (a lone
surrogate as ``\udce9``), and an answer that cannot be sent at all (over the mesh's size limit) is
replaced by a failure saying why, or logged; so the asker hears ``HandlerFailed``, never waits
out its timeout, and the pod is never disconnected for failures of its own answers.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

import msgspec

from gravpy import _log as logs
from gravpy._mailbox import check_timeout
from gravpy.errors import (
    HandlerFailed,
    HandlerNotFound,
    NoResponders,
    RemoteError,
    UsageError,
)
from gravpy.grav import Grav
from gravpy.message import Message
from gravpy.pod import Pod
from gravpy.service.payloads import Context, Kind, PayloadSpec, Signature

__all__ = ["ServiceBus", "ServiceStatistics"]

REPLY_TYPE = "service.outcome"
_log = logs.get_logger("gravpy.service")
T = TypeVar("T")
Listener = Callable[..., Awaitable[object] | object]


class _Outcome(msgspec.Struct, array_like=True, frozen=True):
    """The answer to a command or query: ok (and a query's payload) or what went wrong."""

    ok: bool
    payload: bytes = b""
    error_type: str = ""
    message: str = ""
    node: str = ""


_OUTCOME = msgspec.msgpack.Decoder(_Outcome)


@dataclass(frozen=True, slots=True)
class ServiceStatistics:
    """A snapshot of one ServiceBus's counters."""

    published: int  # events published here
    unheard: int  # ... that no listener anywhere wanted
    listened: int  # listener calls here
    listener_failures: int
    dispatched: int  # commands and queries dispatched here
    handled: int  # commands and queries handled here without error
    handler_failures: int  # ... whose handler raised, or whose answer could not be sent
    refused: int  # events or commands here whose payload did not decode


@dataclass(slots=True)
class _Counts:
    published: int = 0
    unheard: int = 0
    listened: int = 0
    listener_failures: int = 0
    dispatched: int = 0
    handled: int = 0
    handler_failures: int = 0
    refused: int = 0


class _Listeners:
    """The listeners of one event class in one ServiceBus, behind one pod."""

    def __init__(self, bus: ServiceBus, spec: PayloadSpec, pod: Pod) -> None:
        self.bus = bus
        self.spec = spec
        self.pod = pod
        self.calls: list[tuple[Listener, Signature]] = []

    def add(self, fn: Listener, sig: Signature) -> None:
        self.calls.append((fn, sig))
        if sig.is_async:
            self.pod.on_type(self.spec.wire_type, self.on_message_async)
        elif len(self.calls) == 1:
            self.pod.on_type(self.spec.wire_type, self.on_message)

    def _decode(self, msg: Message) -> tuple[Any, Context | None] | None:
        if msg.reply_to:
            return None
        try:
            event = self.spec.decode(msg.data)
        except msgspec.MsgspecError as exc:
            self.bus._counts.refused += 1
            _log.warning("event_refused", type=msg.type, msg_uuid=msg.uuid, error=str(exc))
            return None
        needs = any(sig.takes_context for _, sig in self.calls)
        return event, self.bus._context(msg) if needs else None

    def on_message(self, msg: Message) -> None:
        decoded = self._decode(msg)
        if decoded is None:
            return
        event, ctx = decoded
        counts = self.bus._counts
        for fn, sig in self.calls:
            counts.listened += 1
            try:
                fn(event, ctx) if sig.takes_context else fn(event)
            except Exception:
                counts.listener_failures += 1
                _log.exception("listener_failed", type=msg.type, listener=repr(fn))

    async def on_message_async(self, msg: Message) -> None:
        decoded = self._decode(msg)
        if decoded is None:
            return
        event, ctx = decoded
        counts = self.bus._counts
        for fn, sig in self.calls:
            counts.listened += 1
            try:
                result = fn(event, ctx) if sig.takes_context else fn(event)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                counts.listener_failures += 1
                _log.exception("listener_failed", type=msg.type, listener=repr(fn))


class ServiceBus:
    """Events, commands and queries over a ``Grav`` node or leaf; see the module docstring.

    ``bus = ServiceBus(grav)`` inside a running event loop; ``await bus.close()`` (or
    ``async with``) disconnects its pods.
    """

    def __init__(self, grav: Grav) -> None:
        if not isinstance(grav, Grav):
            raise UsageError(f"a ServiceBus needs a Grav (node or leaf), got {grav!r}")
        self._grav = grav
        self.node = grav.node_uuid
        self._encoder = msgspec.msgpack.Encoder()
        self._specs: dict[tuple[type, Kind], PayloadSpec] = {}
        self._listeners: dict[type, _Listeners] = {}
        self._handlers: dict[type, Pod] = {}
        self._sender: Pod | None = None
        self._counts = _Counts()
        self._closed = False

    # -- events ----------------------------------------------------------------------------------

    def add_event_listener(self, fn: Listener) -> None:
        """Call ``fn(event)`` (or ``fn(event, ctx)``) for every event of its annotated class
        published anywhere on the mesh. ``fn`` may be async. ``UsageError`` if its first parameter
        is not annotated with a dataclass or ``msgspec.Struct`` class."""
        self._check_open()
        sig = Signature.of(fn, "listener")
        group = self._listeners.get(sig.cls)
        if group is None:
            spec = self._spec(sig.cls, Kind.EVENT)
            group = self._listeners[sig.cls] = _Listeners(self, spec, self._grav.connect())
        group.add(fn, sig)

    async def publish(self, event: object, *, headers: Mapping[str, str] | None = None) -> None:
        """Send ``event`` to every listener of its class on every node (none is fine).

        Waits only while some receiver is congested (``Pod.publish``).
        """
        spec = self._spec(type(event), Kind.EVENT)
        msg = Message.new(spec.wire_type, _encoded(spec, event), headers=headers)
        receipt = await self._sending_pod().publish(msg)
        self._counts.published += 1
        if receipt.no_responders:
            self._counts.unheard += 1

    # -- commands and queries --------------------------------------------------------------------

    def add_handler(self, fn: Listener, *, concurrency: int = 1) -> None:
        """Handle the commands (or queries) of ``fn``'s annotated class; ``fn`` may be async.

        Handlers of one class in several processes share its commands (one runs each). A second
        handler for the same class in this ServiceBus is a ``UsageError``, as is a handler whose
        first parameter is not annotated with a payload class. ``concurrency`` > 1 (async
        handlers) lets that many run at once.
        """
        self._check_open()
        sig = Signature.of(fn, "handler")
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise UsageError(f"concurrency must be an int >= 1, got {concurrency!r}")
        if sig.cls in self._handlers:
            raise UsageError(f"{sig.cls.__name__} already has a handler in this ServiceBus")
        if concurrency > 1 and not sig.is_async:
            raise UsageError("concurrency > 1 needs an async handler")
        spec = self._spec(sig.cls, Kind.COMMAND)
        pod = self._grav.connect()
        handle = self._command_runner(spec, fn, sig, pod)
        try:
            pod.on_type(spec.wire_type, handle, group=spec.wire_type, concurrency=concurrency)
        except BaseException:  # (refused: nothing stays registered, no pod is left behind)
            pod.disconnect()
            raise
        self._handlers[sig.cls] = pod

    async def dispatch(
        self,
        cmd: T,
        *,
        timeout: float | None = 10.0,
        headers: Mapping[str, str] | None = None,
    ) -> T:
        """Run ``cmd`` by exactly one handler anywhere on the mesh; return it (a query: filled in).

        Raises ``HandlerNotFound`` at once when no handler exists, ``HandlerFailed`` when it
        raised (``error_type``, ``message``, ``node``), ``WaitTimeout`` after ``timeout`` seconds.
        A bad argument is a ``UsageError`` before anything is sent.
        """
        seconds = check_timeout(timeout)
        spec = self._spec(type(cmd), Kind.COMMAND)
        msg = Message.new(spec.wire_type, _encoded(spec, cmd), headers=headers)
        receipt = self._sending_pod().send(msg)
        self._counts.dispatched += 1
        try:
            reply: Message = await receipt.wait_until(seconds)
        except NoResponders as exc:
            raise HandlerNotFound(spec.wire_type) from exc
        try:
            outcome = _OUTCOME.decode(reply.data)
        except msgspec.MsgspecError as exc:
            raise HandlerFailed(
                spec.wire_type, type(exc).__name__, f"the answer is not an outcome: {exc}", ""
            ) from exc
        if not outcome.ok:
            cause = RemoteError(outcome.error_type, outcome.message, outcome.node)
            raise HandlerFailed(
                spec.wire_type, outcome.error_type, outcome.message, outcome.node
            ) from cause
        if spec.kind is Kind.QUERY:
            try:
                filled: T = spec.decode(outcome.payload)
            except msgspec.MsgspecError as exc:  # (the handler's side fills another shape)
                raise HandlerFailed(
                    spec.wire_type,
                    type(exc).__name__,
                    f"the answer does not decode as {spec.cls.__name__}: {exc}",
                    outcome.node,
                ) from exc
            return filled
        return cmd

    def _command_runner(
        self, spec: PayloadSpec, fn: Listener, sig: Signature, pod: Pod
    ) -> Callable[[Message], Awaitable[None] | None]:
        """The pod handler that decodes, runs ``fn`` and answers with an outcome."""

        def run(msg: Message) -> Awaitable[None] | None:
            if msg.reply_to:
                return None  # an answer, not a command
            try:
                payload = spec.decode(msg.data)
            except msgspec.MsgspecError as exc:
                self._counts.refused += 1
                _log.warning("command_refused", type=msg.type, msg_uuid=msg.uuid, error=str(exc))
                self._answer(pod, msg, _failure(exc, self.node))
                return None
            try:
                result = fn(payload, self._context(msg)) if sig.takes_context else fn(payload)
            except Exception as exc:
                self._failed(pod, msg, exc)
                return None
            if inspect.isawaitable(result):
                return self._finish(pod, msg, spec, payload, result)
            self._succeeded(pod, msg, spec, payload)
            return None

        if not sig.is_async:
            return run

        async def run_async(msg: Message) -> None:
            pending = run(msg)
            if pending is not None:
                await pending

        return run_async

    async def _finish(
        self, pod: Pod, msg: Message, spec: PayloadSpec, payload: Any, result: Awaitable[object]
    ) -> None:
        try:
            await result
        except Exception as exc:
            self._failed(pod, msg, exc)
        else:
            self._succeeded(pod, msg, spec, payload)

    def _succeeded(self, pod: Pod, msg: Message, spec: PayloadSpec, payload: Any) -> None:
        try:
            filled = _encoded(spec, payload) if spec.kind is Kind.QUERY else b""
        except UsageError as exc:  # a query filled in with what no encoder writes
            self._failed(pod, msg, exc)
            return
        unsent = self._answer(pod, msg, _Outcome(True, filled))
        if unsent is not None:  # no link carries it (over the size limit): the asker hears
            self._failed(pod, msg, unsent)
            return
        self._counts.handled += 1

    def _failed(self, pod: Pod, msg: Message, exc: Exception) -> None:
        self._counts.handler_failures += 1
        _log.info("handler_failed", type=msg.type, msg_uuid=msg.uuid, error=repr(exc))
        unsent = self._answer(pod, msg, _failure(exc, self.node))
        if unsent is not None:
            _log.warning("outcome_unsent", type=msg.type, msg_uuid=msg.uuid, error=repr(unsent))

    def _answer(self, pod: Pod, msg: Message, outcome: _Outcome) -> Exception | None:
        """Send ``outcome`` as the reply to ``msg``; what kept it from being sent, if anything.

        Never raises: a handler that fails keeps its message for redelivery (the command would
        run again) and enough such failures disconnect the handler's pod."""
        if pod.closed:
            return None
        try:
            pod.reply_to(msg, Message.new(REPLY_TYPE, self._encoder.encode(outcome)))
        except Exception as exc:  # over the mesh's size limit; or what no check foresaw
            return exc
        return None

    # -- the rest --------------------------------------------------------------------------------

    def _context(self, msg: Message) -> Context:
        return Context(msg.headers or {}, msg.type, msg.uuid, self.node)

    def _spec(self, cls: type, kind: Kind) -> PayloadSpec:
        spec = self._specs.get((cls, kind))
        if spec is None:
            spec = self._specs[cls, kind] = PayloadSpec(cls, kind, self._encoder)
        return spec

    def _sending_pod(self) -> Pod:
        self._check_open()
        if self._sender is None:
            self._sender = self._grav.connect()
        return self._sender

    def _check_open(self) -> None:
        if self._closed:
            raise UsageError("this ServiceBus is closed")

    def statistics(self) -> ServiceStatistics:
        c = self._counts
        return ServiceStatistics(
            c.published,
            c.unheard,
            c.listened,
            c.listener_failures,
            c.dispatched,
            c.handled,
            c.handler_failures,
            c.refused,
        )

    async def close(self) -> None:
        """Disconnect this ServiceBus's pods: its listeners and handlers stop here."""
        self._closed = True
        pods = [g.pod for g in self._listeners.values()] + list(self._handlers.values())
        if self._sender is not None:
            pods.append(self._sender)
        for pod in pods:
            pod.disconnect()

    async def __aenter__(self) -> ServiceBus:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


def _encoded(spec: PayloadSpec, payload: object) -> bytes:
    """``payload`` as msgpack; ``UsageError`` saying why if msgspec cannot write it (an int past
    64 bits, a value of a type it does not know, a str with a lone surrogate)."""
    try:
        return spec.encode(payload)
    except (msgspec.MsgspecError, TypeError, ValueError, OverflowError) as exc:
        raise UsageError(f"{spec.cls.__name__} cannot be encoded: {exc}") from None


def _failure(exc: Exception, node: str) -> _Outcome:
    """The outcome saying ``exc``; its texts valid UTF-8 whatever the exception holds."""
    try:
        message = str(exc)
    except Exception:  # an exception whose __str__ raises
        message = f"<{type(exc).__name__} that cannot be printed>"
    return _Outcome(False, b"", _utf8(type(exc).__name__), _utf8(message[:1000]), _utf8(node))


def _utf8(text: str) -> str:
    """``text`` with what UTF-8 cannot encode (lone surrogates) escaped as ``\\udcxx``."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")

"""The ``Messenger`` and ``Subscription`` protocols, and the lifecycle every backend shares.

Theory of operation. A backend subclasses ``MessengerBase`` and writes five hooks: ``_publish``,
``_stream``, ``_request``, ``_serve`` and ``_shutdown``. The base does what must be the same on every
backend: it validates subjects (gravpy message types; ``stream`` and ``serve`` also take gravpy
patterns with ``*`` and ``>``), refuses calls once closed (``MessengerClosed``), keeps the live
subscriptions so that ``close()`` ends them all, and tracks the tasks waiting in ``request`` so that
``close()`` ends each with ``MessengerClosed`` rather than leaving it to its timeout.

A stream delivers into the caller's ``asyncio.Queue`` through a ``StreamSink``: ``put_nowait``, and
on a full queue the newest message is dropped and counted (``Subscription.statistics()``). A
publisher is never blocked by a slow reader.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, Self, runtime_checkable

from gravpy.errors import MessengerClosed, UsageError
from gravpy.filter import Pattern
from gravpy.message import validate_type

__all__ = [
    "Handler",
    "Messenger",
    "MessengerBase",
    "StreamSink",
    "Subscription",
    "SubscriptionStatistics",
    "check_count",
    "check_pattern",
    "check_seconds",
    "check_subject",
]

Handler = Callable[[bytes], Awaitable[bytes]]
"""A server's handler: request data in, reply data out; an exception becomes ``RequestFailed``."""

DEFAULT_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class SubscriptionStatistics:
    """A snapshot of one subscription's counters."""

    received: int  # messages that reached this subscription (a server's: requests and publishes)
    delivered: int  # streams: put into the queue; servers: handled without error
    dropped: int  # refused for want of room: a stream's full queue, a server's full inbox
    failed: int  # servers: handler calls that raised (a requester got RequestFailed)


@runtime_checkable
class Subscription(Protocol):
    """A live ``stream`` or ``serve``. ``unsubscribe`` is idempotent."""

    @property
    def subject(self) -> str: ...

    @property
    def active(self) -> bool: ...

    async def unsubscribe(self) -> None: ...

    def statistics(self) -> SubscriptionStatistics: ...


@runtime_checkable
class Messenger(Protocol):
    """Publish, stream, request and serve by subject, over any backend; see ``docs/messenger.md``."""

    @property
    def closed(self) -> bool: ...

    async def publish(self, subject: str, data: bytes) -> None: ...

    async def stream(self, subject: str, queue: asyncio.Queue[bytes]) -> Subscription: ...

    async def request(
        self, subject: str, data: bytes, *, timeout: float = DEFAULT_TIMEOUT
    ) -> bytes: ...

    async def serve(self, subject: str, handler: Handler) -> Subscription: ...

    async def close(self) -> None: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


def check_subject(subject: str) -> str:
    """``subject`` if it is a valid gravpy message type (no wildcards), else ``UsageError``."""
    return validate_type(subject)


def check_pattern(subject: str) -> Pattern:
    """``subject`` compiled as a gravpy pattern (``*`` one token, ``>`` the rest)."""
    return Pattern(subject)


def check_count(name: str, value: object) -> int:
    """``value`` if it is an int >= 1 (not a bool), else ``UsageError`` naming ``name``."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    raise UsageError(f"{name} must be an int >= 1, got {value!r}")


def check_seconds(name: str, value: object) -> float:
    """``value`` as a float if it is a positive number of seconds (an int or a float, not a
    bool), else ``UsageError`` naming ``name``."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    raise UsageError(f"{name} must be a positive number of seconds, got {value!r}")


class StreamSink:
    """Feeds one caller queue: never blocks, drops the newest when full, counts everything."""

    __slots__ = ("dropped", "pattern", "queue", "received", "upstream_dropped")

    def __init__(self, pattern: Pattern, queue: asyncio.Queue[bytes]) -> None:
        if not isinstance(queue, asyncio.Queue):
            raise UsageError(f"stream needs an asyncio.Queue, got {queue!r}")
        self.pattern = pattern
        self.queue = queue
        self.received = 0
        self.dropped = 0
        self.upstream_dropped: Callable[[], int] | None = None
        """Set by a backend whose own buffer before the sink may drop (counted here too)."""

    def offer(self, data: bytes) -> None:
        self.received += 1
        try:
            self.queue.put_nowait(data)
        except asyncio.QueueFull:
            self.dropped += 1

    def statistics(self) -> SubscriptionStatistics:
        upstream = 0 if self.upstream_dropped is None else self.upstream_dropped()
        return SubscriptionStatistics(
            received=self.received + upstream,
            delivered=self.received - self.dropped,
            dropped=self.dropped + upstream,
            failed=0,
        )


class ServeCounters:
    """What a server counts: messages (requests and publishes) received, handled, refused (a full
    inbox), failed."""

    __slots__ = ("dropped", "failed", "handled", "received", "upstream_dropped")

    def __init__(self) -> None:
        self.received = 0
        self.handled = 0
        self.dropped = 0
        self.failed = 0
        self.upstream_dropped: Callable[[], int] | None = None
        """Set by a backend whose own buffer before the handler may drop (counted here too)."""

    def refused(self) -> None:
        """A message reached this server but found no room (counted received and dropped)."""
        self.received += 1
        self.dropped += 1

    def statistics(self) -> SubscriptionStatistics:
        upstream = 0 if self.upstream_dropped is None else self.upstream_dropped()
        return SubscriptionStatistics(
            self.received + upstream, self.handled, self.dropped + upstream, self.failed
        )


async def run_handler(handler: Handler, data: bytes, counters: ServeCounters) -> tuple[bytes, str]:
    """Run a server's handler once: ``(reply, "")``, or ``(b"", error text)`` if it raised."""
    counters.received += 1
    try:
        reply = await handler(data)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        counters.failed += 1
        return b"", str(exc) or type(exc).__name__
    if not isinstance(reply, bytes | bytearray | memoryview):
        counters.failed += 1
        return b"", f"handler returned {type(reply).__name__}, not bytes"
    counters.handled += 1
    return bytes(reply), ""


class BaseSubscription:
    """A subscription whose ``unsubscribe`` calls ``stop`` once and tells its messenger."""

    def __init__(
        self,
        owner: MessengerBase,
        subject: str,
        stop: Callable[[], Awaitable[None]],
        statistics: Callable[[], SubscriptionStatistics],
    ) -> None:
        self._owner = owner
        self._subject = subject
        self._stop = stop
        self._statistics = statistics
        self._active = True

    @property
    def subject(self) -> str:
        return self._subject

    @property
    def active(self) -> bool:
        return self._active

    async def unsubscribe(self) -> None:
        """Stop receiving. Idempotent; also fine after the messenger closed."""
        if not self._active:
            return
        self._active = False
        self._owner._forget(self)
        await self._stop()

    def statistics(self) -> SubscriptionStatistics:
        return self._statistics()

    def __repr__(self) -> str:
        state = "active" if self._active else "ended"
        return f"<{type(self).__name__} {self._subject!r} {state}>"


class MessengerBase:
    """The lifecycle shared by every backend; see the module docstring."""

    name = "base"

    def __init__(self) -> None:
        self._closed = False
        self._subscriptions: set[BaseSubscription] = set()
        self._waiting: set[asyncio.Task[object]] = set()
        self._closed_by_close: set[asyncio.Task[object]] = set()

    @property
    def closed(self) -> bool:
        return self._closed

    async def publish(self, subject: str, data: bytes) -> None:
        """Send ``data`` to every stream on ``subject`` (and to one of its servers). Raises
        ``PublishFailed`` if it cannot leave."""
        self._check_open()
        await self._publish(check_subject(subject), _as_bytes(data))

    async def stream(self, subject: str, queue: asyncio.Queue[bytes]) -> Subscription:
        """Put the data of every message on ``subject`` (a pattern) into ``queue`` from now on."""
        self._check_open()
        sink = StreamSink(check_pattern(subject), queue)
        stop = await self._stream(sink)
        return self._remember(BaseSubscription(self, subject, stop, sink.statistics))

    async def serve(self, subject: str, handler: Handler) -> Subscription:
        """Run ``handler`` for each request and each publish on ``subject`` (a pattern), as a NATS
        queue subscriber: of several servers one handles each; a request's asker gets the reply,
        a publish's is dropped."""
        self._check_open()
        if not callable(handler):
            raise UsageError(f"handler must be an async callable, got {handler!r}")
        counters = ServeCounters()
        stop = await self._serve(check_pattern(subject), handler, counters)
        return self._remember(BaseSubscription(self, subject, stop, counters.statistics))

    async def request(
        self, subject: str, data: bytes, *, timeout: float = DEFAULT_TIMEOUT
    ) -> bytes:
        """Send a request to one server of ``subject`` and return its reply.

        Raises ``RequestTimeout``, ``RequestFailed`` (the handler raised), ``NoResponders`` (where
        the backend can know), or ``MessengerClosed`` if the messenger closes meanwhile.
        """
        self._check_open()
        seconds = check_seconds("timeout", timeout)
        subject, data = check_subject(subject), _as_bytes(data)
        task = asyncio.current_task()
        if task is None:  # pragma: no cover - always inside a task under asyncio
            return await self._request(subject, data, seconds)
        self._waiting.add(task)
        try:
            return await self._request(subject, data, seconds)
        except asyncio.CancelledError:
            if task in self._closed_by_close:
                task.uncancel()
                raise MessengerClosed("the messenger closed while the request waited") from None
            raise
        finally:
            self._waiting.discard(task)
            self._closed_by_close.discard(task)

    async def close(self) -> None:
        """End every stream, server and pending request, then the backend. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for task in list(self._waiting):
            self._closed_by_close.add(task)
            task.cancel()
        for sub in list(self._subscriptions):
            await sub.unsubscribe()
        await self._shutdown()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- for backends ------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise MessengerClosed(f"this {self.name} messenger is closed")

    def _remember(self, sub: BaseSubscription) -> BaseSubscription:
        self._subscriptions.add(sub)
        return sub

    def _forget(self, sub: BaseSubscription) -> None:
        self._subscriptions.discard(sub)

    async def _publish(self, subject: str, data: bytes) -> None:
        raise NotImplementedError

    async def _stream(self, sink: StreamSink) -> Callable[[], Awaitable[None]]:
        raise NotImplementedError

    async def _serve(
        self, pattern: Pattern, handler: Handler, counters: ServeCounters
    ) -> Callable[[], Awaitable[None]]:
        raise NotImplementedError

    async def _request(self, subject: str, data: bytes, timeout: float) -> bytes:
        raise NotImplementedError

    async def _shutdown(self) -> None:
        raise NotImplementedError

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<{type(self).__name__} {state} subscriptions={len(self._subscriptions)}>"


def _as_bytes(data: bytes) -> bytes:
    if isinstance(data, bytes):
        return data
    if isinstance(data, bytearray | memoryview):
        return bytes(data)
    raise UsageError(f"message data must be bytes, got {type(data).__name__}")

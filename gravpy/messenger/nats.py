"""``NatsMessenger``: the messenger over a NATS server, through nats-py (``pip install gravpy[nats]``).

Theory of operation. Subjects travel unchanged (gravpy types and patterns are valid NATS subjects).
``stream`` is a plain subscription whose callback offers each payload to the caller's queue;
``serve`` is a subscription in the queue group ``group`` (default ``"messenger"``), so the server
hands each request, and each plain publish, to exactly one member (the handler runs for both; only
a request has a reply subject to answer); ``request`` is nats-py's request (one shared reply inbox),
and the server's "no responders" status becomes ``NoResponders``. A handler error travels back in
the reply's ``Messenger-Error`` header.

Connecting: the first connect tries each server of the URL briefly and raises ``TransportError``
(as a ``ws://`` messenger does) if none answers within ``connect_timeout``. Outages after that:
nats-py reconnects by itself (every ``reconnect_time_wait`` s, forever by default here) and
re-subscribes. While it is disconnected, ``publish`` is buffered in nats-py's pending buffer, at most
``pending_size`` bytes, and sent in order after the reconnect; a publish that would overflow the
buffer raises ``PublishFailed``, so nothing is lost silently. Every nats-py exception is translated
in ``_translated`` (and the first connect's in ``_first_connect``), so none leaks out.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import nats
import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg

from gravpy._log import get_logger
from gravpy.errors import (
    MessengerClosed,
    NoResponders,
    PublishFailed,
    RequestFailed,
    RequestTimeout,
    StreamSubscriptionFailed,
    TransportError,
)
from gravpy.filter import Pattern
from gravpy.messenger.base import Handler, MessengerBase, ServeCounters, StreamSink, run_handler

__all__ = ["ERROR_HEADER", "NatsMessenger"]

ERROR_HEADER = "Messenger-Error"
_FIRST_CONNECT_ATTEMPTS = 1  # redials per server before the first connect gives up
_log = get_logger("gravpy.messenger.nats")


@contextlib.contextmanager
def _translated(what: str, failure: type[Exception]) -> Iterator[None]:
    """nats-py's errors as gravpy's: closed -> MessengerClosed, anything else -> ``failure``."""
    try:
        yield
    except nats.errors.ConnectionClosedError as exc:
        raise MessengerClosed(f"{what}: the NATS connection is closed") from exc
    except nats.errors.OutboundBufferLimitError as exc:
        raise failure(f"{what}: disconnected from NATS and the reconnect buffer is full") from exc
    except (nats.errors.Error, OSError) as exc:
        raise failure(f"{what}: {exc!r}") from exc


async def _first_connect(url: str, connect_timeout: float, **options: Any) -> Client:
    """A client connected to ``url``, or ``TransportError`` within ``connect_timeout``.

    nats-py applies ``max_reconnect_attempts`` to the first connect too, and with -1 it retries a
    dead server forever; so the first connect makes at most ``_FIRST_CONNECT_ATTEMPTS`` + 1 tries
    per server (nats-py counts the first try as no reconnect), all within ``connect_timeout``.
    """
    nc = Client()
    options["connect_timeout"] = connect_timeout  # typed int in nats-py, a float works
    try:
        async with asyncio.timeout(connect_timeout):
            await nc.connect(url, max_reconnect_attempts=_FIRST_CONNECT_ATTEMPTS, **options)
    except (TimeoutError, nats.errors.Error, OSError) as exc:
        cause = nc.last_error or exc
        await nc.close()
        raise TransportError(f"connect to {url}: {cause!r}") from cause
    return nc


class NatsMessenger(MessengerBase):
    """A messenger on a NATS connection; ``await NatsMessenger.connect("nats://...")``.

    ``NatsMessenger(nc)`` wraps a connected nats-py client you own (``close()`` leaves it open).
    """

    name = "nats"

    def __init__(self, nc: Client, *, owns_client: bool = False, group: str = "messenger") -> None:
        super().__init__()
        self.nc = nc
        self._owns_client = owns_client
        self._group = group
        self.slow_consumer_drops: Counter[int] = Counter()
        """Messages nats-py dropped per subscription id (filled by ``connect``'s error callback)."""

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        group: str = "messenger",
        reconnect_time_wait: float = 0.25,
        max_reconnect_attempts: int = -1,
        pending_size: int = 2 * 1024 * 1024,
        connect_timeout: float = 2.0,
        **options: Any,
    ) -> NatsMessenger:
        """Connect to ``url``; keyword ``options`` go to ``nats.connect``. See the module docstring.

        The first connect raises ``TransportError`` if no server of ``url`` answers within
        ``connect_timeout``; ``max_reconnect_attempts`` (-1: forever) applies once connected.
        """
        drops: Counter[int] = Counter()
        connected = False

        async def error_cb(exc: Exception) -> None:
            if not connected:
                return  # the first connect's failures are raised, not logged
            if isinstance(exc, nats.errors.SlowConsumerError):
                drops[exc.sid] += 1  # counted in that stream's statistics, logged once
                if drops[exc.sid] > 1:
                    return
            _log.warning("nats_error", url=url, error=repr(exc))

        options.setdefault("error_cb", error_cb)
        nc = await _first_connect(
            url,
            connect_timeout,
            reconnect_time_wait=reconnect_time_wait,
            pending_size=pending_size,
            allow_reconnect=True,
            **options,
        )
        connected = True
        nc.options["max_reconnect_attempts"] = max_reconnect_attempts  # read at each redial
        messenger = cls(nc, owns_client=True, group=group)
        messenger.slow_consumer_drops = drops
        return messenger

    async def _publish(self, subject: str, data: bytes) -> None:
        try:  # the hot path: no context manager here, the same translation on failure
            await self.nc.publish(subject, data)
        except (nats.errors.Error, OSError) as exc:
            with _translated(f"publish to {subject!r}", PublishFailed):
                raise exc

    async def _stream(self, sink: StreamSink) -> Callable[[], Awaitable[None]]:
        async def deliver(msg: Msg) -> None:
            sink.offer(msg.data)

        with _translated(f"stream {sink.pattern.text!r}", StreamSubscriptionFailed):
            sub = await self.nc.subscribe(sink.pattern.text, cb=deliver)
            await self._flush()
        sid = sub._id  # nats-py reports slow-consumer drops by subscription id
        sink.upstream_dropped = lambda: self.slow_consumer_drops[sid]
        return self._unsubscriber(sub)

    async def _serve(
        self, pattern: Pattern, handler: Handler, counters: ServeCounters
    ) -> Callable[[], Awaitable[None]]:
        async def answer(msg: Msg) -> None:
            data, error = await run_handler(handler, msg.data, counters)
            if not msg.reply:
                return  # a publish, not a request: nobody to answer
            headers = {ERROR_HEADER: error} if error else None
            try:
                with _translated(f"reply on {pattern.text!r}", PublishFailed):
                    await self.nc.publish(msg.reply, data, headers=headers)
            except (PublishFailed, MessengerClosed) as exc:
                _log.warning("nats_reply_failed", subject=msg.subject, error=str(exc))

        with _translated(f"serve {pattern.text!r}", StreamSubscriptionFailed):
            sub = await self.nc.subscribe(pattern.text, queue=self._group, cb=answer)
            await self._flush()
        sid = sub._id  # nats-py's slow-consumer drops of this server count as its own
        counters.upstream_dropped = lambda: self.slow_consumer_drops[sid]
        return self._unsubscriber(sub)

    async def _request(self, subject: str, data: bytes, timeout: float) -> bytes:
        try:
            with _translated(f"request on {subject!r}", PublishFailed):
                reply = await self.nc.request(subject, data, timeout=timeout)
        except PublishFailed as exc:
            if isinstance(exc.__cause__, nats.errors.NoRespondersError):
                raise NoResponders(subject) from None
            if isinstance(exc.__cause__, nats.errors.TimeoutError):
                raise RequestTimeout(subject, timeout) from None
            raise
        error = (reply.headers or {}).get(ERROR_HEADER)
        if error is not None:
            raise RequestFailed(subject, error)
        return reply.data

    async def _flush(self) -> None:
        """Make sure the server has our subscription before returning it (when connected)."""
        if self.nc.is_connected:
            await self.nc.flush(timeout=5)

    def _unsubscriber(self, sub: Any) -> Callable[[], Awaitable[None]]:
        async def stop() -> None:
            if self.nc.is_closed:
                return
            try:
                await sub.unsubscribe()
            except nats.errors.Error as exc:
                _log.debug("nats_unsubscribe_failed", error=repr(exc))

        return stop

    async def _shutdown(self) -> None:
        if self._owns_client and not self.nc.is_closed:
            await self.nc.close()

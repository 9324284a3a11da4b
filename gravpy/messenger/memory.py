"""``InMemoryMessenger``: one process, no network, the reference for the other backends.

Theory of operation. Traffic follows NATS: a request is a message like a publish, with a way back.
``publish`` and ``request`` offer the data to every live stream whose pattern matches
(``StreamSink`` never blocks) and to one matching server, round robin. Each ``serve`` is a server
with a bounded inbox and one worker task that runs the handler one message at a time, in order
(like a NATS queue subscription); it answers a request through the future its requester waits on,
and drops the reply to a publish. Nobody at all on the subject (no server, no stream) makes
``request`` raise ``NoResponders`` at once; a stream alone hears the request but answers nothing, so
it ends in ``RequestTimeout``, as on NATS. A server whose inbox is full refuses (drop newest,
counted): a request with ``PublishFailed``, a publish silently. A server that stops leaves the
requests it held to their timeout (``RequestTimeout``), as a NATS queue member or a SQLite server
that stops does.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable

from gravpy.errors import NoResponders, PublishFailed, RequestFailed, RequestTimeout
from gravpy.filter import Pattern
from gravpy.messenger.base import (
    Handler,
    MessengerBase,
    ServeCounters,
    StreamSink,
    check_count,
    run_handler,
)

__all__ = ["InMemoryMessenger"]

_Work = tuple[bytes, "asyncio.Future[tuple[bytes, str]] | None"]  # None: a publish, no reply


class _Server:
    """One ``serve``: a bounded inbox of requests and publishes, and the task that handles them."""

    def __init__(
        self, pattern: Pattern, handler: Handler, counters: ServeCounters, limit: int
    ) -> None:
        self.pattern = pattern
        self.handler = handler
        self.counters = counters
        self.inbox: asyncio.Queue[_Work] = asyncio.Queue(limit)
        self.task = asyncio.create_task(self._work(), name=f"messenger-serve:{pattern.text}")

    def offer(self, data: bytes, reply: asyncio.Future[tuple[bytes, str]] | None) -> bool:
        """Queue a request (``reply`` set) or a publish; False (counted) if the inbox is full."""
        try:
            self.inbox.put_nowait((data, reply))
        except asyncio.QueueFull:
            self.counters.refused()
            return False
        return True

    async def _work(self) -> None:
        while True:
            data, reply = await self.inbox.get()
            if reply is not None and reply.done():  # the requester gave up (timeout, close)
                continue
            result = await run_handler(self.handler, data, self.counters)
            if reply is not None and not reply.done():
                reply.set_result(result)

    async def stop(self) -> None:
        """Stop answering. The requests this server held are left unanswered, so their requesters
        end in ``RequestTimeout`` as on the other backends (not a ``CancelledError`` that is not
        theirs)."""
        self.task.cancel()
        try:
            await self.task
        except asyncio.CancelledError:
            if (current := asyncio.current_task()) is not None and current.cancelling():
                raise


class InMemoryMessenger(MessengerBase):
    """A messenger for one process; ``open_messenger("memory://")`` makes one.

    ``server_inbox`` (an int >= 1) bounds the requests and publishes queued for each server (a
    full one refuses a request with ``PublishFailed`` and drops a publish, both counted).
    """

    name = "memory"

    def __init__(self, *, server_inbox: int = 1024) -> None:
        super().__init__()
        self._server_inbox = check_count("server_inbox", server_inbox)
        self._sinks: list[StreamSink] = []
        self._servers: list[_Server] = []
        self._turn = itertools.count()

    async def _publish(self, subject: str, data: bytes) -> None:
        self._to_streams(subject, data)
        server = self._server_for(subject)
        if server is not None:
            server.offer(data, None)  # a full inbox drops it, counted there

    def _to_streams(self, subject: str, data: bytes) -> bool:
        """Offer ``data`` to every stream of ``subject``; True if there was one."""
        heard = False
        for sink in self._sinks:
            if sink.pattern.matches(subject):
                sink.offer(data)
                heard = True
        return heard

    def _server_for(self, subject: str) -> _Server | None:
        """The server of ``subject`` whose turn it is, if any."""
        servers = [s for s in self._servers if s.pattern.matches(subject)]
        return servers[next(self._turn) % len(servers)] if servers else None

    async def _stream(self, sink: StreamSink) -> Callable[[], Awaitable[None]]:
        self._sinks = [*self._sinks, sink]  # copy on write: publish may be iterating

        async def stop() -> None:
            self._sinks = [s for s in self._sinks if s is not sink]

        return stop

    async def _serve(
        self, pattern: Pattern, handler: Handler, counters: ServeCounters
    ) -> Callable[[], Awaitable[None]]:
        server = _Server(pattern, handler, counters, self._server_inbox)
        self._servers.append(server)

        async def stop() -> None:
            self._servers.remove(server)
            await server.stop()

        return stop

    async def _request(self, subject: str, data: bytes, timeout: float) -> bytes:
        heard = self._to_streams(subject, data)
        server = self._server_for(subject)
        if server is None and not heard:
            raise NoResponders(subject)
        reply: asyncio.Future[tuple[bytes, str]] = asyncio.get_running_loop().create_future()
        if server is not None and not server.offer(data, reply):
            raise PublishFailed(f"the server of {subject!r} has a full inbox")
        try:
            async with asyncio.timeout(timeout):
                result, error = await reply  # a stream alone never answers: the timeout ends it
        except TimeoutError:
            raise RequestTimeout(subject, timeout) from None
        finally:
            reply.cancel()
        if error:
            raise RequestFailed(subject, error)
        return result

    async def _shutdown(self) -> None:
        for server in list(self._servers):
            await server.stop()
        self._servers.clear()
        self._sinks = []

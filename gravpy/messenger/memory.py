"""``InMemoryMessenger``: one process, no network, the reference for the other backends.

Theory of operation. ``publish`` walks the live streams and offers the data to each whose pattern
matches (``StreamSink`` never blocks). Each ``serve`` is a server with a bounded inbox of requests and
one worker task that runs the handler one request at a time, in order (like a NATS subscription).
``request`` picks one matching server, round robin, and waits on a future the worker resolves with
the reply or the handler's error. No matching server at all raises ``NoResponders`` at once; a
server whose inbox is full refuses the request with ``PublishFailed`` (drop newest, counted). A
server that stops leaves the requests it held to their timeout (``RequestTimeout``), as a NATS
queue member or a SQLite server that stops does.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable

from gravpy.errors import NoResponders, PublishFailed, RequestFailed, RequestTimeout
from gravpy.filter import Pattern
from gravpy.messenger.base import Handler, MessengerBase, ServeCounters, StreamSink, run_handler

__all__ = ["InMemoryMessenger"]

_Request = tuple[bytes, "asyncio.Future[tuple[bytes, str]]"]


class _Server:
    """One ``serve``: a bounded inbox of requests and the task that answers them."""

    def __init__(
        self, pattern: Pattern, handler: Handler, counters: ServeCounters, limit: int
    ) -> None:
        self.pattern = pattern
        self.handler = handler
        self.counters = counters
        self.inbox: asyncio.Queue[_Request] = asyncio.Queue(limit)
        self.task = asyncio.create_task(self._work(), name=f"messenger-serve:{pattern.text}")

    async def _work(self) -> None:
        while True:
            data, reply = await self.inbox.get()
            if reply.done():  # the requester gave up (timeout, close)
                continue
            result = await run_handler(self.handler, data, self.counters)
            if not reply.done():
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

    ``server_inbox`` bounds the requests queued for each server (a full one refuses the request
    with ``PublishFailed``).
    """

    name = "memory"

    def __init__(self, *, server_inbox: int = 1024) -> None:
        super().__init__()
        self._sinks: list[StreamSink] = []
        self._servers: list[_Server] = []
        self._server_inbox = server_inbox
        self._turn = itertools.count()

    async def _publish(self, subject: str, data: bytes) -> None:
        for sink in self._sinks:
            if sink.pattern.matches(subject):
                sink.offer(data)

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
        servers = [s for s in self._servers if s.pattern.matches(subject)]
        if not servers:
            raise NoResponders(subject)
        server = servers[next(self._turn) % len(servers)]
        reply: asyncio.Future[tuple[bytes, str]] = asyncio.get_running_loop().create_future()
        try:
            server.inbox.put_nowait((data, reply))
        except asyncio.QueueFull:
            server.counters.refused()
            raise PublishFailed(f"the server of {subject!r} has a full inbox") from None
        try:
            async with asyncio.timeout(timeout):
                result, error = await reply
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

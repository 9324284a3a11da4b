"""``SQLiteMessenger``: a durable bus in one SQLite file, shared by the processes of a machine.

Theory of operation. Every statement runs on the messenger's single database thread (a
one-worker ``ThreadPoolExecutor`` holding the one connection), so the event loop never blocks on
the file and the connection is only ever touched by one thread. The driver is the standard
library's ``sqlite3``, not aiosqlite: aiosqlite is the same design (a thread per connection) but
pays one thread hop per *statement*, where here a whole step (claim = select + conditional update
+ commit; take replies = select + deletes + commit) is one hop; it would also be one more
dependency, and a caller could not hand over a plain ``sqlite3.Connection``.

SQLite cannot notify other processes, so the messenger polls, every ``poll_interval`` seconds when
idle and at once again while there is work:

- one *pump* task reads new ``bus_events`` after its cursor for the live streams (each stream only
  gets rows committed after it subscribed) and collects ``bus_replies`` for pending requests;
- each ``serve`` has a worker task that claims one request at a time (``Store.claim``: exactly one
  server of all processes wins each), runs the handler and writes the reply.

``publish`` queues the event in a bounded ``Outbox`` and returns (as nats-py's client buffer does);
one writer task commits what gathered in one transaction per batch, in order, retrying a failed
write, so a publisher is not held to one thread hop per event. ``flush()`` waits for the commit;
``close()`` flushes first. Writes by this messenger wake its own pump and servers at once, so within
one process nothing waits for the poll. Requests carry a deadline; servers skip expired ones. With no server at all, a request
ends in ``RequestTimeout``: SQLite cannot know that nobody is serving. Old rows are deleted by the
pump at most every ``prune_interval`` seconds (``Retention``). A caller-provided connection (opened
with ``check_same_thread=False``) is used as is and not closed by ``close()``.
"""

from __future__ import annotations

import asyncio
import functools
import os
import sqlite3
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from gravpy._log import get_logger
from gravpy.errors import (
    MessengerClosed,
    PublishFailed,
    RequestFailed,
    RequestTimeout,
    StreamSubscriptionFailed,
    UsageError,
)
from gravpy.filter import Pattern
from gravpy.messenger.base import Handler, MessengerBase, ServeCounters, StreamSink, run_handler
from gravpy.messenger.sqlite_outbox import Outbox
from gravpy.messenger.sqlite_store import Retention, Store

__all__ = ["Retention", "SQLiteMessenger"]

_log = get_logger("gravpy.messenger.sqlite")
_T = TypeVar("_T")


class _Signal:
    """Wakes every waiter at once; a waiter also wakes after its timeout (the poll)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, timeout: float) -> None:
        event = self._event
        try:
            async with asyncio.timeout(timeout):
                await event.wait()
        except TimeoutError:
            pass


class SQLiteMessenger(MessengerBase):
    """A messenger on a SQLite file; ``await SQLiteMessenger.open(path)`` or
    ``open_messenger("sqlite:///path")``. See the module docstring for the guarantees."""

    name = "sqlite"

    def __init__(
        self,
        store: Store,
        executor: ThreadPoolExecutor,
        *,
        poll_interval: float,
        retention: Retention,
        prune_interval: float,
        outbox_limit: int = 10_000,
        stall_timeout: float = 10.0,
    ) -> None:
        super().__init__()
        self._store = store
        self._executor = executor
        self._poll = poll_interval
        self._retention = retention
        self._prune_interval = prune_interval
        self._server_name = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self._sinks: dict[StreamSink, int] = {}  # sink -> the last event id before it subscribed
        self._cursor = 0
        self._replies: dict[int, asyncio.Future[tuple[bytes, str]]] = {}
        self._events = _Signal()  # new events or replies to look for
        self._requests = _Signal()  # new requests to claim
        self._workers: set[asyncio.Task[None]] = set()
        self._outbox = Outbox(self._write_events, limit=outbox_limit, stall_timeout=stall_timeout)
        self._stall_timeout = stall_timeout
        self._writer = asyncio.create_task(
            self._outbox.run(self._events.notify), name="messenger-sqlite-writer"
        )
        self._pump = asyncio.create_task(self._run_pump(), name="messenger-sqlite-pump")

    @classmethod
    async def open(
        cls,
        path: str | None = None,
        *,
        connection: sqlite3.Connection | None = None,
        poll_interval: float = 0.005,
        retention_rows: int | None = 100_000,
        retention_seconds: float | None = 3600.0,
        prune_interval: float = 1.0,
        busy_timeout: float = 5.0,
        outbox_limit: int = 10_000,
    ) -> SQLiteMessenger:
        """Open (creating when missing) the bus at ``path``, or on a caller's ``connection``.

        ``retention_rows``/``retention_seconds`` bound the events kept (None: no bound).
        """
        if (path is None) == (connection is None):
            raise UsageError("give exactly one of path and connection")
        if path == "":
            raise UsageError("the SQLite bus needs a file path: sqlite:///var/lib/app/bus.db")
        if poll_interval <= 0 or prune_interval <= 0:
            raise UsageError("poll_interval and prune_interval must be > 0")
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gravpy-sqlite")
        loop = asyncio.get_running_loop()
        try:
            if connection is not None:
                store = Store(connection, owned=False)
                await loop.run_in_executor(executor, store.setup)
            else:
                assert path is not None
                opener = functools.partial(Store.open, path, busy_timeout=busy_timeout)
                store = await loop.run_in_executor(executor, opener)
        except sqlite3.ProgrammingError as exc:
            executor.shutdown(wait=False)
            raise UsageError(
                f"the connection cannot be used from the messenger's thread ({exc}); "
                "open it with check_same_thread=False"
            ) from exc
        except BaseException:
            executor.shutdown(wait=False)
            raise
        retention = Retention(retention_rows, retention_seconds)
        return cls(
            store,
            executor,
            poll_interval=poll_interval,
            retention=retention,
            prune_interval=prune_interval,
            outbox_limit=outbox_limit,
            stall_timeout=2 * busy_timeout,
        )

    async def _db(self, fn: Callable[..., _T], *args: Any) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    # -- publish and stream ----------------------------------------------------------------------

    async def _publish(self, subject: str, data: bytes) -> None:
        await self._outbox.put(subject, data)

    async def flush(self) -> None:
        """Wait until every event published so far is committed to the file."""
        self._check_open()
        await self._outbox.flush()

    async def _write_events(self, batch: list[tuple[str, bytes]]) -> None:
        await self._db(self._store.publish_many, batch)

    async def _stream(self, sink: StreamSink) -> Callable[[], Awaitable[None]]:
        await self._outbox.flush()  # what this messenger published before is "before" the stream
        try:
            start = await self._db(self._store.last_event_id)
        except sqlite3.Error as exc:
            raise StreamSubscriptionFailed(f"could not read the events table: {exc}") from exc
        if not self._sinks:
            self._cursor = start
        self._sinks[sink] = start

        async def stop() -> None:
            self._sinks.pop(sink, None)

        return stop

    def _deliver(self, rows: list[tuple[int, str, bytes]]) -> None:
        for event_id, subject, data in rows:
            if event_id > self._cursor + 1:  # pruned before this messenger read them
                missed = event_id - self._cursor - 1
                for sink, start in self._sinks.items():
                    if start < event_id - 1:
                        sink.received += missed
                        sink.dropped += missed
            self._cursor = event_id
            for sink, start in list(self._sinks.items()):
                if event_id > start and sink.pattern.matches(subject):
                    sink.offer(data)

    # -- request and serve -----------------------------------------------------------------------

    async def _request(self, subject: str, data: bytes, timeout: float) -> bytes:
        try:
            request_id = await self._db(self._store.request, subject, data, timeout)
        except sqlite3.Error as exc:
            raise PublishFailed(f"could not write the request: {exc}") from exc
        reply: asyncio.Future[tuple[bytes, str]] = asyncio.get_running_loop().create_future()
        self._replies[request_id] = reply
        self._requests.notify()
        self._events.notify()
        try:
            async with asyncio.timeout(timeout):
                result, error = await reply
        except TimeoutError:
            await self._withdraw(request_id)
            raise RequestTimeout(subject, timeout) from None
        finally:
            self._replies.pop(request_id, None)
        if error:
            raise RequestFailed(subject, error)
        return result

    async def _withdraw(self, request_id: int) -> None:
        try:
            await self._db(self._store.withdraw, request_id)
        except sqlite3.Error as exc:
            _log.warning("request_withdraw_failed", request=request_id, error=repr(exc))

    async def _serve(
        self, pattern: Pattern, handler: Handler, counters: ServeCounters
    ) -> Callable[[], Awaitable[None]]:
        worker = asyncio.create_task(
            self._run_server(pattern, handler, counters), name=f"messenger-sqlite-serve:{pattern}"
        )
        self._workers.add(worker)
        self._requests.notify()  # claim what is already waiting

        async def stop() -> None:
            self._workers.discard(worker)
            await _cancel(worker)

        return stop

    async def _run_server(
        self, pattern: Pattern, handler: Handler, counters: ServeCounters
    ) -> None:
        while True:
            try:
                claimed = await self._db(self._store.claim, pattern, self._server_name)
            except sqlite3.Error as exc:
                _log.warning("request_claim_failed", pattern=pattern.text, error=repr(exc))
                claimed = None
            if claimed is None:
                await self._requests.wait(self._poll)
                continue
            data, error = await run_handler(handler, claimed.data, counters)
            try:
                await self._db(self._store.reply, claimed.id, data, error)
            except sqlite3.Error as exc:
                _log.warning("reply_write_failed", request=claimed.id, error=repr(exc))
            self._events.notify()

    # -- the pump --------------------------------------------------------------------------------

    async def _run_pump(self) -> None:
        loop = asyncio.get_running_loop()
        next_prune = loop.time() + self._prune_interval
        while True:
            busy = False
            try:
                busy = await self._pump_once()
                if loop.time() >= next_prune:
                    next_prune = loop.time() + self._prune_interval
                    await self._db(self._store.prune, self._retention)
            except sqlite3.Error as exc:
                _log.warning("sqlite_poll_failed", error=repr(exc))
            if not busy:
                await self._events.wait(self._poll)

    async def _pump_once(self) -> bool:
        """Read new events and replies once; True if there was something (poll again now)."""
        busy = False
        if self._sinks:
            rows = await self._db(self._store.events_after, self._cursor)
            self._deliver(rows)
            busy = bool(rows)
        if self._replies:
            for request_id, data, error in await self._db(
                self._store.take_replies, list(self._replies)
            ):
                reply = self._replies.get(request_id)
                if reply is not None and not reply.done():
                    reply.set_result((data, error))
        return busy

    async def table_counts(self) -> dict[str, int]:
        """Rows in ``bus_events``, ``bus_requests`` and ``bus_replies`` now."""
        if self.closed:
            raise MessengerClosed("this sqlite messenger is closed")
        await self._outbox.flush()
        return await self._db(self._store.counts)

    async def prune(self) -> None:
        """Apply the retention now (the pump also does, every ``prune_interval`` s)."""
        await self._outbox.flush()
        await self._db(self._store.prune, self._retention)

    async def _shutdown(self) -> None:
        try:
            async with asyncio.timeout(self._stall_timeout):
                await self._outbox.flush()
        except TimeoutError:
            _log.error(
                "sqlite_events_not_written",
                count=len(self._outbox),
                error=repr(self._outbox.last_error),
            )
        await _cancel(self._writer)
        for worker in list(self._workers):
            await _cancel(worker)
        await _cancel(self._pump)
        try:
            await self._db(self._store.close)
        finally:
            self._executor.shutdown(wait=False)


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise

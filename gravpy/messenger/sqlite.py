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

- one *pump* task reads new ``bus_events`` after its cursor for the live streams and servers (each
  only gets rows committed after it subscribed) and collects ``bus_replies`` for pending requests;
  the published events a server of this messenger matches are claimed (``Store.claim_events``:
  one messenger of all processes wins each) and go to one of them, round robin, into its bounded
  inbox (full: dropped, counted), as a NATS queue subscriber gets publishes;
- each ``serve`` has a worker task that handles what its inbox holds and claims one request at a
  time (``Store.claim``: exactly one server of all processes wins each), runs the handler and
  writes the reply.

A request is written with a copy in ``bus_events``, so streams see requests (as on NATS); the
servers skip that copy. A request whose asker gives up (timeout, cancellation, ``close()``) is
withdrawn from the file, so no server runs it later; ``close()`` waits for those withdrawals.

``publish`` queues the event in a bounded ``Outbox`` and returns (as nats-py's client buffer does);
one writer task commits what gathered in one transaction per batch, in order, retrying a failed
write, so a publisher is not held to one thread hop per event. ``flush()`` waits for the commit;
``close()`` flushes first. Writes by this messenger wake its own pump and servers at once, so within
one process nothing waits for the poll. Requests carry a deadline; servers skip expired ones. With no server at all, a request
ends in ``RequestTimeout``: SQLite cannot know that nobody is serving. Old rows are deleted by the
pump at most every ``prune_interval`` seconds (``Retention``). A caller-provided connection (opened
with ``check_same_thread=False``) is used as is and not closed by ``close()``. ``open`` checks its
options (``UsageError`` naming the one at fault) and turns a file it cannot open as the bus into
``TransportError`` naming the path.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
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
    TransportError,
    UsageError,
)
from gravpy.filter import Pattern
from gravpy.messenger.base import (
    Handler,
    MessengerBase,
    ServeCounters,
    StreamSink,
    check_count,
    check_seconds,
    run_handler,
)
from gravpy.messenger.sqlite_outbox import Outbox
from gravpy.messenger.sqlite_server import Server, Signal
from gravpy.messenger.sqlite_store import Event, Retention, Store

__all__ = ["Retention", "SQLiteMessenger"]

_log = get_logger("gravpy.messenger.sqlite")
_T = TypeVar("_T")
_PUBLISHES_PER_CLAIM = 64  # a server handles at most this many publishes between request claims


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
        server_inbox: int = 1024,
    ) -> None:
        super().__init__()
        self._store = store
        self._executor = executor
        self._poll = poll_interval
        self._retention = retention
        self._prune_interval = prune_interval
        self._server_inbox = server_inbox
        self._server_name = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self._sinks: dict[StreamSink, int] = {}  # sink -> the last event id before it subscribed
        self._servers: dict[Server, asyncio.Task[None]] = {}  # each with its worker
        self._turn = itertools.count()
        self._cursor = 0
        self._replies: dict[int, asyncio.Future[tuple[bytes, str]]] = {}
        self._cleanups: set[asyncio.Future[Any]] = set()  # withdrawals close() must wait for
        self._events = Signal()  # new events or replies to look for
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
        server_inbox: int = 1024,
    ) -> SQLiteMessenger:
        """Open (creating when missing) the bus at ``path``, or on a caller's ``connection``.

        ``retention_rows``/``retention_seconds`` bound the events kept (None: no bound);
        ``server_inbox`` bounds the publishes queued for each server. A bad option value raises
        ``UsageError`` naming it; a file that cannot be opened as the bus (a missing directory, a
        directory, not a database) raises ``TransportError`` naming the path.
        """
        if (path is None) == (connection is None):
            raise UsageError("give exactly one of path and connection")
        if path is not None:
            _check_path(path)
        poll_interval = check_seconds("poll_interval", poll_interval)
        prune_interval = check_seconds("prune_interval", prune_interval)
        stall_timeout = 2 * check_seconds("busy_timeout", busy_timeout)
        outbox_limit = check_count("outbox_limit", outbox_limit)
        server_inbox = check_count("server_inbox", server_inbox)
        retention = _retention(retention_rows, retention_seconds)
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gravpy-sqlite")
        try:
            store = await _open_store(executor, path, connection, busy_timeout)
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(
            store,
            executor,
            poll_interval=poll_interval,
            retention=retention,
            prune_interval=prune_interval,
            outbox_limit=outbox_limit,
            stall_timeout=stall_timeout,
            server_inbox=server_inbox,
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

    async def _subscribe_at(self) -> int:
        """The last event id now (after this messenger's own publishes): where a new stream or
        server starts reading."""
        await self._outbox.flush()  # what this messenger published before is "before" it
        try:
            start = await self._db(self._store.last_event_id)
        except sqlite3.Error as exc:
            raise StreamSubscriptionFailed(f"could not read the events table: {exc}") from exc
        if not self._sinks and not self._servers:
            self._cursor = start  # the pump was idle: it resumes from here
        return start

    async def _stream(self, sink: StreamSink) -> Callable[[], Awaitable[None]]:
        self._sinks[sink] = await self._subscribe_at()

        async def stop() -> None:
            self._sinks.pop(sink, None)

        return stop

    def _deliver(self, rows: list[Event]) -> None:
        """Offer new events (requests' copies included) to the streams."""
        for event_id, subject, data, _ in rows:
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

    async def _hand_to_servers(self, rows: list[Event]) -> None:
        """Claim the published events a server here matches; give each won to one of them."""
        wanted = [e for e in rows if not e.is_request and any(s.wants(e) for s in self._servers)]
        if not wanted:
            return
        try:
            won = await self._db(
                self._store.claim_events, [e.id for e in wanted], self._server_name
            )
        except sqlite3.Error as exc:
            _log.warning("publish_claim_failed", events=len(wanted), error=repr(exc))
            return
        for event in wanted:
            servers = [s for s in self._servers if s.wants(event)]  # (some may have stopped)
            if event.id in won and servers:
                servers[next(self._turn) % len(servers)].offer(event.data)

    # -- request and serve -----------------------------------------------------------------------

    async def _request(self, subject: str, data: bytes, timeout: float) -> bytes:
        deadline = asyncio.get_running_loop().time() + timeout
        try:
            async with asyncio.timeout_at(deadline):
                await self._outbox.flush()  # this messenger's earlier publishes come before it
        except TimeoutError:
            raise RequestTimeout(subject, timeout) from None
        request_id = await self._write_request(subject, data, timeout)
        reply: asyncio.Future[tuple[bytes, str]] = asyncio.get_running_loop().create_future()
        self._replies[request_id] = reply
        self._wake_servers()
        self._events.notify()
        try:
            async with asyncio.timeout_at(deadline):
                result, error = await reply
        except TimeoutError:
            await self._withdraw(request_id)
            raise RequestTimeout(subject, timeout) from None
        except asyncio.CancelledError:  # the asker gave up, or close(): no server may run it now
            self._withdraw_soon(request_id)
            raise
        finally:
            self._replies.pop(request_id, None)
        if error:
            raise RequestFailed(subject, error)
        return result

    async def _write_request(self, subject: str, data: bytes, timeout: float) -> int:
        """Write the request; if the asker is cancelled meanwhile, withdraw it once written."""
        loop = asyncio.get_running_loop()
        write = loop.run_in_executor(self._executor, self._store.request, subject, data, timeout)
        try:
            return await asyncio.shield(write)
        except asyncio.CancelledError:
            self._track(write, then_withdraw=True)
            raise
        except sqlite3.Error as exc:
            raise PublishFailed(f"could not write the request: {exc}") from exc

    async def _withdraw(self, request_id: int) -> None:
        try:
            await self._db(self._store.withdraw, request_id)
        except sqlite3.Error as exc:
            _log.warning("request_withdraw_failed", request=request_id, error=repr(exc))

    def _withdraw_soon(self, request_id: int) -> None:
        """Withdraw without waiting (the asker is being cancelled); ``close()`` waits for it."""
        loop = asyncio.get_running_loop()
        try:
            done = loop.run_in_executor(self._executor, self._store.withdraw, request_id)
        except RuntimeError:  # the database thread has ended: the messenger is closed
            _log.warning("request_withdraw_failed", request=request_id, error="closed")
            return
        self._track(done, then_withdraw=False)

    def _track(self, future: asyncio.Future[Any], *, then_withdraw: bool) -> None:
        """Keep ``future`` (a request's write or withdrawal) until done; ``then_withdraw``: the
        write's request id is withdrawn once it is known."""
        self._cleanups.add(future)

        def finished(future: asyncio.Future[Any]) -> None:
            self._cleanups.discard(future)
            if future.cancelled():
                return
            if (error := future.exception()) is None:
                if then_withdraw:
                    self._withdraw_soon(future.result())
            elif not then_withdraw:  # (a write that failed left nothing to withdraw)
                _log.warning("request_withdraw_failed", error=repr(error))

        future.add_done_callback(finished)

    def _wake_servers(self) -> None:
        for server in self._servers:
            server.wake.notify()

    async def _serve(
        self, pattern: Pattern, handler: Handler, counters: ServeCounters
    ) -> Callable[[], Awaitable[None]]:
        server = Server(pattern, handler, counters, self._server_inbox, await self._subscribe_at())
        self._servers[server] = asyncio.create_task(
            self._run_server(server), name=f"messenger-sqlite-serve:{pattern}"
        )

        async def stop() -> None:
            worker = self._servers.pop(server, None)
            if worker is not None:
                await _cancel(worker)

        return stop

    async def _run_server(self, server: Server) -> None:
        """Handle the publishes this server won and claim requests, until cancelled."""
        while True:
            for _ in range(min(len(server.inbox), _PUBLISHES_PER_CLAIM)):
                await run_handler(server.handler, server.inbox.popleft(), server.counters)
            try:
                claimed = await self._db(self._store.claim, server.pattern, self._server_name)
            except sqlite3.Error as exc:
                _log.warning("request_claim_failed", pattern=server.pattern.text, error=repr(exc))
                claimed = None
            if claimed is not None:
                data, error = await run_handler(server.handler, claimed.data, server.counters)
                try:
                    await self._db(self._store.reply, claimed.id, data, error)
                except sqlite3.Error as exc:
                    _log.warning("reply_write_failed", request=claimed.id, error=repr(exc))
                self._events.notify()
            elif not server.inbox:
                await server.wake.wait(self._poll)

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
        if self._sinks or self._servers:
            rows = await self._db(self._store.events_after, self._cursor)
            self._deliver(rows)
            await self._hand_to_servers(rows)
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
        """Rows in ``bus_events``, ``bus_requests``, ``bus_replies`` and ``bus_event_claims``."""
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
        for worker in list(self._servers.values()):
            await _cancel(worker)
        self._servers.clear()
        await _cancel(self._pump)
        while self._cleanups:  # requests given up on (close() cancelled them) are withdrawn
            await asyncio.wait(list(self._cleanups))
        try:
            await self._db(self._store.close)
        finally:
            self._executor.shutdown(wait=False)


def _retention(rows: int | None, seconds: float | None) -> Retention:
    """The retention of ``open``'s options (None: no bound), or ``UsageError`` naming one."""
    return Retention(
        None if rows is None else check_count("retention_rows", rows),
        None if seconds is None else check_seconds("retention_seconds", seconds),
    )


def _check_path(path: str) -> None:
    """``UsageError`` for a path that can never hold a bus shared by processes."""
    if path == "":
        raise UsageError("the SQLite bus needs a file path: sqlite:///var/lib/app/bus.db")
    if path == ":memory:":
        raise UsageError(
            "the SQLite bus needs a file that processes share, not ':memory:'; "
            "for one process use memory://"
        )


async def _open_store(
    executor: ThreadPoolExecutor,
    path: str | None,
    connection: sqlite3.Connection | None,
    busy_timeout: float,
) -> Store:
    """The store on ``path`` or ``connection``, opened on the database thread; sqlite3's errors
    as gravpy's (the one place they are translated for ``open``)."""
    loop = asyncio.get_running_loop()
    if connection is not None:
        store = Store(connection, owned=False)
        try:
            await loop.run_in_executor(executor, store.setup)
        except sqlite3.ProgrammingError as exc:
            raise UsageError(
                f"the connection cannot be used from the messenger's thread ({exc}); "
                "open it with check_same_thread=False"
            ) from exc
        except sqlite3.Error as exc:
            raise TransportError(f"cannot set up the SQLite bus on the connection: {exc}") from exc
        return store
    assert path is not None
    opener = functools.partial(_open_file, path, busy_timeout)
    return await loop.run_in_executor(executor, opener)


def _open_file(path: str, busy_timeout: float) -> Store:
    """``Store.open`` (on the database thread), or ``TransportError`` saying why it cannot be."""
    try:
        return Store.open(path, busy_timeout=busy_timeout)
    except sqlite3.Error as exc:
        if os.path.isdir(path):
            why = "it is a directory"
        elif not os.path.isdir(parent := os.path.dirname(os.path.abspath(path))):
            why = f"the directory {parent!r} does not exist"
        else:
            why = str(exc)
        raise TransportError(f"cannot open the SQLite bus at {path!r}: {why}") from exc


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise

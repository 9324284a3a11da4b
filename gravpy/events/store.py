"""``EventStore``: events kept for the record in one SQLite file (or ``:memory:``).

Theory of operation. One ``sqlite3`` connection lives in one worker thread (a single-thread
executor): every call hops there with ``run_in_executor`` and back, so the event loop never
blocks on the disk and the connection is only ever touched by its own thread. The standard library
is enough for that; ``aiosqlite`` would add a dependency that does the same hop.

The file is in WAL mode with ``synchronous=NORMAL`` (a commit is a write to the log, not an
fsync). Writes go through a group commit (``gravpy.events._commit``): ``persist`` calls that
arrive while a transaction is in flight share the next one, so many writers (a gravd serving many
apps) are not held to one transaction each; ``persist_many`` writes a batch in one transaction.

A file the store makes is readable by its own user only, whoever opens it (gravd or an app): mode
0600 whatever the umask (``gravpy._private_file``), and so, from SQLite, its ``-wal`` and
``-shm``; it holds users' events. A file that exists keeps its mode.

Opening checks the file at once: a file that is not a database, a schema from a newer gravpy, or a
database another process keeps locked past ``timeout`` raises ``EventStoreError`` with the path and
the reason, before anything else runs. Later failures (the disk is full) raise it from the call
that hit them; nothing escapes as a ``sqlite3`` exception (nor any other foreign one). A write
that fails while it shares a group commit with others is retried alone, each caller's rows in a
transaction of its own, so one bad event fails only its own caller.

Indexes: ``(user_id, severity, created_at)`` answers the inbox query (a user, some severities,
newest first, a page and the total) from the index alone, however many events other users have;
``(user_id, status, created_at)`` the unread count; ``(user_id, created_at)`` a user's timeline;
``(created_at)`` the unfiltered list and retention by age and count.

Retention: ``retain(max_count=, max_age=)`` deletes the oldest events beyond a count and those
older than an age. With ``max_count``/``max_age`` given to ``open``, the store applies them at
open and after every ``RETAIN_EVERY`` events it stores.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

from gravpy._private_file import create_private
from gravpy.errors import GravError, UsageError
from gravpy.events._commit import GroupCommit
from gravpy.events.event import Event, EventError, EventStatus, Severity, check_uuid
from gravpy.events.query import EventQuery, Page

if TYPE_CHECKING:
    from gravpy.events.remote import RemoteEventStore
    from gravpy.grav import Grav

__all__ = [
    "RETAIN_EVERY",
    "SCHEMA_VERSION",
    "EventStore",
    "EventStoreError",
    "EventStoreStatistics",
]

_log = logging.getLogger("gravpy.events.store")
T = TypeVar("T")
SCHEMA_VERSION: Final = 1
RETAIN_EVERY: Final = 1000
WRITE_QUEUE_LIMIT: Final = 10_000  # rows waiting for a transaction; more makes persist wait
_CACHE_KIB: Final = 64 * 1024
_NO_FILE: Final = (":memory:", "")  # names SQLite opens no file of ours for (memory, a temp file)
_COLUMNS: Final = (
    "id, operation_id, acted_upon, user_id, system_id, category, action, severity, "
    "description, metadata, status, created_at"
)
_SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS events (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        operation_id TEXT NOT NULL,
        acted_upon TEXT,
        user_id TEXT,
        system_id TEXT,
        category TEXT NOT NULL,
        action TEXT NOT NULL,
        severity TEXT NOT NULL,
        description TEXT NOT NULL,
        metadata TEXT NOT NULL,
        status TEXT NOT NULL,
        created_at REAL NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS events_user_severity ON events (user_id, severity, created_at)",
    "CREATE INDEX IF NOT EXISTS events_user_status ON events (user_id, status, created_at)",
    "CREATE INDEX IF NOT EXISTS events_user ON events (user_id, created_at)",
    "CREATE INDEX IF NOT EXISTS events_created ON events (created_at)",
)


class EventStoreError(GravError):
    """The event store cannot do its work: the file is corrupt, locked, unwritable or too new.

    ``path`` is the database; the message says what went wrong; ``__cause__`` keeps SQLite's error.
    """

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"event store {path}: {problem}")
        self.path = path
        self.problem = problem


@dataclass(frozen=True, slots=True)
class EventStoreStatistics:
    """Writes since the store opened."""

    transactions: int  # write transactions committed (concurrent persists share one)
    rows: int  # rows written in them (an id already stored counts, and changes nothing)


class EventStore:
    """Stored events with filtered, paged queries. ``store = await EventStore.open(path)``."""

    def __init__(
        self,
        path: str,
        conn: sqlite3.Connection,
        executor: ThreadPoolExecutor,
        *,
        max_count: int | None,
        max_age: float | None,
    ) -> None:
        self.path = path
        self._conn = conn
        self._executor = executor
        self.max_count = max_count
        self.max_age = max_age
        self._unretained = 0
        self._closed = False
        self._commit = GroupCommit(self._write, limit=WRITE_QUEUE_LIMIT)

    @classmethod
    async def open(
        cls,
        path: str | Path = ":memory:",
        *,
        timeout: float = 5.0,
        max_count: int | None = None,
        max_age: float | None = None,
    ) -> EventStore:
        """Open (creating if needed) the store at ``path``; raises ``EventStoreError`` at once
        if the file is not a usable events database or stays locked for ``timeout`` seconds.
        A bad argument is a ``UsageError``, before any file is touched."""
        name = os.fspath(path) if isinstance(path, str | os.PathLike) else None
        if not isinstance(name, str):
            raise UsageError(f"path must be a str or a path (or ':memory:'), got {path!r}")
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout >= 0:
            raise UsageError(f"timeout must be a number of seconds >= 0, got {timeout!r}")
        _check_limits(max_count, max_age)
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gravpy-events")
        loop = asyncio.get_running_loop()
        try:
            conn = await loop.run_in_executor(executor, _connect, name, timeout)
        except BaseException:
            executor.shutdown(wait=False)
            raise
        store = cls(name, conn, executor, max_count=max_count, max_age=max_age)
        if max_count is not None or max_age is not None:
            await store.retain(max_count=max_count, max_age=max_age)
        return store

    @staticmethod
    def remote(grav: Grav, node: str | None = None, *, timeout: float = 5.0) -> RemoteEventStore:
        """The store of the gravd ``grav`` is attached to (or of ``node``), over the mesh."""
        from gravpy.events.remote import RemoteEventStore

        return RemoteEventStore(grav, node, timeout=timeout)

    async def close(self) -> None:
        """Close the database and end the worker thread."""
        if self._closed:
            return
        await self._commit.close()
        self._closed = True
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._conn.close)
        finally:
            self._executor.shutdown(wait=False)

    async def __aenter__(self) -> EventStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- writing ---------------------------------------------------------------------------------

    async def persist(self, event: Event) -> None:
        """Store ``event`` (storing the same id again changes nothing)."""
        await self.persist_many((event,))

    async def persist_many(self, events: Iterable[Event]) -> None:
        """Store several events in one transaction. ``EventError`` (field ``event``) if one is
        not an ``Event``; ``EventStoreError`` if the write fails (then none of them is stored,
        and the events of other callers that shared the transaction are stored without them)."""
        if isinstance(events, Event | str | bytes | dict) or not isinstance(events, Iterable):
            raise EventError("events", f"expected an iterable of Event, got {events!r:.80}")
        rows = [_row(e) for e in events]
        if rows:
            if self._closed:
                raise UsageError("the event store is closed")
            await self._commit.submit(rows)

    async def _write(self, rows: list[tuple[Any, ...]]) -> None:
        await self._call(self._insert, rows)

    def _insert(self, rows: list[tuple[Any, ...]]) -> None:
        with self._conn:
            self._conn.executemany(
                f"INSERT OR IGNORE INTO events ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", rows
            )
        self._unretained += len(rows)
        if self._unretained >= RETAIN_EVERY and (self.max_count or self.max_age):
            self._retain(self.max_count, self.max_age, time.time())

    async def mark(self, event_id: str, status: EventStatus | str) -> Event | None:
        """Set an event's status; return the updated event, or None if no such event."""
        key = check_uuid("id", event_id)
        value = EventStatus.parse(status).value
        return await self._call(self._mark, key, value)

    def _mark(self, key: str, value: str) -> Event | None:
        with self._conn:
            self._conn.execute("UPDATE events SET status = ? WHERE id = ?", (value, key))
        return self._get(key)

    async def delete(self, event_id: str) -> bool:
        """Delete an event; True if it existed."""
        key = check_uuid("id", event_id)
        return await self._call(self._delete, key)

    def _delete(self, key: str) -> bool:
        with self._conn:
            return self._conn.execute("DELETE FROM events WHERE id = ?", (key,)).rowcount > 0

    async def retain(self, *, max_count: int | None = None, max_age: float | None = None) -> int:
        """Delete events beyond the newest ``max_count`` and older than ``max_age`` seconds;
        return how many were deleted. ``UsageError`` for the values ``open`` refuses (a count
        below 1, an age not above 0), before anything is deleted."""
        _check_limits(max_count, max_age)
        return await self._call(self._retain, max_count, max_age, time.time())

    def _retain(self, max_count: int | None, max_age: float | None, now: float) -> int:
        self._unretained = 0
        deleted = 0
        with self._conn:
            if max_age is not None:
                cursor = self._conn.execute(
                    "DELETE FROM events WHERE created_at < ?", (now - max_age,)
                )
                deleted += cursor.rowcount
            if max_count is not None:
                cursor = self._conn.execute(
                    "DELETE FROM events WHERE seq IN (SELECT seq FROM events "
                    "ORDER BY created_at DESC, seq DESC LIMIT -1 OFFSET ?)",
                    (max_count,),
                )
                deleted += cursor.rowcount
        return deleted

    # -- reading ---------------------------------------------------------------------------------

    async def query(self, query: EventQuery | None = None, **filters: Any) -> Page:
        """One page of the events that match (see ``EventQuery``), with the total.

        ``await store.query(user=uid, severity="error", page=2, page_size=20)``
        """
        return await self._call(self._query, EventQuery.from_arguments(query, filters))

    def _query(self, query: EventQuery) -> Page:
        where, args = query.where()
        direction = "DESC" if query.order == "newest" else "ASC"
        self._conn.execute("BEGIN")  # one read transaction: the total and the page agree
        try:
            total = self._conn.execute(f"SELECT count(*) FROM events WHERE {where}", args)
            count = int(total.fetchone()[0])
            rows = self._conn.execute(
                f"SELECT {_COLUMNS} FROM events WHERE {where} "
                f"ORDER BY created_at {direction}, seq {direction} LIMIT ? OFFSET ?",
                [*args, query.page_size, (query.page - 1) * query.page_size],
            ).fetchall()
        finally:
            self._conn.commit()
        return Page([_event(self.path, r) for r in rows], count, query.page, query.page_size)

    async def get(self, event_id: str) -> Event | None:
        """The event with this id, or None."""
        return await self._call(self._get, check_uuid("id", event_id))

    def _get(self, key: str) -> Event | None:
        row = self._conn.execute(f"SELECT {_COLUMNS} FROM events WHERE id = ?", (key,)).fetchone()
        return None if row is None else _event(self.path, row)

    def statistics(self) -> EventStoreStatistics:
        return EventStoreStatistics(self._commit.transactions, self._commit.rows)

    async def count(self) -> int:
        """How many events are stored."""
        return await self._call(self._count)

    def _count(self) -> int:
        return int(self._conn.execute("SELECT count(*) FROM events").fetchone()[0])

    # -- the worker thread -----------------------------------------------------------------------

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` in the store's thread, translating its errors (the one place):
        SQLite's, and whatever else a value no check foresaw makes it raise (a str it cannot
        bind), so that nothing foreign leaks out."""
        if self._closed:
            raise UsageError("the event store is closed")
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        except sqlite3.Error as exc:
            raise EventStoreError(self.path, _reason(exc)) from exc
        except GravError:
            raise
        except Exception as exc:
            raise EventStoreError(self.path, f"{type(exc).__name__}: {exc}") from exc


def _connect(path: str, timeout: float) -> sqlite3.Connection:
    """Open and check the database (in the worker thread), a file it makes private (mode 0600);
    raises ``EventStoreError``."""
    try:
        if path not in _NO_FILE:
            create_private(path)
        conn = sqlite3.connect(path, timeout=timeout, check_same_thread=False)
    except OSError as exc:
        raise EventStoreError(path, f"cannot open: {exc.strerror or exc}") from exc
    except sqlite3.Error as exc:
        raise EventStoreError(path, f"cannot open: {_reason(exc)}") from exc
    try:
        _prepare(conn, path)
    except sqlite3.Error as exc:
        conn.close()
        raise EventStoreError(path, _reason(exc)) from exc
    except BaseException:
        conn.close()
        raise
    return conn


def _prepare(conn: sqlite3.Connection, path: str) -> None:
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(f"PRAGMA cache_size={-_CACHE_KIB}")  # the indexes of 1M events stay in memory
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version > SCHEMA_VERSION:
        raise EventStoreError(path, f"schema version {version} is from a newer gravpy")
    with conn:
        conn.execute("BEGIN IMMEDIATE")  # fails here, at open, if another process holds a lock
        for statement in _SCHEMA:
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    _log.debug("event store %s open", path)


def _reason(exc: sqlite3.Error) -> str:
    text = str(exc)
    if "locked" in text or "busy" in text:
        return (
            f"{text} (another process holds the database; is a second gravd using this data dir?)"
        )
    if "not a database" in text or "malformed" in text:
        return f"{text} (the file is corrupt or not an events database; move it aside)"
    return text


def _check_limits(max_count: object, max_age: object) -> None:
    """Retention limits as ``open`` and ``retain`` take them; ``UsageError`` otherwise."""
    if max_count is not None and (
        isinstance(max_count, bool) or not isinstance(max_count, int) or max_count < 1
    ):
        raise UsageError(f"max_count must be an int >= 1 or None, got {max_count!r}")
    if max_age is not None and (
        isinstance(max_age, bool) or not isinstance(max_age, int | float) or not max_age > 0
    ):
        raise UsageError(f"max_age must be a number of seconds > 0 or None, got {max_age!r}")


def _row(event: object) -> tuple[Any, ...]:
    if not isinstance(event, Event):
        raise EventError("event", f"expected an Event, got {type(event).__name__}")
    return (
        event.id,
        event.operation_id,
        event.acted_upon,
        event.user_id,
        event.system_id,
        event.category,
        event.action,
        event.severity.value,
        event.description,
        event.metadata_json,
        event.status.value,
        event.created_at,
    )


def _event(path: str, row: Sequence[Any]) -> Event:
    """A stored row as an event (trusted: the store wrote it; a bad row is corruption)."""
    try:
        return Event(
            id=row[0],
            operation_id=row[1],
            acted_upon=row[2],
            user_id=row[3],
            system_id=row[4],
            category=row[5],
            action=row[6],
            severity=Severity(row[7]),
            description=row[8],
            metadata_json=row[9],
            status=EventStatus(row[10]),
            created_at=row[11],
        )
    except (ValueError, TypeError) as exc:
        raise EventStoreError(path, f"a stored event is malformed: {exc}") from exc

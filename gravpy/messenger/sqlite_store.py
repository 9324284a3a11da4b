"""The SQL behind ``SQLiteMessenger``: synchronous, run on the messenger's one database thread.

Theory of operation. Four tables, created when missing::

    bus_events    (id AUTOINCREMENT, subject, data, created,
                   request_id)                                        what publish writes, and
                                                                      a copy of each request
    bus_requests  (id AUTOINCREMENT, subject, data, created, deadline,
                   claimed_by, claimed_at)                            what request writes
    bus_replies   (request_id PRIMARY KEY, data, error, created)      what a server writes
    bus_event_claims (event_id PRIMARY KEY, claimed_by, created)      which messenger's server
                                                                      handles a published event

``AUTOINCREMENT`` keeps ids increasing even after old rows are deleted, so a reader's cursor (the
last id it saw) is all it needs: rows come back ``ORDER BY id``, which is commit order because
SQLite has one writer at a time. A server *claims* a request with
``UPDATE ... SET claimed_by = ? WHERE id = ? AND claimed_by IS NULL``: the update is atomic, so of
several servers (in any processes) exactly one sees a row count of 1 and handles it. Servers also
get published events, as NATS queue subscribers do: a messenger claims an event for its servers
with ``INSERT OR IGNORE INTO bus_event_claims``, which exactly one messenger wins. A request is
also written to ``bus_events`` (with its ``request_id``), in the same transaction, so streams see
requests; servers skip those copies (they claim the request itself). The database is in WAL mode,
so readers never block the writer and several processes share the file.

Every write commits before returning: with our own connection (autocommit) ``commit()`` is a no-op,
and with a caller's connection in Python's legacy transaction mode it ends the implicit transaction.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from gravpy.filter import Pattern

__all__ = ["Claimed", "Event", "Retention", "Store"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS bus_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    subject TEXT NOT NULL,
    data BLOB NOT NULL,
    created REAL NOT NULL,
    request_id INTEGER
);
CREATE TABLE IF NOT EXISTS bus_requests (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    subject TEXT NOT NULL,
    data BLOB NOT NULL,
    created REAL NOT NULL,
    deadline REAL NOT NULL,
    claimed_by TEXT,
    claimed_at REAL
);
CREATE INDEX IF NOT EXISTS bus_requests_open ON bus_requests(id) WHERE claimed_by IS NULL;
CREATE TABLE IF NOT EXISTS bus_replies (
    request_id INTEGER PRIMARY KEY,
    data BLOB NOT NULL,
    error TEXT,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS bus_event_claims (
    event_id INTEGER PRIMARY KEY,
    claimed_by TEXT NOT NULL,
    created REAL NOT NULL
);
"""
_REQUEST_COLUMN = "ALTER TABLE bus_events ADD COLUMN request_id INTEGER"  # files made before it

_CLAIM_BATCH = 64
_READ_BATCH = 1000
_IN_CHUNK = 500
_ORPHAN_SECONDS = 60.0  # replies and answered requests nobody collected are kept this long


@dataclass(frozen=True, slots=True)
class Retention:
    """How long events are kept: the newest ``rows`` of them, none older than ``seconds``."""

    rows: int | None = 100_000
    seconds: float | None = 3600.0


class Event(NamedTuple):
    """A row of ``bus_events``: ``is_request`` for the copy of a request (streams see it, servers
    claim the request itself)."""

    id: int
    subject: str
    data: bytes
    is_request: bool


@dataclass(frozen=True, slots=True)
class Claimed:
    """A request this server won."""

    id: int
    subject: str
    data: bytes


def _literal_prefix(pattern: Pattern) -> str:
    """The tokens before the first wildcard, with their trailing dot (``svc.`` for ``svc.*``)."""
    literal: list[str] = []
    for token in pattern.text.split("."):
        if token in ("*", ">"):
            break
        literal.append(token)
    return "".join(token + "." for token in literal)


class Store:
    """One connection and the statements of the bus. Call from one thread only."""

    def __init__(self, conn: sqlite3.Connection, *, owned: bool) -> None:
        self.conn = conn
        self.owned = owned

    @classmethod
    def open(cls, path: str, *, busy_timeout: float) -> Store:
        conn = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None)
        try:
            conn.execute("PRAGMA synchronous=NORMAL")
            store = cls(conn, owned=True)
            store.setup()
        except BaseException:
            conn.close()
            raise
        return store

    def setup(self) -> None:
        """WAL mode and the tables (created when missing)."""
        mode = self.conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal" and self.owned:
            raise sqlite3.OperationalError(f"could not switch the database to WAL (it is {mode})")
        self.conn.executescript(SCHEMA)
        columns = {row[1] for row in self.conn.execute("PRAGMA table_info(bus_events)")}
        if "request_id" not in columns:
            try:
                self.conn.execute(_REQUEST_COLUMN)
            except sqlite3.OperationalError as exc:  # another process added it meanwhile
                if "duplicate column" not in str(exc):
                    raise
        self.conn.commit()

    def close(self) -> None:
        if self.owned:
            self.conn.close()

    # -- events ----------------------------------------------------------------------------------

    def publish(self, subject: str, data: bytes) -> None:
        self.conn.execute(
            "INSERT INTO bus_events(subject, data, created) VALUES (?, ?, ?)",
            (subject, data, time.time()),
        )
        self.conn.commit()

    def publish_many(self, events: list[tuple[str, bytes]]) -> None:
        """Insert several events in one transaction, in order."""
        now = time.time()
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            self.conn.executemany(
                "INSERT INTO bus_events(subject, data, created) VALUES (?, ?, ?)",
                [(subject, data, now) for subject, data in events],
            )
        except BaseException:
            self.conn.rollback()
            raise
        self.conn.commit()

    def last_event_id(self) -> int:
        row = self.conn.execute(
            "SELECT seq FROM sqlite_sequence WHERE name='bus_events'"
        ).fetchone()
        return int(row[0]) if row else 0

    def events_after(self, cursor: int) -> list[Event]:
        """The next events after id ``cursor``, in order (requests' copies included)."""
        rows = self.conn.execute(
            "SELECT id, subject, data, request_id FROM bus_events WHERE id > ? ORDER BY id LIMIT ?",
            (cursor, _READ_BATCH),
        ).fetchall()
        return [Event(int(i), str(s), bytes(d), r is not None) for i, s, d, r in rows]

    def claim_events(self, event_ids: Sequence[int], server: str) -> set[int]:
        """Claim published events for ``server`` (a messenger's servers); the ids it won."""
        now = time.time()
        won: set[int] = set()
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            for event_id in event_ids:
                if self.conn.execute(
                    "INSERT OR IGNORE INTO bus_event_claims(event_id, claimed_by, created) "
                    "VALUES (?, ?, ?)",
                    (event_id, server, now),
                ).rowcount:
                    won.add(event_id)
        except BaseException:
            self.conn.rollback()
            raise
        self.conn.commit()
        return won

    # -- requests --------------------------------------------------------------------------------

    def request(self, subject: str, data: bytes, timeout: float) -> int:
        """Write a request, and its copy for the streams, in one transaction; return its id."""
        now = time.time()
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            request_id = self.conn.execute(
                "INSERT INTO bus_requests(subject, data, created, deadline) VALUES (?, ?, ?, ?)",
                (subject, data, now, now + timeout),
            ).lastrowid
            assert request_id is not None
            self.conn.execute(
                "INSERT INTO bus_events(subject, data, created, request_id) VALUES (?, ?, ?, ?)",
                (subject, data, now, request_id),
            )
        except BaseException:
            self.conn.rollback()
            raise
        self.conn.commit()
        return request_id

    def claim(self, pattern: Pattern, server: str) -> Claimed | None:
        """Claim the oldest open request matching ``pattern``, or None.

        SQL narrows the rows by the pattern's literal prefix (``svc.`` for ``svc.*.get``); the full
        match is ``Pattern.matches``. Rows that pass the prefix but not the match are paged past,
        ``_CLAIM_BATCH`` at a time, so no number of older requests for other subjects hides one.
        """
        now = time.time()
        after = 0
        while True:
            rows = self._open_requests(pattern, now, after)
            for request_id, subject, data in rows:
                if pattern.matches(subject) and self._take(request_id, server, now):
                    return Claimed(int(request_id), str(subject), bytes(data))
            if len(rows) < _CLAIM_BATCH:
                return None
            after = int(rows[-1][0])

    def _open_requests(
        self, pattern: Pattern, now: float, after: int
    ) -> list[tuple[int, str, bytes]]:
        """Up to ``_CLAIM_BATCH`` open, unexpired requests after id ``after`` that may match."""
        sql = "SELECT id, subject, data FROM bus_requests WHERE claimed_by IS NULL AND deadline > ?"
        args: list[object] = [now]
        if pattern.is_literal:
            sql += " AND subject = ?"
            args.append(pattern.text)
        elif prefix := _literal_prefix(pattern):
            sql += " AND substr(subject, 1, ?) = ?"
            args += [len(prefix), prefix]
        sql += " AND id > ? ORDER BY id LIMIT ?"
        return self.conn.execute(sql, (*args, after, _CLAIM_BATCH)).fetchall()

    def _take(self, request_id: int, server: str, now: float) -> bool:
        """Mark the request claimed by ``server``; True if this update won it."""
        won = self.conn.execute(
            "UPDATE bus_requests SET claimed_by = ?, claimed_at = ? "
            "WHERE id = ? AND claimed_by IS NULL",
            (server, now, request_id),
        ).rowcount
        self.conn.commit()
        return bool(won == 1)

    def reply(self, request_id: int, data: bytes, error: str) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO bus_replies(request_id, data, error, created) VALUES (?, ?, ?, ?)",
            (request_id, data, error or None, time.time()),
        )
        self.conn.commit()

    def take_replies(self, request_ids: Sequence[int]) -> list[tuple[int, bytes, str]]:
        """The replies that arrived for these requests; they and their requests are deleted."""
        found: list[tuple[int, bytes, str]] = []
        for start in range(0, len(request_ids), _IN_CHUNK):
            chunk = list(request_ids[start : start + _IN_CHUNK])
            marks = ",".join("?" * len(chunk))
            rows = self.conn.execute(
                f"SELECT request_id, data, error FROM bus_replies WHERE request_id IN ({marks})",
                chunk,
            ).fetchall()
            found.extend((int(i), bytes(d), e or "") for i, d, e in rows)
        if found:
            taken = [(i,) for i, _, _ in found]
            self.conn.executemany("DELETE FROM bus_replies WHERE request_id = ?", taken)
            self.conn.executemany("DELETE FROM bus_requests WHERE id = ?", taken)
            self.conn.commit()
        return found

    def withdraw(self, request_id: int) -> None:
        """Forget a request its asker gave up on (a late reply is pruned later)."""
        self.conn.execute("DELETE FROM bus_requests WHERE id = ?", (request_id,))
        self.conn.commit()

    # -- retention -------------------------------------------------------------------------------

    def prune(self, retention: Retention) -> int:
        """Delete events past the retention, and stale requests and replies; return how many."""
        now = time.time()
        deleted = 0
        if retention.rows is not None:
            deleted += self.conn.execute(
                "DELETE FROM bus_events WHERE id <= "
                "(SELECT seq FROM sqlite_sequence WHERE name='bus_events') - ?",
                (retention.rows,),
            ).rowcount
        if retention.seconds is not None:
            deleted += self.conn.execute(
                "DELETE FROM bus_events WHERE created < ?", (now - retention.seconds,)
            ).rowcount
        deleted += self.conn.execute(
            "DELETE FROM bus_requests WHERE deadline < ?", (now - _ORPHAN_SECONDS,)
        ).rowcount
        deleted += self.conn.execute(
            "DELETE FROM bus_replies WHERE created < ?", (now - _ORPHAN_SECONDS,)
        ).rowcount
        deleted += self.conn.execute(  # claims of events gone, once no late reader can race them
            "DELETE FROM bus_event_claims WHERE created < ? AND event_id < "
            "coalesce((SELECT min(id) FROM bus_events), "
            "(SELECT seq FROM sqlite_sequence WHERE name='bus_events') + 1, 0)",
            (now - _ORPHAN_SECONDS,),
        ).rowcount
        self.conn.commit()
        return deleted

    def counts(self) -> dict[str, int]:
        """Rows per table (for tests and operators)."""
        return {
            table: int(self.conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
            for table in ("bus_events", "bus_requests", "bus_replies", "bus_event_claims")
        }

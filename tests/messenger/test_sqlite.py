"""SQLiteMessenger on a real file: conformance, retention, a caller's connection."""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
from pathlib import Path

import pytest

from gravpy.errors import MessengerClosed, PublishFailed, TransportError, UsageError
from gravpy.messenger import Messenger, SQLiteMessenger, open_messenger
from gravpy.testing import check_messenger


async def test_sqlite_messenger_passes_the_conformance_check(tmp_path: Path) -> None:
    """The SQLite backend passes check_messenger, with RequestTimeout for no server."""
    numbers = itertools.count()

    async def factory() -> Messenger:
        return await open_messenger(f"sqlite://{tmp_path}/bus{next(numbers)}.db")

    await check_messenger(factory, no_responders=False)


async def test_the_database_is_in_wal_mode_with_the_four_tables(tmp_path: Path) -> None:
    """Opening creates bus_events, bus_requests, bus_replies and bus_event_claims and switches
    the file to WAL."""
    path = tmp_path / "bus.db"
    async with await SQLiteMessenger.open(str(path)):
        pass
    with sqlite3.connect(path) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    conn.close()
    assert {"bus_events", "bus_requests", "bus_replies", "bus_event_claims"} <= tables
    assert mode == "wal"


async def test_retention_keeps_only_the_newest_rows(tmp_path: Path) -> None:
    """With retention_rows=10, pruning leaves the 10 newest events of 50."""
    async with await SQLiteMessenger.open(
        str(tmp_path / "bus.db"), retention_rows=10, prune_interval=3600
    ) as m:
        for i in range(50):
            await m.publish("kept.events", b"%d" % i)
        await m.prune()
        assert (await m.table_counts())["bus_events"] == 10


async def test_a_stream_only_sees_events_from_its_subscription_on(tmp_path: Path) -> None:
    """Events committed before stream() are not delivered; later ones are."""
    async with await SQLiteMessenger.open(str(tmp_path / "bus.db")) as m:
        await m.publish("late.events", b"old")
        q: asyncio.Queue[bytes] = asyncio.Queue()
        await m.stream("late.events", q)
        await m.publish("late.events", b"new")
        assert await q.get() == b"new"
        assert q.empty()


async def test_a_callers_connection_is_used_and_not_closed(tmp_path: Path) -> None:
    """close() leaves a caller-provided connection open and usable."""
    conn = sqlite3.connect(tmp_path / "bus.db", check_same_thread=False)
    try:
        async with await SQLiteMessenger.open(connection=conn) as m:
            await m.publish("own.conn", b"x")
        assert conn.execute("SELECT count(*) FROM bus_events").fetchone()[0] == 1
    finally:
        conn.close()


async def test_retention_by_age_removes_old_events(tmp_path: Path) -> None:
    """With a retention age shorter than the events' age, pruning removes them all."""
    async with await SQLiteMessenger.open(
        str(tmp_path / "bus.db"), retention_rows=None, retention_seconds=1e-6, prune_interval=3600
    ) as m:
        for i in range(5):
            await m.publish("aged.events", b"%d" % i)
        assert (await m.table_counts())["bus_events"] == 5
        await m.prune()
        assert (await m.table_counts())["bus_events"] == 0


async def test_a_locked_database_stalls_publish_into_publish_failed_without_loss(
    tmp_path: Path,
) -> None:
    """While another connection holds the write lock, a full outbox makes publish raise
    PublishFailed; the events already queued are committed once the lock is released."""
    path = tmp_path / "bus.db"
    async with await SQLiteMessenger.open(str(path), outbox_limit=2, busy_timeout=0.1) as m:
        q: asyncio.Queue[bytes] = asyncio.Queue()
        await m.stream("locked.events", q)
        blocker = sqlite3.connect(path, isolation_level=None)
        try:
            blocker.execute("BEGIN IMMEDIATE")
            await m.publish("locked.events", b"1")
            await m.publish("locked.events", b"2")
            with pytest.raises(PublishFailed, match="outbox is full"):
                await m.publish("locked.events", b"3")
        finally:
            blocker.rollback()
            blocker.close()
        await m.flush()
        assert [await q.get(), await q.get()] == [b"1", b"2"]


@pytest.mark.parametrize(
    ("pattern", "other"),
    [("svc.*", "queued.other.x"), ("*.echo", "queued.other.x"), ("svc.*", "svc.deep.other")],
)
async def test_a_wildcard_server_reaches_its_request_behind_many_unrelated_ones(
    tmp_path: Path, pattern: str, other: str
) -> None:
    """A server on a pattern claims the oldest request it matches even when more than a claim
    batch (64) of older, unclaimed requests for other subjects wait before it."""
    unrelated: list[asyncio.Task[bytes]] = []

    async def echo(data: bytes) -> bytes:
        return data

    try:
        async with await SQLiteMessenger.open(str(tmp_path / "bus.db")) as m:
            for i in range(150):
                unrelated.append(asyncio.create_task(m.request(other, b"%d" % i)))
            await asyncio.sleep(0)  # each task queues its insert on the one database thread
            assert (await m.table_counts())["bus_requests"] == len(unrelated)  # queued after them
            await m.serve(pattern, echo)
            assert await m.request("svc.echo", b"found", timeout=5.0) == b"found"
            assert not any(task.done() for task in unrelated)
    finally:
        await asyncio.gather(*unrelated, return_exceptions=True)  # closing ended them


async def _open_requests(m: SQLiteMessenger) -> int:
    return (await m.table_counts())["bus_requests"]


async def _until_requests(m: SQLiteMessenger, n: int) -> None:
    """Re-read the table until it holds ``n`` requests (each read is a hop on the database
    thread, behind the writes queued before it; the test's timeout is the guard)."""
    while await _open_requests(m) != n:
        pass


async def _first_request_served(path: Path) -> bytes:
    """What a new server on the file handles first, when a fresh request follows: a request
    left behind in the file would come first (the oldest is claimed first)."""
    handled: asyncio.Queue[bytes] = asyncio.Queue()

    async def record(data: bytes) -> bytes:
        handled.put_nowait(data)
        return b"done"

    async with await SQLiteMessenger.open(str(path)) as m:
        await m.serve("ghost.charge", record)
        assert await m.request("ghost.charge", b"fresh", timeout=5.0) == b"done"
        return await handled.get()


async def test_a_cancelled_request_is_withdrawn_and_never_runs_later(tmp_path: Path) -> None:
    """A request whose asker is cancelled is removed from the file (CancelledError still reaches
    the asker), so a server started later does not run it."""
    path = tmp_path / "bus.db"
    async with await SQLiteMessenger.open(str(path)) as m:
        ask = asyncio.create_task(m.request("ghost.charge", b"card-42", timeout=30.0))
        await _until_requests(m, 1)
        ask.cancel()
        with pytest.raises(asyncio.CancelledError):
            await ask
        assert await _open_requests(m) == 0
    assert await _first_request_served(path) == b"fresh"


async def test_a_request_pending_at_close_is_withdrawn_and_never_runs_later(
    tmp_path: Path,
) -> None:
    """close() ends a waiting request with MessengerClosed and removes it from the file, so a
    server started later does not run it."""
    path = tmp_path / "bus.db"
    m = await SQLiteMessenger.open(str(path))
    ask = asyncio.create_task(m.request("ghost.charge", b"card-43", timeout=30.0))
    await _until_requests(m, 1)
    await m.close()
    with pytest.raises(MessengerClosed):
        await ask
    with sqlite3.connect(path) as conn:
        left = conn.execute("SELECT count(*) FROM bus_requests").fetchone()[0]
    conn.close()
    assert left == 0
    assert await _first_request_served(path) == b"fresh"


async def test_a_request_cancelled_while_being_written_is_withdrawn_once_written(
    tmp_path: Path,
) -> None:
    """An asker cancelled while its request waits for the write lock still leaves no request
    behind: the row is withdrawn once written, and close() waits for that."""
    path = tmp_path / "bus.db"
    m = await SQLiteMessenger.open(str(path))
    blocker = sqlite3.connect(path, isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")  # the request's insert waits for this lock
        ask = asyncio.create_task(m.request("ghost.charge", b"card-44", timeout=30.0))
        await asyncio.sleep(0)  # the task hands its insert to the database thread in its first step
        ask.cancel()
        with pytest.raises(asyncio.CancelledError):
            await ask
    finally:
        blocker.rollback()
        blocker.close()
    await m.close()
    with sqlite3.connect(path) as conn:
        written = conn.execute("SELECT count(*) FROM bus_events WHERE request_id IS NOT NULL")
        left = conn.execute("SELECT count(*) FROM bus_requests")
        counts = (written.fetchone()[0], left.fetchone()[0])
    conn.close()
    assert counts == (1, 0)  # it was written (its copy for streams stays), then withdrawn
    assert await _first_request_served(path) == b"fresh"


@pytest.mark.parametrize(
    ("where", "why"),
    [
        ("missing/bus.db", "does not exist"),
        (".", "is a directory"),
        ("notes.txt", "not a database"),
    ],
)
async def test_a_path_that_cannot_hold_the_bus_raises_transport_error_naming_it(
    tmp_path: Path, where: str, why: str
) -> None:
    """open_messenger("sqlite:///...") on a missing directory, a directory or a file that is not
    a database raises TransportError naming the path and why, with sqlite3's error as cause."""
    (tmp_path / "notes.txt").write_text("plain text, not a database " * 10)
    path = str(tmp_path / where)
    with pytest.raises(TransportError, match=why) as caught:
        await open_messenger(f"sqlite://{path}")
    assert repr(path) in str(caught.value)
    assert isinstance(caught.value.__cause__, sqlite3.Error)


async def test_an_in_memory_database_is_refused_with_usage_error() -> None:
    """sqlite://:memory: raises UsageError: the bus is a file that processes share."""
    with pytest.raises(UsageError, match=":memory:"):
        await open_messenger("sqlite://:memory:")


async def test_each_publish_is_handled_by_one_server_of_two_messengers(tmp_path: Path) -> None:
    """Two messengers on one file both serve a subject: each event published on it is handled
    by exactly one of their servers."""
    path = str(tmp_path / "bus.db")
    handled: list[bytes] = []

    async def record(data: bytes) -> bytes:
        handled.append(data)
        return data

    sent = [b"%d" % i for i in range(50)]
    async with (
        await SQLiteMessenger.open(path) as a,
        await SQLiteMessenger.open(path) as b,
        await SQLiteMessenger.open(path) as publisher,
    ):
        served = [await a.serve("work.items", record), await b.serve("work.items", record)]
        for data in sent:
            await publisher.publish("work.items", data)
        await publisher.flush()
        while len(handled) < len(sent):
            await a.table_counts()  # a hop on a's database thread while the servers work
        received = sum(sub.statistics().received for sub in served)
    assert sorted(handled, key=int) == sent
    assert received == len(sent)


async def test_a_file_made_before_request_copies_is_upgraded_on_open(tmp_path: Path) -> None:
    """A bus file whose bus_events lacks the request_id column gains it on open, keeps its
    events, and its streams then see requests."""
    path = tmp_path / "bus.db"
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE bus_events (id INTEGER PRIMARY KEY AUTOINCREMENT, "
            "subject TEXT NOT NULL, data BLOB NOT NULL, created REAL NOT NULL)"
        )
        conn.execute("INSERT INTO bus_events(subject, data, created) VALUES ('old.x', x'00', 0)")
    conn.close()
    async with await SQLiteMessenger.open(str(path), retention_seconds=None) as m:
        assert (await m.table_counts())["bus_events"] == 1
        heard: asyncio.Queue[bytes] = asyncio.Queue()
        await m.stream("old.svc", heard)
        with pytest.raises(TimeoutError):
            await m.request("old.svc", b"anyone?", timeout=0.2)
        assert await heard.get() == b"anyone?"

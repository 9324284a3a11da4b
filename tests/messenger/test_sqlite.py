"""SQLiteMessenger on a real file: conformance, retention, a caller's connection."""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
from pathlib import Path

import pytest

from gravpy.errors import PublishFailed
from gravpy.messenger import Messenger, SQLiteMessenger, open_messenger
from gravpy.testing import check_messenger


async def test_sqlite_messenger_passes_the_conformance_check(tmp_path: Path) -> None:
    """The SQLite backend passes check_messenger, with RequestTimeout for no server."""
    numbers = itertools.count()

    async def factory() -> Messenger:
        return await open_messenger(f"sqlite://{tmp_path}/bus{next(numbers)}.db")

    await check_messenger(factory, no_responders=False)


async def test_the_database_is_in_wal_mode_with_the_three_tables(tmp_path: Path) -> None:
    """Opening creates bus_events, bus_requests and bus_replies and switches the file to WAL."""
    path = tmp_path / "bus.db"
    async with await SQLiteMessenger.open(str(path)):
        pass
    with sqlite3.connect(path) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    conn.close()
    assert {"bus_events", "bus_requests", "bus_replies"} <= tables
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

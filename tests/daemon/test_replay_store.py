"""The durable replay buffer without a gravd: what the writer takes, and numbers kept in the file
(a real SQLite file in a temporary directory)."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from gravpy.buffer import MsgBuffer
from gravpy.daemon.replay_store import GATHER_SECONDS, REPLAY_FILE, ReplayStore, ReplayStoreError
from gravpy.message import Message
from gravpy.testing import capture_logs


def _msg(i: int) -> Message:
    return Message.new("store.x", i.to_bytes(4, "big"))


def _numbers(entries: list[tuple[float, Message, int]]) -> list[int]:
    return [int.from_bytes(m.data, "big") for _, m, _ in entries]


async def test_the_writer_takes_what_was_pushed_since_its_last_turn_and_is_still_held() -> None:
    """Ten pushes into a buffer of five: the writer takes the five held (the evicted ones have
    left the buffer); two more pushes: it takes those two only."""
    buffer = MsgBuffer(5)
    for i in range(10):
        buffer.push(_msg(i), None, i + 1)
    assert _numbers(buffer.take_new()) == [5, 6, 7, 8, 9]
    for i in range(10, 12):
        buffer.push(_msg(i), None, i + 1)
    taken = buffer.take_new()
    assert _numbers(taken) == [10, 11]
    assert [seq for _, _, seq in taken] == [11, 12]
    assert buffer.take_new() == []


async def test_numbers_come_back_from_the_file_only_for_a_node_that_kept_its_uuid(
    tmp_path: Path,
) -> None:
    """Entries written with their origin numbers are restored numbered (and not written again)
    when asked to, unnumbered otherwise; the highest number is reported either way."""
    buffer = MsgBuffer(100)
    store = await ReplayStore.open(tmp_path, buffer)
    for i in range(3):
        buffer.push(_msg(i), None, 40 + i)
    await store.close()
    kept = MsgBuffer(100)
    store = await ReplayStore.open(tmp_path, kept, numbered=True)
    await store.close()
    assert store.highest_seq == 42
    entries, oldest = kept.sequenced_after(0)
    assert [(seq, int.from_bytes(m.data, "big")) for seq, m in entries] == [
        (40, 0),
        (41, 1),
        (42, 2),
    ]
    assert oldest == 40
    assert kept.take_new() == []  # restored: not handed to the writer again
    fresh = MsgBuffer(100)
    store = await ReplayStore.open(tmp_path, fresh)
    await store.close()
    assert store.highest_seq == 42
    assert fresh.last_seq() == 0
    assert len(fresh) == 3


def _held(buffer: MsgBuffer) -> list[int]:
    return [int.from_bytes(m.data, "big") for m in buffer]


async def _keep(data_dir: Path, buffer: MsgBuffer, numbers: range) -> None:
    """One gravd run on ``data_dir``: restore into ``buffer``, push ``numbers``, stop cleanly."""
    store = await ReplayStore.open(data_dir, buffer, numbered=True)
    for i in numbers:
        buffer.push(_msg(i), None, i + 1)
    await store.close()


async def test_a_restart_with_a_smaller_buffer_keeps_only_what_it_restored(tmp_path: Path) -> None:
    """1,000 messages kept in three runs, a restart with a buffer of 100, then one of 1,000 again:
    the last restores the 100 the small buffer held, not the 900 it had already let go."""
    for numbers in (range(400), range(400, 800), range(800, 1000)):
        await _keep(tmp_path, MsgBuffer(1000), numbers)
    small = MsgBuffer(100)
    await _keep(tmp_path, small, range(0))
    assert _held(small) == list(range(900, 1000))
    again = MsgBuffer(1000)
    await _keep(tmp_path, again, range(0))
    assert _held(again) == list(range(900, 1000))


async def test_what_left_the_buffer_while_it_ran_does_not_come_back(tmp_path: Path) -> None:
    """A run with a buffer of 100 restores 100 and pushes 50 more (the oldest 50 leave): the next
    run, with a larger buffer, restores the 100 it held when it stopped."""
    await _keep(tmp_path, MsgBuffer(100), range(100))
    await _keep(tmp_path, MsgBuffer(100), range(100, 150))
    again = MsgBuffer(1000)
    await _keep(tmp_path, again, range(0))
    assert _held(again) == list(range(50, 150))


async def test_a_run_with_no_buffer_leaves_nothing_to_replay_later(tmp_path: Path) -> None:
    """A restart with a buffer of size 0 holds nothing, so a later one restores nothing."""
    await _keep(tmp_path, MsgBuffer(100), range(100))
    await _keep(tmp_path, MsgBuffer(0), range(100, 110))
    again = MsgBuffer(100)
    await _keep(tmp_path, again, range(0))
    assert _held(again) == []


@contextlib.contextmanager
def _locked(data_dir: Path, *, exclusive: bool = False) -> Iterator[None]:
    """The replay file held by another process's write transaction while the block runs (in
    ``exclusive`` locking mode, which keeps readers out too)."""
    holder = sqlite3.connect(data_dir / REPLAY_FILE, isolation_level=None)
    try:
        if exclusive:
            holder.execute("PRAGMA locking_mode=EXCLUSIVE")
        holder.execute("BEGIN EXCLUSIVE")
        yield
    finally:
        holder.close()


@pytest.mark.parametrize("exclusive", [False, True], ids=["writers_out", "readers_out"])
async def test_a_replay_file_another_process_holds_stops_the_open_and_stays(
    tmp_path: Path, exclusive: bool
) -> None:
    """A replay file locked by another process for longer than the lock timeout: the open fails
    with ReplayStoreError saying so, and the file is not moved aside; freed, it opens."""
    await _keep(tmp_path, MsgBuffer(100), range(10))
    files = await asyncio.to_thread(_names, tmp_path)
    with _locked(tmp_path, exclusive=exclusive), pytest.raises(ReplayStoreError, match="locked"):
        await ReplayStore.open(tmp_path, MsgBuffer(100), lock_timeout=0.05)
    assert await asyncio.to_thread(_names, tmp_path) == files
    again = MsgBuffer(100)
    await _keep(tmp_path, again, range(0))
    assert _held(again) == list(range(10))


def _names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


async def _failing_turn(store: ReplayStore) -> None:
    """Wait until the writer's turn has failed at least once."""
    while True:
        if store.statistics().write_failures:
            return
        await asyncio.sleep(GATHER_SECONDS)  # the writer's own period: no event to wait on


async def test_a_batch_that_failed_to_be_written_goes_in_with_the_next(tmp_path: Path) -> None:
    """Fifty pushes while another process holds the file (the writer fails), fifty more once it
    is free: all hundred are in the file, the failure is counted, nothing is given up on."""
    buffer = MsgBuffer(1000)
    store = await ReplayStore.open(tmp_path, buffer, lock_timeout=0.05)
    with _locked(tmp_path):
        for i in range(50):
            buffer.push(_msg(i), None, i + 1)
        await _failing_turn(store)
    for i in range(50, 100):
        buffer.push(_msg(i), None, i + 1)
    await store.close()
    stats = store.statistics()
    assert (stats.written, stats.unwritten) == (100, 0)
    assert stats.write_failures >= 1
    again = MsgBuffer(1000)
    await _keep(tmp_path, again, range(0))
    assert _held(again) == list(range(100))


async def test_what_a_failing_file_cannot_keep_past_the_retry_limit_is_counted(
    tmp_path: Path,
) -> None:
    """With a retry limit of 20, fifty pushes while the file is held: the oldest thirty are given
    up on and counted; the buffer still holds all fifty, the file the newest twenty."""
    buffer = MsgBuffer(1000)
    store = await ReplayStore.open(tmp_path, buffer, lock_timeout=0.05, retry_limit=20)
    with _locked(tmp_path):
        for i in range(50):
            buffer.push(_msg(i), None, i + 1)
        await _failing_turn(store)
    await store.close()
    assert store.statistics().unwritten == 30
    assert _held(buffer) == list(range(50))
    again = MsgBuffer(1000)
    await _keep(tmp_path, again, range(0))
    assert _held(again) == list(range(30, 50))


async def test_an_unreadable_replay_file_is_reported_as_one_structured_event(
    tmp_path: Path,
) -> None:
    """A replay file that is not a database is set aside with one store_unreadable event that
    names the store, the file, where it went and SQLite's reason, each as a field."""
    bad = tmp_path / REPLAY_FILE
    await asyncio.to_thread(bad.write_bytes, b"this is not a database\n" * 100)
    with capture_logs(logger="gravpy.daemon") as logs:
        store = await ReplayStore.open(tmp_path, MsgBuffer(10))
        await store.close()
    [said] = [e for e in logs if e["log_level"] == "warning"]
    assert (said["event"], said["store"], said["path"], said["moved_to"]) == (
        "store_unreadable",
        "replay store",
        str(bad),
        str(store.set_aside),
    )
    assert "not a database" in said["error"]

"""What gravd finds in a data dir it did not leave as it is: an events file of another mesh, a
replay file copied from another node, entries written before the clock was set back; and the
mode of the events file it makes (real SQLite files in a temporary directory, no gravd
process)."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import shutil
import sqlite3
import stat
import time
import uuid
from pathlib import Path

import pytest

from gravpy import Grav, Message
from gravpy.buffer import MsgBuffer
from gravpy.daemon.config import DaemonConfig
from gravpy.daemon.events_node import EVENTS_FILE, DaemonEvents
from gravpy.daemon.replay_store import REPLAY_FILE, ReplayStore
from gravpy.events import Event
from gravpy.testing import capture_logs

NODE_A = str(uuid.uuid4())
NODE_B = str(uuid.uuid4())


def _msg(text: str) -> Message:
    return Message.new("left.x", text.encode())


async def _open_events(grav: Grav, data_dir: Path, mesh: str) -> DaemonEvents:
    return await DaemonEvents.open(grav, DaemonConfig(data_dir=data_dir, mesh=mesh))


def _user_event(user: str, description: str) -> Event:
    return (
        Event.builder()
        .from_user(user)
        .with_category("app")
        .with_action("noted")
        .with_description(description)
        .build()
    )


async def test_a_data_dir_reused_in_another_mesh_shows_none_of_its_events(tmp_path: Path) -> None:
    """gravd's events.sqlite3 written in mesh lab and opened on the same data dir in mesh prod is
    moved aside (events.sqlite3.other-mesh-TIME, logged with the reason) and prod's inbox shows
    none of lab's events, only its own."""
    user = str(uuid.uuid4())
    async with Grav() as grav:
        lab = await _open_events(grav, tmp_path, "lab")
        await lab.store.persist(_user_event(user, "seen in lab"))
        await lab.close()
        with capture_logs(logger="gravpy.daemon") as logs:
            prod = await _open_events(grav, tmp_path, "prod")
        inbox = await prod.store.query(user=user)
        every = await prod.store.query()
        await prod.close()
    assert inbox.total == 0
    assert [e.description for e in every.events] == [
        "gravd started with its configuration (mesh 'prod')"
    ]
    [said] = [e for e in logs if e["event"] == "events_store_set_aside"]
    moved = Path(said["moved_to"])
    assert (said["log_level"], said["path"]) == ("warning", str(tmp_path / EVENTS_FILE))
    assert "'lab'" in said["reason"]
    assert moved.name.startswith(f"{EVENTS_FILE}.other-mesh-")
    assert await asyncio.to_thread(moved.exists)


async def test_an_events_file_of_this_mesh_is_kept_across_starts(tmp_path: Path) -> None:
    """gravd's events.sqlite3 reopened in the same mesh (with a new node uuid, as the default data
    dir's gravd has at every start) keeps its events and is not set aside."""
    user = str(uuid.uuid4())
    async with Grav() as first:
        events = await _open_events(first, tmp_path, "lab")
        await events.store.persist(_user_event(user, "seen in lab"))
        await events.close()
    async with Grav() as second:
        with capture_logs(logger="gravpy.daemon") as logs:
            events = await _open_events(second, tmp_path, "lab")
        inbox = await events.store.query(user=user)
        await events.close()
    assert [e.description for e in inbox.events] == ["seen in lab"]
    assert "events_store_set_aside" not in [e["event"] for e in logs]


def _modes(data_dir: Path, *names: str) -> dict[str, int | None]:
    """The permission bits of each file named (None: no such file)."""
    paths = {name: data_dir / name for name in names}
    return {
        name: stat.S_IMODE(p.stat().st_mode) if p.exists() else None for name, p in paths.items()
    }


async def test_the_events_file_gravd_makes_is_readable_by_its_user_only(tmp_path: Path) -> None:
    """gravd's events.sqlite3 made under a permissive umask (000) is mode 0600, its -wal and -shm
    too, as replay.sqlite3 is: no other local user reads its users' events."""
    files = (EVENTS_FILE, f"{EVENTS_FILE}-wal", f"{EVENTS_FILE}-shm")
    permissive = os.umask(0)
    try:
        async with Grav() as grav:
            events = await _open_events(grav, tmp_path, "lab")
            await events.store.persist(_user_event(str(uuid.uuid4()), "private"))
            modes = await asyncio.to_thread(_modes, tmp_path, *files)
            await events.close()
    finally:
        os.umask(permissive)
    assert modes == dict.fromkeys(files, 0o600)


async def test_an_events_file_that_exists_keeps_its_mode(tmp_path: Path) -> None:
    """An events.sqlite3 the operator made mode 0640 (for a backup group, say) keeps that mode
    when gravd opens it and writes to it."""
    path = tmp_path / EVENTS_FILE
    await asyncio.to_thread(path.touch)
    await asyncio.to_thread(path.chmod, 0o640)
    async with Grav() as grav:
        events = await _open_events(grav, tmp_path, "lab")
        await events.store.persist(_user_event(str(uuid.uuid4()), "kept"))
        await events.close()
    assert await asyncio.to_thread(_modes, tmp_path, EVENTS_FILE) == {EVENTS_FILE: 0o640}


async def _write_replay(data_dir: Path, node: str, *entries: tuple[str, int, float]) -> None:
    """A replay file written by ``node`` (which kept its uuid) in mesh lab: ``(text, number,
    pushed at)`` per message, a time of 0 meaning now."""
    buffer = MsgBuffer(100)
    store = await ReplayStore.open(data_dir, buffer, numbered=True, mesh="lab", node=node)
    for text, seq, at in entries:
        buffer.push(_msg(text), None, seq, at)
    await store.close()


async def test_a_replay_file_copied_from_another_node_is_set_aside_not_resent_as_its_own(
    tmp_path: Path,
) -> None:
    """A replay.sqlite3 that node A wrote, copied into node B's data dir, is moved aside at B's
    start (replay.sqlite3.other-node-TIME, naming A): B restores none of A's numbered messages
    and numbers from scratch, so it never resends them as its own."""
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    await _write_replay(a_dir, NODE_A, ("from A", 7, 0.0), ("from A too", 8, 0.0))
    await asyncio.to_thread(b_dir.mkdir)
    await asyncio.to_thread(shutil.copy, a_dir / REPLAY_FILE, b_dir / REPLAY_FILE)
    buffer = MsgBuffer(100)
    store = await ReplayStore.open(b_dir, buffer, numbered=True, mesh="lab", node=NODE_B)
    await store.close()
    assert list(buffer) == []
    assert buffer.sequenced_after(0) == ([], 0)
    assert store.highest_seq == 0
    assert store.set_aside is not None
    assert store.set_aside.name.startswith(f"{REPLAY_FILE}.other-node-")
    assert NODE_A in store.set_aside_why
    assert await asyncio.to_thread(store.set_aside.exists)


async def test_a_replay_file_keeps_the_node_that_wrote_it(tmp_path: Path) -> None:
    """A node that kept its uuid restores its own replay file numbered; a node whose uuid is new
    at every start (the default data dir) restores another uuid's file unnumbered, as before,
    and the file then names it."""
    await _write_replay(tmp_path, NODE_A, ("mine", 7, 0.0))
    again = MsgBuffer(100)
    store = await ReplayStore.open(tmp_path, again, numbered=True, mesh="lab", node=NODE_A)
    await store.close()
    assert store.set_aside is None
    assert [(seq, m.data) for seq, m in again.sequenced_after(0)[0]] == [(7, b"mine")]
    fresh = MsgBuffer(100)
    store = await ReplayStore.open(tmp_path, fresh, mesh="lab", node=NODE_B)
    await store.close()
    assert store.set_aside is None
    assert ([m.data for m in fresh], fresh.sequenced_after(0)) == ([b"mine"], ([], 0))
    assert await asyncio.to_thread(_stamped_node, tmp_path / REPLAY_FILE) == NODE_B


def _stamped_node(path: Path) -> str:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return str(conn.execute("SELECT node FROM stamp").fetchone()[0])


def _replay_file_of_old(path: Path, mesh: str) -> None:
    """A replay.sqlite3 as gravd wrote it before the stamp: its mesh in replay_mesh."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE replay_mesh (id INTEGER PRIMARY KEY CHECK (id = 1), mesh TEXT)")
        conn.execute("INSERT INTO replay_mesh VALUES (1, ?)", (mesh,))
        conn.commit()


async def test_a_replay_file_from_before_the_stamp_is_still_known_by_its_mesh(
    tmp_path: Path,
) -> None:
    """A replay file that kept its mesh (lab) the earlier way is moved aside by a node in mesh
    prod, naming lab."""
    await asyncio.to_thread(_replay_file_of_old, tmp_path / REPLAY_FILE, "lab")
    store = await ReplayStore.open(tmp_path, MsgBuffer(10), numbered=True, mesh="prod")
    await store.close()
    assert store.set_aside is not None
    assert store.set_aside.name.startswith(f"{REPLAY_FILE}.other-mesh-")
    assert "'lab'" in store.set_aside_why


def _foreign_stamp(path: Path) -> None:
    """A replay.sqlite3 with a table named stamp that gravd never wrote."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE stamp (id INTEGER PRIMARY KEY, owner TEXT)")
        conn.execute("INSERT INTO stamp VALUES (1, 'someone else')")
        conn.commit()


async def test_a_replay_file_whose_stamp_table_is_not_gravds_is_set_aside(tmp_path: Path) -> None:
    """A replay file whose table named stamp holds another program's columns is moved aside as
    a file gravd does not write, and the store opens on a new one."""
    await asyncio.to_thread(_foreign_stamp, tmp_path / REPLAY_FILE)
    store = await ReplayStore.open(tmp_path, MsgBuffer(10), mesh="lab", node=NODE_A)
    await store.close()
    assert store.set_aside is not None
    assert store.set_aside.name.startswith(f"{REPLAY_FILE}.corrupt-")
    assert await asyncio.to_thread(_stamped_node, tmp_path / REPLAY_FILE) == NODE_A


class _Clock:
    """The wall clock, moved on by hand."""

    def __init__(self) -> None:
        self.ahead = 0.0

    def __call__(self) -> float:
        return time.time() + self.ahead


@pytest.mark.parametrize("written_at", [3600.0, math.nan], ids=["an-hour-ahead", "not-a-time"])
async def test_a_restored_entry_from_ahead_of_the_clock_holds_up_no_eviction_by_age(
    tmp_path: Path, written_at: float
) -> None:
    """An entry written an hour ahead of the clock (the clock was set back since; or with a time
    that is not a number) comes back no later than now, so it and what is pushed after it leave
    a buffer of max_age 60 s once 60 s have passed."""
    written = MsgBuffer(100)
    store = await ReplayStore.open(tmp_path, written, numbered=True)
    written.push(_msg("ahead"), None, 1, time.time() + written_at)
    await store.close()
    clock = _Clock()
    buffer = MsgBuffer(100, max_age=60.0, clock=clock)
    store = await ReplayStore.open(tmp_path, buffer, numbered=True)
    buffer.push(_msg("after it"), None, 2)
    clock.ahead = 120.0
    buffer.expire()
    await store.close()
    assert [m.data for m in buffer] == []

"""gravd's data directory as a demanding user meets it: a positions file lost after a kill, a full
disk, what a restarted receiver replays, who may read the files, and files gravd did not write
(real gravd processes, real SQLite files on disk)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import msgspec
import pytest

import gravpy
from gravpy import Grav, Message
from gravpy.buffer import MsgBuffer
from gravpy.daemon.positions import POSITIONS_FILE
from gravpy.daemon.replay_store import REPLAY_FILE, ReplayStore
from gravpy.mesh.resume import RESTART_GAP
from gravpy.testing.gravd import running_gravd
from tests._bus_helpers import until
from tests.daemon.test_durable_buffer import _publish, _wants
from tests.daemon.test_restart import FAST_REDIAL, GUARD, _publish_ten
from transports.websocket import WebSocketTransport


async def test_a_killed_origin_that_lost_its_positions_file_numbers_on_past_the_gap() -> None:
    """A gravd SIGKILLed after numbering 10 messages, whose positions.sqlite3 is then found
    corrupt at its restart, cannot know its last numbers reached the disk: it numbers on from
    RESTART_GAP above what its replay file kept, never reusing a number a peer already got."""
    with tempfile.TemporaryDirectory(prefix="gravd-qa-") as data:
        got: asyncio.Queue[Message] = asyncio.Queue(maxsize=100)
        receiver = Grav(transport=WebSocketTransport("127.0.0.1", 0), hub_config=FAST_REDIAL)
        async with receiver:
            receiver.connect().on_type("origin.x", got.put_nowait)
            async with running_gravd("--data-dir", data) as origin:
                port = urlsplit(origin.endpoint).port
                await _publish_ten(receiver, origin.endpoint, got)
                await origin.wait_http(lambda d: d["replay_store"]["written"] >= 10)
            async with asyncio.timeout(GUARD):  # killed on leaving: wait for the link to go
                await receiver.wait_for(lambda peers: not peers)
            await asyncio.to_thread(_tear, Path(data) / POSITIONS_FILE)
            listen = f"127.0.0.1:{port}"
            async with running_gravd("--data-dir", data, "--listen", listen) as again:
                await again.process.wait_event("positions_set_aside")
                await _publish_ten(receiver, again.endpoint, got)
            assert receiver.hub is not None
            last = receiver.hub.traffic.resumption.last[origin.uuid]
            lost = receiver.hub.statistics().lost_by_origin
        assert again.uuid == origin.uuid
        assert last > RESTART_GAP  # the numbers given before the kill are never given again
        assert lost == {}


def _tear(path: Path) -> None:
    """Leave ``path`` as a crash might: garbage where the database was, its WAL gone."""
    for companion in ("-wal", "-shm"):
        Path(f"{path}{companion}").unlink(missing_ok=True)
    path.write_bytes(b"\x00 torn by a crash \xff" * 512)


@contextlib.asynccontextmanager
async def _small_disk(size: str) -> AsyncIterator[Path]:
    """A tmpfs of ``size`` mounted for the block (skips the test where it cannot be mounted)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    with tempfile.TemporaryDirectory(prefix="gravd-disk-") as mount:
        done = await asyncio.to_thread(
            subprocess.run,
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", mount],
            capture_output=True,
        )
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs: {done.stderr.decode(errors='replace')}")
        try:
            yield Path(mount)
        finally:
            await asyncio.to_thread(subprocess.run, ["umount", "-l", mount], check=True)


def _fill(disk: Path) -> None:
    """Write ``disk`` full (no error: the disk is full when this returns)."""
    with contextlib.suppress(OSError), (disk / "filler").open("wb") as file:
        while True:
            file.write(b"\0" * 4096)
            file.flush()


async def test_a_positions_save_on_a_full_disk_is_logged_once_with_the_reason() -> None:
    """gravd on a data dir whose disk fills up while messages pass: its positions cannot be
    saved, and it logs positions_save_failed once with SQLite's reason (the disk is full), not a
    second error from cleaning up after it."""
    async with _small_disk("3m") as disk:
        data = disk / "data"
        async with running_gravd("--data-dir", str(data)) as node:
            await _publish(node.endpoint, "qa.before", 10)
            await asyncio.to_thread(_fill, disk)
            await _publish(node.endpoint, "qa.after", 10)
            result = await node.stop(signal.SIGTERM)
        assert result.code == 0, result.stderr[-2000:]
        said = [e for e in node.process.events() if e["event"] == "positions_save_failed"]
        assert len(said) == 1, said
        assert "full" in said[0]["error"], said


async def test_a_receiver_killed_mid_stream_replays_each_message_once_after_its_restart() -> None:
    """Publisher app on gravd A, subscriber app on gravd B; B is SIGKILLed while messages flow,
    restarts on its data dir and asks A for what it missed (its saved position is a tick
    behind, so some of that is in its restored buffer already): an app that then connects to B
    with replay gets every message once, in order."""
    total = 3000
    with (
        tempfile.TemporaryDirectory(prefix="gravd-a-") as da,
        tempfile.TemporaryDirectory(prefix="gravd-b-") as db,
    ):
        async with (
            running_gravd("--data-dir", da, "--buffer-size", "8192") as a,
            running_gravd("--data-dir", db, "--peer", a.endpoint, "--buffer-size", "8192") as b,
        ):
            port = urlsplit(b.endpoint).port
            stream = _Stream(total)
            async with (
                gravpy.connect(b.endpoint, hub_config=FAST_REDIAL) as sub,
                gravpy.connect(a.endpoint) as pub,
            ):
                sub.connect().on_type("qa.stream", stream.keep)
                await pub.wait_for(lambda ps: any("qa.stream" in p.interests for p in ps), GUARD)
                publishing = asyncio.create_task(stream.publish(pub, "qa.stream"))
                try:
                    async with asyncio.timeout(GUARD):
                        await stream.some.wait()
                        await _position_moved(db, a.uuid)  # saved a tick behind from now on
                        await b.process.close()  # SIGKILL, while the stream flows
                        stream.go_on.set()
                        listen = f"127.0.0.1:{port}"
                        again = running_gravd(
                            "--data-dir", db, "--peer", a.endpoint, "--listen", listen,
                            "--buffer-size", "8192",
                        )  # fmt: skip
                        async with again as b2:
                            await publishing
                            await stream.done.wait()
                            replayed = await _replayed(b2.endpoint, "qa.stream", total)
                finally:
                    publishing.cancel()
                    await asyncio.gather(publishing, return_exceptions=True)
    assert replayed == list(range(total))


async def _position_moved(data_dir: str, origin: str) -> None:
    """Wait until the gravd keeping ``data_dir`` saved two different positions for ``origin``
    (its first save of an origin is exact; each later one is a tick behind what arrived)."""

    def position() -> int | None:
        try:
            with contextlib.closing(sqlite3.connect(Path(data_dir) / POSITIONS_FILE)) as conn:
                row = conn.execute("SELECT seq FROM position WHERE origin = ?", (origin,))
                found = row.fetchone()
        except sqlite3.Error:  # not created yet
            return None
        return int(found[0]) if found is not None else None

    seen: set[int] = set()
    while len(seen) < 2:
        if (saved := await asyncio.to_thread(position)) is not None:
            seen.add(saved)
        await asyncio.sleep(0.05)  # the file has no event to wait on; re-read


class _Stream:
    """A paced stream of ``total`` numbered messages (so a receiver killed in it is killed while
    messages flow); its last sixth waits for ``go_on``, so the kill always comes before its end."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.got: list[int] = []
        self.some = asyncio.Event()
        self.done = asyncio.Event()
        self.go_on = asyncio.Event()

    def keep(self, msg: Message) -> None:
        self.got.append(int.from_bytes(msg.data, "big"))
        if len(self.got) == self.total // 10:
            self.some.set()
        if self.got[-1] == self.total - 1:
            self.done.set()

    async def publish(self, app: Grav, msg_type: str) -> None:
        sender = app.connect()
        for i in range(self.total):
            if i == self.total * 5 // 6:
                await self.go_on.wait()
            await sender.publish(Message.new(msg_type, i.to_bytes(4, "big")))
            if i % 10 == 0:
                await asyncio.sleep(0.01)  # pacing (about 1,000 a second), not a wait


async def _replayed(endpoint: str, msg_type: str, count: int) -> list[int]:
    """What a pod connecting with replay on a fresh app gets: at least ``count`` messages, once
    the node's replay answer has ended."""
    got: list[int] = []
    async with gravpy.connect(endpoint) as app:
        app.connect_with_replay().on_type(msg_type, lambda m: got.append(int.from_bytes(m.data)))
        assert app.hub is not None
        replays = app.hub.traffic.replays
        async with asyncio.timeout(GUARD):
            while replays.answered == 0 or len(got) < count:  # noqa: ASYNC110 - no event to hook
                await asyncio.sleep(0.01)
    return got[:]


async def test_the_files_that_keep_messages_are_readable_by_gravds_user_only() -> None:
    """gravd started on a new data dir under the usual umask (022) and stopped: its replay
    buffer and resume state, WAL included, and its event store are mode 0600, as node.uuid is;
    no other local user reads the messages it relayed or its users' events."""
    usual = os.umask(0o022)  # (gravd inherits it)
    try:
        with tempfile.TemporaryDirectory(prefix="gravd-qa-") as data:
            async with running_gravd("--data-dir", data) as node:
                await _publish(node.endpoint, "qa.private", 10)
                await node.wait_http(lambda d: d["replay_store"]["written"] >= 10)
                modes = await asyncio.to_thread(_modes, Path(data))
                assert (await node.stop(signal.SIGTERM)).code == 0
    finally:
        os.umask(usual)
    assert {name: modes.get(name) for name in _PRIVATE} == dict.fromkeys(_PRIVATE, 0o600)


_PRIVATE = (
    "node.uuid",
    "replay.sqlite3",
    "replay.sqlite3-wal",
    "replay.sqlite3-shm",
    "positions.sqlite3",
    "positions.sqlite3-wal",
    "positions.sqlite3-shm",
    "events.sqlite3",
)


def _modes(directory: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mode & 0o777 for p in directory.iterdir()}


def _foreign_files(data_dir: Path) -> None:
    """A replay.sqlite3 and a positions.sqlite3 that SQLite reads, with tables of gravd's names
    holding what gravd never writes (another program's files, or a hand edit)."""
    with contextlib.closing(sqlite3.connect(data_dir / REPLAY_FILE)) as conn:
        conn.execute("CREATE TABLE replay_head (id INTEGER PRIMARY KEY, batch, gone)")
        conn.execute("INSERT INTO replay_head VALUES (1, 'first', 'none')")
        conn.commit()
    with contextlib.closing(sqlite3.connect(data_dir / POSITIONS_FILE)) as conn:
        conn.execute("CREATE TABLE position (origin, seq, heard_at)")
        conn.execute("INSERT INTO position VALUES ('somewhere', 'the top', 1e300)")
        conn.commit()


async def test_store_files_that_are_not_gravds_are_set_aside_and_gravd_serves() -> None:
    """A replay.sqlite3 and a positions.sqlite3 that SQLite reads but whose tables hold values
    gravd never writes: gravd moves each aside, says so, and serves."""
    with tempfile.TemporaryDirectory(prefix="gravd-qa-") as data:
        await asyncio.to_thread(_foreign_files, Path(data))
        async with running_gravd("--data-dir", data) as node:
            replay = await node.process.wait_event("replay_store_set_aside")
            positions = await node.process.wait_event("positions_set_aside")
            await _publish(node.endpoint, "qa.after", 3)
        for moved in (replay["moved_to"], positions["moved_to"]):
            assert await asyncio.to_thread(Path(moved).exists), moved


def _row_numbered_infinity(data_dir: Path) -> None:
    """A batch row that decodes, holding one message whose origin number is infinity."""
    entry = (time.time(), Message.new("qa.inf", b"x"), float("inf"))
    with contextlib.closing(sqlite3.connect(data_dir / REPLAY_FILE)) as conn:
        wire = msgspec.msgpack.encode([entry])
        conn.execute("INSERT INTO replay_batch (id, count, wire) VALUES (7, 1, ?)", (wire,))
        conn.commit()


async def test_a_replay_row_numbered_out_of_range_is_skipped_and_counted(tmp_path: Path) -> None:
    """A row of replay.sqlite3 whose message is numbered infinity (a damaged number) is skipped
    and counted like any row that does not decode; the rows around it come back."""
    buffer = MsgBuffer(100)
    store = await ReplayStore.open(tmp_path, buffer, numbered=True)
    buffer.push(Message.new("qa.row", b"before"), None, 1)
    await store.close()
    await asyncio.to_thread(_row_numbered_infinity, tmp_path)
    again = MsgBuffer(100)
    store = await ReplayStore.open(tmp_path, again, numbered=True)
    again.push(Message.new("qa.row", b"after"), None, 2)
    await store.close()
    assert store.statistics().skipped_rows == 1
    restored = MsgBuffer(100)
    store = await ReplayStore.open(tmp_path, restored, numbered=True)
    await store.close()
    assert [m.data for m in restored] == [b"before", b"after"]


async def _replayed_then(endpoint: str, live: bytes) -> list[Message]:
    """What a replaying pod on ``endpoint`` gets of ``dur.x`` up to and including one message
    with ``live`` published after its replay was answered: the replay, then that one."""
    got: asyncio.Queue[Message] = asyncio.Queue(maxsize=100)
    async with gravpy.connect(endpoint) as app, gravpy.connect(endpoint) as tx:
        app.connect_with_replay().on_type("dur.x", got.put_nowait)
        assert app.hub is not None
        hub = app.hub
        await until(lambda: hub.traffic.replays.answered == 1)
        await tx.wait_for(lambda ps: _wants(ps, "dur.x"), GUARD)
        await tx.connect().publish(Message.new("dur.x", live))
        seen: list[Message] = []
        async with asyncio.timeout(GUARD):
            while not seen or seen[-1].data != live:
                seen.append(await got.get())
    return seen


async def test_a_data_dir_reused_in_another_mesh_replays_none_of_the_old_meshs_messages() -> None:
    """gravd stopped in mesh lab and started on the same data dir in mesh prod moves the replay
    file aside, saying why, and a replaying pod in prod gets nothing of lab's, only what comes
    after; started in prod again, it keeps the new file (written in prod)."""
    with tempfile.TemporaryDirectory(prefix="gravd-qa-") as data:
        async with running_gravd("--data-dir", data, "--mesh", "lab") as lab:
            await _publish(lab.endpoint, "dur.x", 5)
            await lab.wait_http(lambda d: d["messages"]["buffered"] >= 5)
            assert (await lab.stop(signal.SIGTERM)).code == 0
        async with running_gravd("--data-dir", data, "--mesh", "prod") as prod:
            said = await prod.process.wait_event("replay_store_set_aside")
            assert "'lab'" in said["reason"]
            assert Path(said["moved_to"]).name.startswith(f"{REPLAY_FILE}.other-mesh-")
            assert await asyncio.to_thread(Path(said["moved_to"]).exists)
            got = await _replayed_then(prod.endpoint, b"in prod")
            assert [m.data for m in got] == [b"in prod"]
            assert (await prod.stop(signal.SIGTERM)).code == 0
        async with running_gravd("--data-dir", data, "--mesh", "prod") as again:
            restored = await again.process.wait_event("replay_restored")
            assert restored["messages"] >= 1
            events = [e.get("event") for e in again.process.events()]
            assert "replay_store_set_aside" not in events


async def test_a_replay_file_copied_from_another_nodes_data_dir_is_set_aside_by_gravd() -> None:
    """A replay.sqlite3 copied from node A's data dir into node B's is moved aside when B starts,
    naming the other node, so B never resends A's messages as its own."""
    with (
        tempfile.TemporaryDirectory(prefix="gravd-qa-") as a_dir,
        tempfile.TemporaryDirectory(prefix="gravd-qa-") as b_dir,
    ):
        async with running_gravd("--data-dir", a_dir) as a:
            await _publish(a.endpoint, "dur.x", 3)
            await a.wait_http(lambda d: d["messages"]["buffered"] >= 3)
            assert (await a.stop(signal.SIGTERM)).code == 0
        async with running_gravd("--data-dir", b_dir) as b:  # (B's own uuid, kept in b_dir)
            assert (await b.stop(signal.SIGTERM)).code == 0
        await asyncio.to_thread(shutil.copy, Path(a_dir) / REPLAY_FILE, Path(b_dir) / REPLAY_FILE)
        async with running_gravd("--data-dir", b_dir) as b:
            said = await b.process.wait_event("replay_store_set_aside")
            assert Path(said["moved_to"]).name.startswith(f"{REPLAY_FILE}.other-node-")
            got = await _replayed_then(b.endpoint, b"on B")
            assert [m.data for m in got] == [b"on B"]  # (A's three were not replayed first)

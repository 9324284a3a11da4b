"""gravd's durable replay buffer: kept in the data dir across restarts; a corrupt file set aside."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import tempfile
from pathlib import Path

import gravpy
from gravpy import Message
from gravpy.daemon.replay_store import REPLAY_FILE
from gravpy.mesh import PeerInfo
from gravpy.testing.gravd import running_gravd

GUARD = 30.0 * float(os.environ.get("GRAVPY_TEST_SCALE", "1"))  # a hang guard, not a timing


def _wants(peers: list[PeerInfo], msg_type: str) -> bool:
    """True if the node behind a leaf said it wants ``msg_type`` (the leaf will send it)."""
    return any(msg_type in p.interests for p in peers)


async def _replayed(endpoint: str, count: int) -> list[int]:
    """What a replaying pod on a fresh app gets of dur.x (the first ``count`` messages)."""
    got: asyncio.Queue[Message] = asyncio.Queue(maxsize=10_000)
    async with gravpy.connect(endpoint) as app:
        app.connect_with_replay().on_type("dur.x", got.put_nowait)
        async with asyncio.timeout(GUARD):
            seen = [int.from_bytes((await got.get()).data, "big") for _ in range(count)]
        assert app.hub is not None
        assert app.hub.traffic.replays.answered == 1
    return seen


async def test_a_restarted_gravd_still_replays_its_buffer() -> None:
    """50 messages through gravd, gravd stopped and started again on the same data dir: an app's
    replaying pod gets those 50, in order (the buffer came back from replay.sqlite3)."""
    with tempfile.TemporaryDirectory(prefix="gravd-data-") as data:
        async with (
            running_gravd("--data-dir", data) as node,
            gravpy.connect(node.endpoint) as watcher,
            gravpy.connect(node.endpoint) as publisher,
        ):
            watcher.connect().on_type("dur.x", lambda m: None)
            await publisher.wait_for(lambda ps: _wants(ps, "dur.x"), GUARD)
            sender = publisher.connect()
            for i in range(50):
                await sender.publish(Message.new("dur.x", i.to_bytes(4, "big")))
            await node.wait_http(lambda d: d["messages"]["buffered"] >= 50)
            result = await node.stop(signal.SIGTERM)
            assert result.code == 0, result.stderr[-2000:]
        assert (Path(data) / REPLAY_FILE).exists()
        async with running_gravd("--data-dir", data) as again:
            restored = await again.process.wait_event("replay_restored")
            assert restored["messages"] >= 50  # with gravd's own events (grav.events.system)
            assert await _replayed(again.endpoint, 50) == list(range(50))


async def test_a_corrupt_replay_file_is_set_aside_and_gravd_serves() -> None:
    """A replay.sqlite3 that is not a database is reported and moved aside at start; gravd starts
    with an empty buffer and relays messages as usual."""
    with tempfile.TemporaryDirectory(prefix="gravd-data-") as data:
        bad = Path(data) / REPLAY_FILE
        bad.write_bytes(b"this is not a database\n" * 100)
        async with (
            running_gravd("--data-dir", data) as node,
            gravpy.connect(node.endpoint) as receiver,
            gravpy.connect(node.endpoint) as sender,
        ):
            report = await node.process.wait_event("replay_store_set_aside")
            moved = Path(report["moved_to"])
            assert await asyncio.to_thread(moved.read_bytes) == b"this is not a database\n" * 100
            got: asyncio.Queue[Message] = asyncio.Queue(maxsize=10)
            receiver.connect().on_type("after.corrupt", got.put_nowait)
            await sender.wait_for(lambda ps: _wants(ps, "after.corrupt"), GUARD)
            sender.connect().send(Message.new("after.corrupt", b"ok"))
            async with asyncio.timeout(GUARD):
                assert (await got.get()).data == b"ok"


async def _publish(endpoint: str, msg_type: str, count: int) -> None:
    """``count`` messages of ``msg_type`` through the gravd at ``endpoint``, each to a receiver."""
    async with gravpy.connect(endpoint) as receiver, gravpy.connect(endpoint) as sender:
        got: asyncio.Queue[Message] = asyncio.Queue(maxsize=count)
        receiver.connect().on_type(msg_type, got.put_nowait)
        await sender.wait_for(lambda ps: _wants(ps, msg_type), GUARD)
        pod = sender.connect()
        for i in range(count):
            await pod.publish(Message.new(msg_type, i.to_bytes(4, "big")))
        async with asyncio.timeout(GUARD):
            for _ in range(count):
                await got.get()


async def test_two_gravd_without_a_data_dir_of_their_own_do_not_share_its_files() -> None:
    """A second gravd on the default data dir says so and keeps its buffer in memory: a gravd
    started there later replays the first one's messages, never the second one's."""
    with tempfile.TemporaryDirectory(prefix="gravd-state-") as state:
        shared = {"XDG_STATE_HOME": state}
        async with running_gravd(env=shared) as first, running_gravd(env=shared) as second:
            said = await second.process.wait_event("data_dir_in_use")
            assert said["data_dir"] == str(Path(state) / "gravd")
            await _publish(second.endpoint, "dur.second", 20)
            await second.wait_http(lambda d: d["messages"]["buffered"] >= 20)
            await _publish(first.endpoint, "dur.first", 1)
            await first.wait_http(lambda d: d["messages"]["buffered"] >= 1)
            for node in (second, first):
                result = await node.stop(signal.SIGTERM)
                assert result.code == 0, result.stderr[-2000:]
            assert not any(e["event"] == "replay_restored" for e in second.process.events())
            assert not any(e["event"] == "data_dir_in_use" for e in first.process.events())
        async with running_gravd(env=shared) as later:  # the files are free again
            await later.process.wait_event("replay_restored")
            got: asyncio.Queue[Message] = asyncio.Queue(maxsize=100)
            async with gravpy.connect(later.endpoint) as app:
                app.connect_with_replay().on_type("dur.>", got.put_nowait)
                async with asyncio.timeout(GUARD):
                    replayed = await got.get()
            assert (replayed.type, replayed.data) == ("dur.first", (0).to_bytes(4, "big"))


async def test_a_run_with_the_buffer_not_durable_leaves_no_stale_file_for_a_later_one() -> None:
    """gravd keeps 20 messages, restarts with --buffer-durable off, then with it on again: the
    last start restores nothing, and the first run's file was moved aside, not kept as current."""
    with tempfile.TemporaryDirectory(prefix="gravd-data-") as data:
        async with running_gravd("--data-dir", data) as first:
            await _publish(first.endpoint, "dur.old", 20)
            await first.wait_http(lambda d: d["messages"]["buffered"] >= 20)
            assert (await first.stop(signal.SIGTERM)).code == 0
        async with running_gravd("--data-dir", data, "--buffer-durable", "off") as off:
            assert (await off.stop(signal.SIGTERM)).code == 0
            reports = [e for e in off.process.events() if e["event"] == "replay_store_set_aside"]
        async with running_gravd("--data-dir", data) as again:
            restored = await again.process.wait_event("replay_restored")
            assert restored["messages"] == 0
        assert [await asyncio.to_thread(Path(r["moved_to"]).exists) for r in reports] == [True]


async def test_a_failed_write_of_the_buffer_is_counted_in_v1_node_and_metrics() -> None:
    """While another process holds replay.sqlite3 past SQLite's busy wait, a message through
    gravd cannot be written: /v1/node's replay_store and gravd_replay_write_failures_total count
    the failure; once the file is free the retry writes it and nothing is counted unwritten."""
    with tempfile.TemporaryDirectory(prefix="gravd-data-") as data:
        async with running_gravd("--data-dir", data) as node:
            holder = sqlite3.connect(Path(data) / REPLAY_FILE, isolation_level=None)
            try:
                holder.execute("BEGIN IMMEDIATE")
                await _publish(node.endpoint, "dur.held", 1)
                await node.wait_http(lambda d: d["replay_store"]["write_failures"] >= 1)
            finally:
                holder.close()
            done = await node.wait_http(lambda d: d["replay_store"]["written"] >= 1)
            assert done["replay_store"]["unwritten"] == 0
            status, metrics = await node.get("/metrics")
            assert status == 200
            [failures] = [
                line
                for line in metrics.splitlines()
                if line.startswith("gravd_replay_write_failures_total ")
            ]
            assert float(failures.split()[1]) >= 1

"""SQLiteMessenger shared by several OS processes on one file."""

from __future__ import annotations

import asyncio
import sys
from collections import defaultdict
from pathlib import Path

from gravpy.messenger import SQLiteMessenger
from gravpy.testing.gravd import Process


async def test_two_processes_share_events_and_each_request_is_claimed_once(
    tmp_path: Path,
) -> None:
    """Two peer processes see the parent's events and theirs reach it; 100 requests run once each."""
    path = str(tmp_path / "bus.db")
    peers: list[Process] = []
    try:
        async with await SQLiteMessenger.open(path) as m:
            events: asyncio.Queue[bytes] = asyncio.Queue()
            await m.stream("proc.child", events)
            for _ in range(2):
                argv = [sys.executable, "-m", "tests.messenger.sqlite_peer", path]
                peers.append(await Process.start(argv))
            for peer in peers:
                await peer.wait_line(lambda line: line == "ready", stream="stdout")
            by_pid: dict[bytes, list[int]] = defaultdict(list)
            for _ in range(200):
                pid, _, n = (await events.get()).partition(b":")
                by_pid[pid].append(int(n))
            assert len(by_pid) == 2
            assert all(seq == list(range(100)) for seq in by_pid.values())
            replies = await asyncio.gather(
                *(m.request("proc.work", b"%d" % i, timeout=10.0) for i in range(100))
            )
            for i, reply in enumerate(replies):
                pid, _, data = reply.partition(b":")
                assert pid in by_pid
                assert data == b"%d" % i
            await m.publish("proc.parent", b"stop")
            handled = 0
            for peer in peers:
                line = await peer.wait_line(lambda s: s.startswith("handled "), stream="stdout")
                handled += int(line.split()[1])
                assert (await peer.wait()).code == 0
            assert handled == 100
    finally:
        for peer in peers:
            await peer.close()

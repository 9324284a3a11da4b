"""CPU per message of gravd's durable replay buffer, in one process, every message written.

Run from the repository root::

    .venv/bin/python benchmarks/bench_replay_store.py
    # before: the same script against an older checkout (cwd and PYTHONPATH there)
    cd /tmp/before && PYTHONPATH=/tmp/before /path/to/.venv/bin/python /path/to/bench_replay_store.py

200,000 messages of 128 B pushed 2,000 per turn (as gravd at 20,000 messages/s, one write per
``GATHER_SECONDS``) into a ``MsgBuffer`` of 65,536, alone and written by a ``ReplayStore``
after each turn (so every message reaches the file). ``time.process_time`` counts
the writer thread too. The extra microseconds per message are the cost of durability for one
gravd; both ends of a node-to-node stream pay it.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from pathlib import Path

from _common import say, table

from gravpy.buffer import MsgBuffer
from gravpy.daemon.replay_store import ReplayStore
from gravpy.message import Message

N = 200_000
TURN = 2000
RUNS = 5


async def per_message(durable: bool, messages: list[Message]) -> float:
    """CPU microseconds per message pushed (and written, if ``durable``)."""
    with tempfile.TemporaryDirectory() as data:
        buffer = MsgBuffer(65_536, max_bytes=64 << 20, max_age=3600)
        store = await ReplayStore.open(Path(data), buffer) if durable else None
        start = time.process_time()
        for first in range(0, N, TURN):
            for i in range(first, first + TURN):
                buffer.push(messages[i], None, i + 1)
            if store is not None:
                await store._write_queued()  # the writer's turn, without its timer
        spent = time.process_time() - start
        if store is not None:
            await store.close()
        return spent / N * 1e6


async def main() -> int:
    payload = os.urandom(120)
    messages = [Message.new("tp.x", i.to_bytes(8, "big") + payload) for i in range(N)]
    runs: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(RUNS):
        for durable in (False, True):
            runs[durable].append(await per_message(durable, messages))
    best = {d: min(r) for d, r in runs.items()}
    say(f"CPU per message, {N:,} x 128 B, {TURN:,} per write (best of {RUNS})")
    rows = [
        [name, f"{best[d]:.2f}", " ".join(f"{x:.2f}" for x in runs[d])]
        for name, d in (("in memory", False), ("durable", True))
    ]
    say(table(["buffer", "us/msg", "runs"], rows))
    say(f"durability adds {best[True] - best[False]:.2f} us per message")
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))

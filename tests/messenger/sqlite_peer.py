"""A second OS process on a SQLite bus, for test_sqlite_processes.py.

``python -m tests.messenger.sqlite_peer PATH``: serves ``proc.work`` (replying ``<pid>:<data>``),
publishes 100 events ``<pid>:<n>`` on ``proc.child``, prints ``handled N`` and exits once it
streams ``stop`` on ``proc.parent``.
"""

from __future__ import annotations

import asyncio
import os
import sys

from gravpy.messenger import SQLiteMessenger


async def main(path: str) -> None:
    handled = 0
    tag = str(os.getpid()).encode()

    async def work(data: bytes) -> bytes:
        nonlocal handled
        handled += 1
        return tag + b":" + data

    async with await SQLiteMessenger.open(path) as m:
        control: asyncio.Queue[bytes] = asyncio.Queue()
        await m.stream("proc.parent", control)
        await m.serve("proc.work", work)
        print("ready", flush=True)
        for n in range(100):
            await m.publish("proc.child", tag + b":%d" % n)
        while await control.get() != b"stop":
            pass
    print(f"handled {handled}", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))

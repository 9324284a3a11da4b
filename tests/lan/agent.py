"""An app attached to the gravd of its host, driven by a LAN test over stdin/stdout.

Prints ``{"ready": true}`` once attached, then ``{"got": DATA}`` for every ``lan.>`` message it
receives. Each stdin line ``pub DATA`` sends one ``lan.hello`` message with DATA. Ends when stdin
closes.
"""

from __future__ import annotations

import asyncio
import json
import sys

import gravpy
from gravpy import Message


async def main(url: str) -> None:
    async with gravpy.connect(url, timeout=20) as g:
        pod = g.connect()
        pod.on_type("lan.>", lambda m: print(json.dumps({"got": m.text()}), flush=True))
        print(json.dumps({"ready": True}), flush=True)
        reader = asyncio.StreamReader()
        loop = asyncio.get_running_loop()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        sender = g.connect()
        while line := (await reader.readline()).decode().strip():
            command, _, data = line.partition(" ")
            if command == "pub":
                sender.send(Message.new("lan.hello", data))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))

"""An app attached to the gravd of its host, driven by a LAN test over stdin/stdout.

Prints ``{"ready": true}`` once attached, then ``{"got": DATA}`` for every ``lan.>`` message it
receives. Each stdin line ``pub DATA`` sends one ``lan.hello`` message with DATA, once the link to
gravd says ``lan.hello`` is wanted beyond it (a leaf sends only what its node asked for, and the
node tells it so a moment after the test saw the peers' interests in gravd's log). Ends when stdin
closes.
"""

from __future__ import annotations

import asyncio
import json
import sys

import gravpy
from gravpy import Message
from gravpy.filter import Pattern
from gravpy.mesh import PeerInfo

TYPE = "lan.hello"


def routed(links: list[PeerInfo]) -> bool:
    """True if an open link of this leaf (to its gravd) admits ``TYPE``."""
    return any(
        link.state == "open" and any(Pattern(p).matches(TYPE) for p in link.interests)
        for link in links
    )


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
                await g.wait_for(routed)
                sender.send(Message.new(TYPE, data))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))

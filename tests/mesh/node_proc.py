"""A mesh node in its own process, for tests that must stop or kill a real peer.

Usage: python -m tests.mesh.node_proc [--port N] [--ping S] [--dead S]
Prints one JSON line {"endpoint": ..., "uuid": ...} once listening, answers requests of type
``svc.echo`` with ``svc.echo.reply``, and stops (withdrawing) on SIGTERM or when stdin closes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys

from gravpy import Grav, Message
from gravpy.mesh import HubConfig
from gravpy.proto import ProtocolConfig
from transports.websocket import WebSocketTransport


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--ping", type=float, default=0.1)
    parser.add_argument("--dead", type=float, default=0.5)
    args = parser.parse_args()
    config = HubConfig(protocol=ProtocolConfig(ping_interval=args.ping, dead_after=args.dead))
    grav = Grav(transport=WebSocketTransport(host="127.0.0.1", port=args.port), hub_config=config)
    async with grav:
        pod = grav.connect()
        pod.on_type("svc.echo", lambda m: pod.reply_to(m, Message.new("svc.echo.reply", m.data)))
        print(json.dumps({"endpoint": grav.endpoints()[0], "uuid": grav.node_uuid}), flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_reader(sys.stdin.fileno(), lambda: stop.set() if not sys.stdin.read(1) else None)
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main())

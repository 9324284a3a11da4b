"""A TCP forwarder run as its own process, so a test can kill it to cut a link (a flap).

``python tcp_proxy.py LISTEN_PORT TARGET_PORT`` forwards 127.0.0.1:LISTEN_PORT (0: any free port)
to 127.0.0.1:TARGET_PORT and prints ``listening PORT`` once it accepts. Killing it cuts every
connection through it at once; starting it again on the same port lets the link be redialled.
"""

from __future__ import annotations

import asyncio
import socket
import sys


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy what ``reader`` reads to ``writer`` until it ends; then close ``writer``."""
    try:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def _serve(listen_port: int, target_port: int) -> None:
    async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", target_port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", listen_port))
    server = await asyncio.start_server(forward, sock=sock)
    print("listening", sock.getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(_serve(int(sys.argv[1]), int(sys.argv[2])))

"""TLS for the transport tests: a CA from trustme, server and client contexts on 127.0.0.1, and
a probe that sends a real TLS ClientHello over a plain socket."""

from __future__ import annotations

import asyncio
import contextlib
import ssl

import trustme

HOST = "127.0.0.1"
HANDSHAKE_RECORD = 0x16  # the first byte of a TLS handshake record (a ServerHello here)


def server_tls(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(HOST).configure_cert(ctx)
    return ctx


def client_tls(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    return ctx


async def tls_probe(port: int, ctx: ssl.SSLContext) -> bytes:
    """Send a TLS ClientHello to ``port``; the first bytes answered (b"" if reset or closed)."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname=HOST)
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(outgoing.read())
        async with asyncio.timeout(10):
            return await reader.read(65536)
    except ConnectionResetError:
        return b""
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()

"""A started transport for link-level tests: accepted links queue up, and are held open until the
test ends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Generic, TypeVar

from gravpy.plugins import Link, Transport

T = TypeVar("T", bound=Transport)


class LinkServer(Generic[T]):
    """Accepted links go to ``links``; each is held open until ``done`` is set."""

    def __init__(self, transport: T) -> None:
        self.transport = transport
        self.links: asyncio.Queue[Link] = asyncio.Queue(maxsize=8)
        self.done = asyncio.Event()

    async def on_link(self, link: Link) -> None:
        await self.links.put(link)
        await self.done.wait()

    @property
    def url(self) -> str:
        """The transport's first endpoint."""
        return self.transport.endpoints()[0]

    @property
    def port(self) -> int:
        """The port it listens on (bound to port 0: the one the system chose)."""
        return int(self.url.split("://", 1)[-1].split("/", 1)[0].rsplit(":", 1)[1])


@asynccontextmanager
async def serving(transport: T) -> AsyncIterator[LinkServer[T]]:
    """Start ``transport`` with a ``LinkServer``; release its links and stop it at the end."""
    server = LinkServer(transport)
    await transport.start(server.on_link)
    try:
        yield server
    finally:
        server.done.set()
        await transport.stop()

"""Servers whose patterns overlap share each request: exactly one handles it, on every backend."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import pytest

from gravpy.grav import Grav
from gravpy.messenger import GravMessenger, InMemoryMessenger, Messenger, open_messenger
from gravpy.testing import NatsServer

Opener = Callable[[], AbstractAsyncContextManager[Messenger]]


@asynccontextmanager
async def _memory() -> AsyncIterator[Messenger]:
    async with InMemoryMessenger() as m:
        yield m


@asynccontextmanager
async def _grav() -> AsyncIterator[Messenger]:
    async with Grav() as grav, GravMessenger(grav) as m:
        yield m


@pytest.fixture(params=["memory", "grav", "nats", "sqlite"])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    if request.param == "memory":
        return _memory
    if request.param == "grav":
        return _grav
    if request.param == "sqlite":
        return lambda: _opened(f"sqlite://{tmp_path}/bus.db")
    server: NatsServer = request.getfixturevalue("nats_server")
    return lambda: _opened(server.url)


@asynccontextmanager
async def _opened(url: str) -> AsyncIterator[Messenger]:
    async with await open_messenger(url) as m:
        yield m


def _echo(name: bytes) -> Callable[[bytes], Awaitable[bytes]]:
    async def handle(data: bytes) -> bytes:
        return name

    return handle


async def test_a_request_matching_two_overlapping_servers_is_handled_once(opener: Opener) -> None:
    """A request on ov.x, which both "ov.*" and "*.x" serve, reaches exactly one of them."""
    async with opener() as m:
        star = await m.serve("ov.*", _echo(b"star"))
        tail = await m.serve("*.x", _echo(b"tail"))
        replies = [await m.request("ov.x", b"%d" % i, timeout=5.0) for i in range(20)]
        # one request only each server matches: handled after any copy of ov.x queued before it
        assert await m.request("ov.fence", b"", timeout=5.0) == b"star"
        assert await m.request("fence.x", b"", timeout=5.0) == b"tail"
        handled = star.statistics().received + tail.statistics().received
    assert set(replies) <= {b"star", b"tail"}
    assert handled == 20 + 2

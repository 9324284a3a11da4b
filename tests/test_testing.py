"""Tests for gravpy.testing: memory links, MemoryTransport and the conformance check."""

from __future__ import annotations

import asyncio

import pytest

from gravpy.errors import LinkClosedError, TransportError
from gravpy.plugins import Link
from gravpy.testing import MemoryNetwork, MemoryTransport, check_transport, memory_link_pair


async def _yield_a_few_times() -> None:
    """Let other tasks run without waiting on the clock."""
    for _ in range(10):
        await asyncio.sleep(0)


async def test_memory_transport_passes_the_conformance_check() -> None:
    """MemoryTransport meets the same contract as the real transports."""
    network = MemoryNetwork()
    await check_transport(lambda: MemoryTransport(network))


async def test_conformance_with_a_small_queue_and_limit() -> None:
    """The check also passes with a one-frame queue and a small frame limit."""
    network = MemoryNetwork()
    await check_transport(lambda: MemoryTransport(network, max_frame_bytes=64, max_queue=1))


async def test_pair_carries_frames_both_ways() -> None:
    """Frames cross a memory pair in order, and the ends know their roles."""
    a, b = memory_link_pair()
    await a.send(b"one")
    await a.send(b"two")
    await b.send(b"back")
    assert [await b.recv(), await b.recv(), await a.recv()] == [b"one", b"two", b"back"]
    assert (a.initiator, b.initiator) == (True, False)
    assert (a.remote_address, b.remote_address) == ("memory://b", "memory://a")


async def test_send_waits_while_the_peer_queue_is_full() -> None:
    """With max_queue=2 a third send waits until the peer receives one frame."""
    a, b = memory_link_pair(max_queue=2)
    await a.send(b"1")
    await a.send(b"2")
    third = asyncio.create_task(a.send(b"3"))
    await _yield_a_few_times()
    assert not third.done()
    assert await b.recv() == b"1"
    await third
    assert [await b.recv(), await b.recv()] == [b"2", b"3"]


async def test_close_wakes_a_blocked_sender_and_receiver() -> None:
    """Closing one end fails the peer's waiting recv and the closer's waiting send."""
    a, b = memory_link_pair(max_queue=1)
    await a.send(b"fills the queue")
    blocked_send = asyncio.create_task(a.send(b"waits"))
    await _yield_a_few_times()
    await a.close("going away")
    with pytest.raises(LinkClosedError, match="closed locally: going away"):
        await blocked_send
    assert await b.recv() == b"fills the queue"
    with pytest.raises(LinkClosedError, match="closed by peer: going away"):
        await b.recv()


async def test_an_oversize_frame_closes_both_ends() -> None:
    """A frame over the receiver's limit closes the pair, naming the sizes."""
    a, b = memory_link_pair(max_frame_bytes=8)
    with pytest.raises(LinkClosedError, match="9 bytes exceeds the limit of 8"):
        await a.send(b"123456789")
    with pytest.raises(LinkClosedError, match="closed locally"):
        await b.recv()


async def test_dialling_an_unknown_address_is_refused() -> None:
    """dial() to an address nobody listens on raises TransportError with a cause."""
    with pytest.raises(TransportError, match="refused") as info:
        await MemoryTransport(MemoryNetwork()).dial("memory://nobody", timeout=1)
    assert isinstance(info.value.__cause__, ConnectionRefusedError)


async def test_an_address_in_use_is_a_transport_error() -> None:
    """Two transports cannot listen on the same memory address."""
    network = MemoryNetwork()
    first = MemoryTransport(network, "hub")
    await first.start(_ignore)
    try:
        with pytest.raises(TransportError, match="already in use"):
            await MemoryTransport(network, "hub").start(_ignore)
        assert first.endpoints() == ["memory://hub"]
    finally:
        await first.stop()


async def _ignore(link: Link) -> None:
    """An on_link handler that returns at once (closing the link)."""


class _ForgetfulLink:
    """A link that drops the reason given to close(): a transport bug the check must catch."""

    def __init__(self, inner: Link) -> None:
        self.inner = inner
        self.transport = inner.transport
        self.remote_address = inner.remote_address
        self.initiator = inner.initiator

    async def send(self, frame: bytes) -> None:
        await self.inner.send(frame)

    async def recv(self) -> bytes:
        return await self.inner.recv()

    async def close(self, reason: str = "") -> None:
        await self.inner.close()


class _ForgetfulTransport(MemoryTransport):
    async def dial(self, url: str, *, timeout: float) -> _ForgetfulLink:  # type: ignore[override]
        return _ForgetfulLink(await super().dial(url, timeout=timeout))


async def test_the_check_catches_a_lost_close_reason() -> None:
    """check_transport fails, naming the step, for a transport that loses close reasons."""
    network = MemoryNetwork()
    with pytest.raises(AssertionError, match=r"close by dialler.*reason"):
        await check_transport(lambda: _ForgetfulTransport(network))


class _StuckTransport(MemoryTransport):
    """A transport whose links never deliver anything: the check must report a hang."""

    async def dial(self, url: str, *, timeout: float) -> _SilentLink:  # type: ignore[override]
        return _SilentLink(await super().dial(url, timeout=timeout))


class _SilentLink(_ForgetfulLink):
    async def send(self, frame: bytes) -> None:
        pass  # silently dropped


async def test_the_check_reports_a_hung_step() -> None:
    """A step that never completes fails with 'hung' instead of hanging the test."""
    network = MemoryNetwork()
    with pytest.raises(AssertionError, match=r"frames in order.*hung"):
        await check_transport(lambda: _StuckTransport(network), timeout=0.2)

"""Helpers for testing plugins and the core without sockets.

- :func:`memory_link_pair`: two in-memory :class:`~gravpy.plugins.Link` ends joined back to back.
- :class:`MemoryTransport`: an in-process transport; ``dial("memory://name")`` reaches the started
  ``MemoryTransport`` at address ``name`` on the same :class:`MemoryNetwork`.
- :func:`check_transport`: the conformance check every transport's tests should run;
  ``MemoryTransport`` passes it.
- :func:`check_messenger`: the conformance check every ``gravpy.messenger`` backend passes.
- :func:`nats_server`: a real ``nats-server`` on 127.0.0.1 for a test (also the pytest fixture
  ``nats_server``, from ``gravpy.testing.nats``).
- ``gravpy.testing.gravd``: real ``gravd`` and ``gravctl`` processes on 127.0.0.1
  (``running_gravd``, ``Process``, ``gravctl``) for end-to-end tests and benchmarks.
- ``gravpy.testing.lan``: several "LAN hosts" on one machine (network namespaces and veth pairs,
  or loopback ports), each with a real gravd and an agent app.

Memory links behave like the WebSocket ones: each direction is a bounded queue (``send`` waits while
the peer's queue is full), a frame over the receiver's ``max_frame_bytes`` closes the link on both
sides, frames sent before a close reach the peer before its ``recv`` raises, and every
:class:`~gravpy.errors.LinkClosedError` message says who closed the link and why.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from typing import Final

from gravpy.errors import LinkClosedError, TransportError, UsageError
from gravpy.plugins import LinkHandler
from gravpy.testing._transport_check import check_transport
from gravpy.testing.idle import wait_idle
from gravpy.testing.logs import capture_logs
from gravpy.testing.messenger import check_messenger
from gravpy.testing.nats import NatsServer, nats_server
from gravpy.transport_kit import serve_link

__all__ = [
    "MemoryLink",
    "MemoryNetwork",
    "MemoryTransport",
    "NatsServer",
    "capture_logs",
    "check_messenger",
    "check_transport",
    "memory_link_pair",
    "nats_server",
    "wait_idle",
]

_SCHEME: Final = "memory://"


class _Pipe:
    """Frames travelling from one end to the other, with the errors each end sees once closed."""

    __slots__ = ("frames", "max_frame_bytes", "reader_error", "writer_error")

    def __init__(self, max_frame_bytes: int) -> None:
        self.frames: deque[bytes] = deque()
        self.max_frame_bytes = max_frame_bytes  # the receiving end's limit
        self.reader_error: str | None = None
        self.writer_error: str | None = None


class _Pair:
    """The shared state of two joined ends; ``pipes[i]`` carries frames sent by end ``i``."""

    __slots__ = ("changed", "closed", "max_queue", "names", "pipes")

    def __init__(self, names: tuple[str, str], limits: tuple[int, int], max_queue: int) -> None:
        self.changed = asyncio.Condition()
        self.names = names
        self.pipes = (_Pipe(limits[1]), _Pipe(limits[0]))
        self.max_queue = max_queue
        self.closed = False

    async def close(self, closer: int, reason: str) -> None:
        """End ``closer`` closes: its peer drains what was sent, then sees ``reason``."""
        async with self.changed:
            if self.closed:
                return
            self.closed = True
            peer = 1 - closer
            suffix = f": {reason}" if reason else ""
            local = f"link to {self.names[peer]} closed locally{suffix}"
            remote = f"link to {self.names[closer]} closed by peer{suffix}"
            outgoing, incoming = self.pipes[closer], self.pipes[peer]
            outgoing.writer_error, outgoing.reader_error = local, remote
            incoming.writer_error, incoming.reader_error = remote, local
            incoming.frames.clear()
            self.changed.notify_all()


class MemoryLink:
    """One end of an in-memory link; see :func:`memory_link_pair`."""

    transport: Final = "memory"

    __slots__ = ("_end", "_pair", "initiator", "remote_address")

    def __init__(self, pair: _Pair, end: int) -> None:
        self._pair = pair
        self._end = end
        self.initiator = end == 0
        self.remote_address = pair.names[1 - end]

    async def send(self, frame: bytes) -> None:
        """Queue ``frame`` for the peer, waiting while its queue is full."""
        pair, pipe = self._pair, self._pair.pipes[self._end]
        if pipe.writer_error is None and len(frame) > pipe.max_frame_bytes:
            reason = f"frame of {len(frame)} bytes exceeds the limit of {pipe.max_frame_bytes}"
            await pair.close(1 - self._end, reason)  # the receiver refuses it, as a socket would
        async with pair.changed:
            await pair.changed.wait_for(
                lambda: pipe.writer_error is not None or len(pipe.frames) < pair.max_queue
            )
            if pipe.writer_error is not None:
                raise LinkClosedError(pipe.writer_error)
            pipe.frames.append(bytes(frame))
            pair.changed.notify_all()

    async def recv(self) -> bytes:
        """Return the next frame; raises LinkClosedError once closed and drained."""
        pair, pipe = self._pair, self._pair.pipes[1 - self._end]
        async with pair.changed:
            await pair.changed.wait_for(lambda: bool(pipe.frames) or pipe.reader_error is not None)
            if not pipe.frames:
                assert pipe.reader_error is not None
                raise LinkClosedError(pipe.reader_error)
            frame = pipe.frames.popleft()
            pair.changed.notify_all()
            return frame

    async def close(self, reason: str = "") -> None:
        """Close both ends; the peer sees ``reason``. Idempotent."""
        await self._pair.close(self._end, reason)

    def __repr__(self) -> str:
        role = "dialled" if self.initiator else "accepted"
        return f"<MemoryLink {role} {self.remote_address}>"


def memory_link_pair(
    *,
    max_frame_bytes: int = 1 << 20,
    max_queue: int = 16,
    names: tuple[str, str] = ("memory://a", "memory://b"),
) -> tuple[MemoryLink, MemoryLink]:
    """Two joined links: the first is the dialling end (``initiator``), the second the accepting.

    ``names`` are the two ends' addresses (each link's ``remote_address`` is the other's name).
    Each direction holds at most ``max_queue`` frames of at most ``max_frame_bytes`` bytes.
    """
    if max_frame_bytes < 1 or max_queue < 1:
        raise UsageError("max_frame_bytes and max_queue must be >= 1")
    pair = _Pair(names, (max_frame_bytes, max_frame_bytes), max_queue)
    return MemoryLink(pair, 0), MemoryLink(pair, 1)


class MemoryNetwork:
    """A namespace of listening :class:`MemoryTransport` addresses; one per test, usually."""

    def __init__(self) -> None:
        self._listeners: dict[str, MemoryTransport] = {}
        self._numbers = itertools.count(1)

    def new_address(self) -> str:
        """An address not handed out before on this network."""
        return f"node-{next(self._numbers)}"

    def listener(self, address: str) -> MemoryTransport | None:
        """The started transport at ``address``, if any."""
        return self._listeners.get(address)

    def _register(self, address: str, transport: MemoryTransport) -> None:
        if address in self._listeners:
            raise TransportError(f"memory address {address!r} is already in use")
        self._listeners[address] = transport

    def _unregister(self, address: str) -> None:
        self._listeners.pop(address, None)


class MemoryTransport:
    """An in-process :class:`~gravpy.plugins.Transport` on a :class:`MemoryNetwork`.

    ``address`` defaults to a fresh one from the network. Accepted links run ``on_link`` in a
    task owned by the transport; :meth:`stop` closes them and waits for those tasks.
    """

    name: Final = "memory"
    schemes: Final = ("memory",)

    def __init__(
        self,
        network: MemoryNetwork,
        address: str | None = None,
        *,
        max_frame_bytes: int = 1 << 20,
        max_queue: int = 16,
    ) -> None:
        if max_frame_bytes < 1 or max_queue < 1:
            raise UsageError("max_frame_bytes and max_queue must be >= 1")
        self.network = network
        self.address = address if address is not None else network.new_address()
        self.max_frame_bytes = max_frame_bytes
        self.max_queue = max_queue
        self._on_link: LinkHandler | None = None
        self._accepted: set[MemoryLink] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, on_link: LinkHandler) -> None:
        """Register this transport's address on the network."""
        if self._on_link is not None:
            raise UsageError("this MemoryTransport is already started")
        self.network._register(self.address, self)
        self._on_link = on_link

    def endpoints(self) -> list[str]:
        """``["memory://<address>"]``."""
        if self._on_link is None:
            raise UsageError("endpoints() is only known after start()")
        return [_SCHEME + self.address]

    async def dial(self, url: str, *, timeout: float) -> MemoryLink:
        """Join a new link to the transport listening at ``memory://<address>``."""
        if timeout <= 0:
            raise UsageError(f"timeout must be > 0, got {timeout!r}")
        if "://" in url and not url.startswith(_SCHEME):
            raise UsageError(f"not a memory URL: {url!r}")
        address = url.removeprefix(_SCHEME)
        listener = self.network.listener(address)
        if listener is None:
            refused = ConnectionRefusedError(f"nothing listens at {_SCHEME}{address}")
            raise TransportError(f"dial {url}: connection refused") from refused
        names = (_SCHEME + self.address, _SCHEME + address)
        pair = _Pair(names, (self.max_frame_bytes, listener.max_frame_bytes), self.max_queue)
        listener._accept(MemoryLink(pair, 1))
        return MemoryLink(pair, 0)

    async def stop(self) -> None:
        """Unregister, close every accepted link, and wait for their handlers to return."""
        if self._on_link is None:
            return
        self._on_link = None
        self.network._unregister(self.address)
        for link in list(self._accepted):
            await link.close("transport stopped")
        if self._tasks:
            await asyncio.wait(self._tasks)

    def _accept(self, link: MemoryLink) -> None:
        assert self._on_link is not None
        self._accepted.add(link)
        task = asyncio.create_task(self._serve_link(link, self._on_link), name=f"memory {link!r}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve_link(self, link: MemoryLink, on_link: LinkHandler) -> None:
        """The per-link handler task: the link lives while ``on_link`` runs."""
        try:
            await serve_link(link, on_link, transport=self.name)
        finally:
            self._accepted.discard(link)

    def __repr__(self) -> str:
        return f"<MemoryTransport {_SCHEME}{self.address}>"

"""What both ends of an HTTP link share: a bounded queue per direction and how the link ends."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Iterable
from typing import Final

from gravpy.errors import LinkClosedError, UsageError
from gravpy.transport_kit import CLOSED_BY_LOCAL, link_closed
from transports.http.wire import _PREFIX


class _Frames:
    """One direction at one end of a link: frames in order, bounded, and how it ended.

    A frame costs its wire size (length + 4). ``full`` is a high-water mark: one frame may go past
    ``limit``. Once ended, ``error`` is the message the user of this direction gets.
    """

    __slots__ = ("_changed", "error", "frames", "limit", "size")

    def __init__(self, limit: int) -> None:
        self.frames: deque[bytes] = deque()
        self.size = 0
        self.limit = limit
        self.error: LinkClosedError | None = None
        self._changed = asyncio.Event()

    @property
    def full(self) -> bool:
        return self.size >= self.limit

    async def wait_until(self, ready: Callable[[], bool]) -> None:
        """Return once ``ready()`` is true; it is checked again after every change."""
        while not ready():
            self._changed.clear()
            await self._changed.wait()

    def wake(self) -> None:
        self._changed.set()

    def push(self, frames: Iterable[bytes]) -> None:
        """Append ``frames`` (ignored once ended)."""
        if self.error is None:
            for frame in frames:
                self.frames.append(frame)
                self.size += len(frame) + _PREFIX.size
            self.wake()

    def pop(self) -> bytes:
        frame = self.frames.popleft()
        self.size -= len(frame) + _PREFIX.size
        self.wake()
        return frame

    def take(self, max_bytes: int) -> list[bytes]:
        """The oldest frames whose wire size fits in ``max_bytes``, and at least one."""
        frames, taken = self.frames, 0
        batch: list[bytes] = []
        while frames and (not batch or taken + len(frames[0]) + _PREFIX.size <= max_bytes):
            frame = frames.popleft()
            taken += len(frame) + _PREFIX.size
            batch.append(frame)
        self.size -= taken
        self.wake()
        return batch

    def end(self, error: LinkClosedError, *, drop: bool) -> None:
        """End this direction; the first error stays. ``drop`` discards the queued frames."""
        if self.error is None:
            self.error = error
        if drop:
            self.frames.clear()
            self.size = 0
        self.wake()


class _HttpLink:
    """What both ends share: an inbound and an outbound ``_Frames`` and how the link ends."""

    transport: Final = "http"
    initiator: bool

    def __init__(self, remote_address: str, peer_max_frame: int, queue_bytes: int) -> None:
        self.remote_address = remote_address
        self.peer_max_frame = peer_max_frame
        self.inbound = _Frames(queue_bytes)
        self.outbound = _Frames(queue_bytes)
        self.end_reason: str | None = None  # set when this side closed the link

    @property
    def ended(self) -> bool:
        return self.outbound.error is not None

    async def send(self, frame: bytes) -> None:
        """Queue one frame; waits while ``queue_bytes`` are waiting to go (backpressure).

        A frame over the receiver's ``max_frame_bytes`` closes the link, as the receiver would.
        """
        if not isinstance(frame, bytes | bytearray | memoryview):
            raise UsageError(f"a frame must be bytes, got {type(frame).__name__}")
        data = bytes(frame)
        if len(data) > self.peer_max_frame and not self.ended:
            limit = self.peer_max_frame
            await self.close(f"frame of {len(data)} bytes exceeds the receiver's limit of {limit}")
        out = self.outbound
        await out.wait_until(lambda: out.error is not None or not out.full)
        if out.error is not None:
            raise out.error
        out.push((data,))

    async def recv(self) -> bytes:
        """Return the next frame; raises LinkClosedError once the link is closed and drained."""
        inbound = self.inbound
        await inbound.wait_until(lambda: bool(inbound.frames) or inbound.error is not None)
        if not inbound.frames:
            assert inbound.error is not None
            raise inbound.error
        return inbound.pop()

    async def close(self, reason: str = "") -> None:
        raise NotImplementedError

    def _end_locally(self, reason: str) -> bool:
        """Closed here: recv fails at once, queued frames still go. False if it had already ended."""
        if self.inbound.error is not None:
            return False
        self.end_reason = reason
        error = link_closed(self.remote_address, CLOSED_BY_LOCAL, reason)
        self.inbound.end(error, drop=True)
        self.outbound.end(error, drop=False)
        return True

    def _end_remotely(self, error: LinkClosedError) -> None:
        """Closed by the peer or lost: frames received are still read, nothing more goes out."""
        self.inbound.end(error, drop=False)
        self.outbound.end(error, drop=True)

    def __repr__(self) -> str:
        role = "dialled" if self.initiator else "accepted"
        return f"<{type(self).__name__} {role} {self.remote_address}>"

"""LinkWriter: the sending half of a PeerLink: its bounded queue, its writer loop, its direct path.

Outgoing messages wait in a bounded queue (``queue_limit`` messages, ``queue_bytes`` of data). Past
its high-water mark the writer reports itself congested to the bus (``Pod.publish`` waits); when it
is full, new messages are refused and counted in the link's ``drops``. The writer loop, one task,
sleeps on ``wake``; woken, it batches the queue into MSGS frames (``max_batch`` messages each) and
writes every frame the protocol has queued, in order: messages, pings, interests, the CLOSE.

A transport that can write without waiting (``write_now``: TCP's and WebSocket's) lets the first
message of a loop turn go straight out when the writer is idle and nothing is queued: a lone
request or reply leaves without a hop through the writer task, and the rest of a burst queues for
the writer as before. If the transport's buffer is full, the frames that direct write could not
write are the writer's first, ahead of anything queued after them.

Closing (``end``): the writer sends what is queued, then CLOSE with the reason code, then stops.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from gravpy import _log as logs
from gravpy.errors import UsageError
from gravpy.mesh.link_stats import LinkDrops
from gravpy.message import Message
from gravpy.plugins import Link
from gravpy.ports import Backpressure
from gravpy.proto import REASON_NORMAL, PeerProtocol
from gravpy.proto.handshake import CLOSED, OPEN

__all__ = ["LinkWriter"]

_log = logs.get_logger("gravpy.mesh.link_writer")


class LinkWriter:
    """The queue and writer of one link; see the module docstring. ``PeerLink`` owns one."""

    def __init__(
        self,
        link: Link,
        proto: PeerProtocol,
        drops: LinkDrops,
        backpressure: Backpressure,
        *,
        queue_limit: int,
        queue_bytes: int,
    ) -> None:
        self._link = link
        self._proto = proto
        self._drops = drops
        self._bus = backpressure
        self._queue: deque[Message] = deque()
        self._queue_seqs: deque[int] = deque()  # the origin number of each queued message (0: none)
        self._queue_limit = queue_limit
        self._queue_bytes = queue_bytes  # bound on the data of the queued messages
        self._pending = 0  # bytes of data queued now
        # publish() waits past a few frames' worth, so the writer starts early and often; or
        # past half the bytes the queue may hold (large messages fill it long before the count)
        self._high_water = min(queue_limit // 2, 4 * proto.config.limits.max_batch)
        self._bytes_water = queue_bytes // 2
        self.congested = False  # over the high-water mark (groups prefer other links)
        self.wake = asyncio.Event()
        self.wake.set()  # the protocol queued our HELLO
        self._write_now: Callable[[bytes], bool] | None = getattr(link, "write_now", None)
        self._writing = False  # between taking frames and writing the last one
        self._direct_turn = False  # a message went straight out this loop turn
        self._unsent: list[bytes] = []  # frames a direct write could not write: the writer's first
        self.closing = False
        self._close_code = REASON_NORMAL
        self._after_queue: Callable[[], None] | None = None  # queues a frame behind the queue

    @property
    def queued(self) -> int:
        """Messages waiting in the queue."""
        return len(self._queue)

    def enqueue(self, msg: Message, seq: int) -> bool:
        """Queue ``msg`` with its origin number ``seq``; False (and counted) if it is refused."""
        queue = self._queue
        if not queue and self._write_now is not None and self._send_directly(msg, seq):
            return True
        size = len(msg.data)
        if (
            len(queue) >= self._queue_limit
            or self.closing
            or self._pending + size > self._queue_bytes
        ):
            self._drops.refuse(closing=self.closing, full=len(queue) >= self._queue_limit)
            return False
        queue.append(msg)
        self._queue_seqs.append(seq)
        self._pending += size
        n = len(queue)
        if n == 1:  # the writer empties the queue before it waits: wake it only then
            self.wake.set()
        if not self.congested and (n >= self._high_water or self._pending >= self._bytes_water):
            self.congested = True
            self._bus.mark_congested(self)
        return True

    def _send_directly(self, msg: Message, seq: int) -> bool:
        """Write ``msg`` now if the writer is idle and nothing went straight out this loop turn."""
        write_now, proto = self._write_now, self._proto
        if (
            write_now is None
            or self._direct_turn
            or self._writing
            or self._unsent
            or self.closing
            or proto.state is not OPEN
        ):
            return False
        self._direct_turn = True
        asyncio.get_running_loop().call_soon(self._next_turn)
        self._send_batch([msg], [seq] if seq else None)
        frames = proto.data_to_send()
        for i, frame in enumerate(frames):
            if not write_now(frame):  # the transport's buffer is full: the writer waits for room
                self._unsent = frames[i:]
                self.wake.set()
                break
        return True

    def _next_turn(self) -> None:
        self._direct_turn = False

    def end(self, reason: str) -> bool:
        """Send what is queued, then CLOSE with ``reason``, then stop. False if already ending."""
        if self.closing:
            return False
        self.closing = True
        self._close_code = reason
        self.wake.set()
        return True

    def after_queue(self, queue_frame: Callable[[], None]) -> None:
        """Call ``queue_frame`` (it queues a protocol frame) once every message queued now is in
        a frame: what it queues follows them all (a link's MOVED, gravpy.mesh.upgrade)."""
        self._after_queue = queue_frame
        self.wake.set()

    def drop_queue(self) -> int:
        """Forget what is queued (the caller counts it by its reason); how many there were."""
        n = len(self._queue)
        self._queue.clear()
        self._queue_seqs.clear()
        self._pending = 0
        self._relieve()
        return n

    async def run(self) -> None:
        """The writer loop: until the protocol is CLOSED, or ``end`` was called and CLOSE sent."""
        proto = self._proto
        while True:
            await self.wake.wait()
            self.wake.clear()
            await self.write_all()
            if self.closing:
                await self.write_close()
                return
            if proto.state is CLOSED:
                return

    async def write_close(self) -> None:
        """Close the protocol with the reason ``end`` gave (if it is not closed) and write it all."""
        if self._proto.state is not CLOSED:
            self._proto.close(self._close_code)
        await self.write_all()

    async def write_last(self, reason: str) -> None:
        """The link ends before it opened (a refused handshake): close the protocol (if it is not
        closed) and write its last frames (the REJECT or CLOSE, and anything before it), then
        close the link: at once, not waiting for the remote's close, where the transport can
        (its ``refuse``: a refused attempt then costs one write and no close handshake)."""
        if self._proto.state is not CLOSED:
            self._proto.close(self._close_code)
        frames, self._unsent = [*self._unsent, *self._proto.data_to_send()], []
        refuse = getattr(self._link, "refuse", None)
        if refuse is not None:
            await refuse(frames, reason or self._close_code)
            return
        for frame in frames:
            await self._link.send(frame)

    async def write_all(self) -> None:
        """Batch the queued messages into frames and write every frame the protocol has."""
        self._writing = True
        try:
            await self._write_frames()
        finally:
            self._writing = False

    async def _write_frames(self) -> None:
        proto, queue, link = self._proto, self._queue, self._link
        numbers = self._queue_seqs
        max_batch = proto.config.limits.max_batch
        if self._unsent:
            unsent, self._unsent = self._unsent, []
            for frame in unsent:
                await link.send(frame)
        while True:
            if queue and proto.state is OPEN:
                if len(queue) <= max_batch:  # the usual case: take it all, in two calls
                    batch, seqs = list(queue), list(numbers)
                    queue.clear()
                    numbers.clear()
                    self._pending = 0
                else:
                    batch = [queue.popleft() for _ in range(max_batch)]
                    seqs = [numbers.popleft() for _ in range(max_batch)]
                    self._pending -= sum(len(m.data) for m in batch)
                self._send_batch(batch, seqs if any(seqs) else None)
                if (
                    self.congested
                    and len(queue) <= self._high_water // 2
                    and self._pending <= self._bytes_water // 2
                ):
                    self._relieve()
            if self._after_queue is not None and not queue and proto.state is OPEN:
                then, self._after_queue = self._after_queue, None
                then()
            frames = proto.data_to_send()
            if not frames:
                return
            for frame in frames:
                await link.send(frame)

    def _send_batch(self, batch: list[Message], seqs: list[int] | None) -> None:
        try:
            self._proto.send_messages(batch, seqs)
        except UsageError:  # a message over the limits: send the others, count it dropped
            for i, msg in enumerate(batch):
                try:
                    self._proto.send_messages([msg], None if seqs is None else seqs[i : i + 1])
                except UsageError as exc:
                    self._drops.too_large += 1
                    _log.warning(
                        "message_too_large", msg_uuid=msg.uuid, type=msg.type, error=str(exc)
                    )

    def _relieve(self) -> None:
        if self.congested:
            self.congested = False
            self._bus.relieve(self)

"""LinkReader: the receiving half of a PeerLink: its reads, its hand-over to the owner, its backlog.

Every ``recv`` on a link is made here. While the link handshakes, ``PeerLink.run`` reads one
frame at a time from its own task (``handshake_frame``: None at the handshake deadline, or when
``interrupt`` stops the wait because the link was ended; ``read_refusal`` when our write failed).
Once the link is OPEN, the reader loop (``run``, one task) feeds each frame to the protocol and
hands what it reports to the link's owner (``dispatch``): the messages to ``link_messages`` and
every other event to ``link_events``. On a link that offers ``take_frames``, the frames that arrive
while the loop waits take that path in the transport's callback, and the loop is woken only for a
backlog (or an error raised there, which it raises as its own).

Incoming messages that the owner cannot take yet (a local pod is congested: ``link_messages``
returns how many it took) wait in the ``backlog``; the reader then holds off reading, so TCP
pushes back to the sender, and retries in steps (see ``_hold``). A large frame goes the same way:
32 messages are handed on, the rest wait in the backlog and follow 32 per loop turn, so that the
replies and sends they cause leave while the rest is delivered (both ends work at once).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from gravpy.congestion import PodHold
from gravpy.errors import LinkClosedError
from gravpy.mesh.link_writer import LinkWriter
from gravpy.message import Message
from gravpy.plugins import Link
from gravpy.ports import Backpressure, LinkOwner
from gravpy.proto import Event, MessagesReceived, PeerProtocol
from gravpy.proto.handshake import CLOSED

if TYPE_CHECKING:
    from gravpy.mesh.peer_link import PeerLink

__all__ = ["FrameSink", "LinkReader"]

FrameSink = Callable[[bytes], bool]  # a link's ``take_frames`` argument

# Messages handed on per loop turn. A frame of hundreds is delivered in chunks with a loop turn
# between them, so replies and the writer's next frame go out while the rest is still being
# delivered: the two ends of a link work at once instead of in turns (bench_mesh, 100 in flight).
_CHUNK = 32


class LinkReader:
    """The reads and the backlog of one link; see the module docstring. ``PeerLink`` owns one
    and is what the owner is told the messages and events came from."""

    def __init__(
        self,
        peer: PeerLink,
        link: Link,
        proto: PeerProtocol,
        owner: LinkOwner,
        backpressure: Backpressure,
        writer: LinkWriter,
    ) -> None:
        self._peer = peer
        self._link = link
        self._proto = proto
        self._owner = owner
        self._bus = backpressure
        self._writer = writer
        self._wake = writer.wake
        self._backlog: deque[Message] = deque()  # received, held while a local pod is congested
        self._backlog_seqs: deque[int] = deque()  # their origin numbers (0: none)
        # its waits for congested pods (``_hold``): steps of a quarter of dead_after, two of them
        step = proto.config.dead_after / 4
        self._pod_hold = PodHold(step, 2 * step)
        self._handshake_task: asyncio.Task[object] | None = None  # waiting for a handshake frame
        self._interrupted = False  # ``interrupt`` cancelled that wait
        self._poked = False  # the frame sink woke the reader: its next empty frame is no frame
        self._sink_error: Exception | None = None  # raised in the sink, for the reader to raise
        self._owner_ready = asyncio.Event()  # the owner takes messages again (``take_again``)

    def take_again(self) -> None:
        """The owner takes the messages it declined with no pod congested: hand the backlog on."""
        self._owner_ready.set()

    # -- while the link handshakes ---------------------------------------------------------------

    async def handshake_frame(self, deadline: float | None) -> bytes | None:
        """The next frame, or None at the handshake ``deadline`` or when ``interrupt`` was called."""
        self._handshake_task = asyncio.current_task()
        try:
            delay = None if deadline is None else max(0.0, deadline - time.monotonic())
            async with asyncio.timeout(delay):
                return await self._link.recv()
        except TimeoutError:
            return None
        except asyncio.CancelledError:
            task = self._handshake_task
            if not self._interrupted or task is None or task.uncancel() > 0:
                raise
            return None
        finally:
            self._handshake_task = None

    def interrupt(self) -> None:
        """The link was ended: stop waiting for a handshake frame, if that is what runs."""
        if self._handshake_task is not None:
            self._interrupted = True
            self._handshake_task.cancel()

    async def read_refusal(self) -> None:
        """Read what the remote sent before it closed (its REJECT, say) until the link ends."""
        proto = self._proto
        try:
            while proto.state is not CLOSED and not self._writer.closing:
                frame = await self.handshake_frame(proto.next_timer())
                now = time.monotonic()
                events = proto.tick(now) if frame is None else proto.receive_frame(frame, now)
                if events:
                    self.dispatch(events)
        except LinkClosedError:
            return

    # -- once it is open -------------------------------------------------------------------------

    def dispatch(self, events: list[Event]) -> None:
        """Messages to ``link_messages`` (what is not taken waits in the backlog), the rest to
        ``link_events``, in the order the protocol reported them."""
        owner, peer = self._owner, self._peer
        for event in events:
            if type(event) is MessagesReceived:
                messages = event.messages
                seqs = event.seqs if event.seqs is not None else [0] * len(messages)
                if self._backlog:
                    self._backlog.extend(messages)
                    self._backlog_seqs.extend(seqs)
                    continue
                if len(messages) > _CHUNK:
                    taken = owner.link_messages(peer, messages[:_CHUNK], seqs[:_CHUNK])
                else:
                    taken = owner.link_messages(peer, messages, seqs)
                if taken < len(messages):  # the rest of a large frame, or what pods refused
                    self._backlog.extend(messages[taken:])
                    self._backlog_seqs.extend(seqs[taken:])
            else:
                owner.link_events(peer, [event])

    async def run(self) -> None:
        """The reader loop, from the moment the link is OPEN until it fails: then the link is
        told (``PeerLink.read_closed``) and the loop returns."""
        # a link that can hand frames over from its transport callback (``take_frames``) saves
        # the wake-up of this task per frame; this task then runs only for the backlog
        take_frames: Callable[[FrameSink | None], None] | None = getattr(
            self._link, "take_frames", None
        )
        try:
            if self._backlog:  # left by the handshake's last frame
                await self._take_backlog()
            if take_frames is not None:
                take_frames(self._frame_now)
            while True:
                frame = await self._link.recv()
                if self._poked and not frame:  # the sink's wake-up, not a frame
                    self._poked = False
                    error, self._sink_error = self._sink_error, None
                    if error is not None:
                        raise error
                else:
                    self._receive(frame)
                if self._backlog:
                    await self._take_backlog()
        except LinkClosedError as exc:
            self._peer.read_closed(str(exc))
        finally:
            if take_frames is not None:
                take_frames(None)

    def _receive(self, frame: bytes) -> None:
        """One frame to the protocol, and what it reports to the owner. (The remote's HELLO
        came during the handshake: ``PeerLink`` learned who it is before this loop began.)"""
        proto = self._proto
        events = proto.receive_frame(frame, time.monotonic())
        if events:
            self.dispatch(events)
        if proto.has_data_to_send:  # a PONG, a handshake step, a WITHDRAW_ACK
            self._wake.set()

    def _frame_now(self, frame: bytes) -> bool:
        """The link's frame sink, run in its transport callback while the reader waits: False
        when the reader must run (a backlog to hand on, or an error to raise as its own)."""
        try:
            self._receive(frame)
        except Exception as exc:
            self._sink_error = exc
        if self._backlog or self._sink_error is not None:
            self._poked = True
            return False
        return True

    async def _take_backlog(self) -> None:
        self._proto.hold_reading()
        try:
            await self._hold()
        finally:
            self._proto.resume_reading(time.monotonic())

    async def _hold(self) -> None:
        """Hand on the backlog a chunk per loop turn; read no more until it is empty, and while
        local pods are congested, so the sender's link backs up.

        Waits in steps of a quarter of ``dead_after``. A burst is held: the pods catch up and the
        link reads on. Congested pods are set aside when a step passes with no progress (a stuck
        pod), or when the link's waits for them, less the time it ran free in between, add up to
        two steps (a slow one: it relieves within each step, yet holds the link most of the
        time). They then drop by their overflow policy (counted) instead of holding this link,
        their siblings get everything that follows, and the link reads again well before its
        unread pings could make it look dead.
        """
        bus = self._bus
        while self._backlog:
            if bus.pods_congested:
                await bus.wait_pods(self._pod_hold)
            backlog, backlog_seqs = self._backlog, self._backlog_seqs
            n = min(len(backlog), _CHUNK)
            pending = [backlog.popleft() for _ in range(n)]
            numbers = [backlog_seqs.popleft() for _ in range(n)]
            self._owner_ready.clear()
            taken = self._owner.link_messages(self._peer, pending, numbers)
            backlog.extendleft(reversed(pending[taken:]))
            backlog_seqs.extendleft(reversed(numbers[taken:]))
            if not taken and not bus.pods_congested:  # the owner holds them (a move draining)
                await self._owner_ready.wait()
            await asyncio.sleep(0)  # let the pods' drains run between chunks

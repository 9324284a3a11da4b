"""One TCP transport link: :class:`TcpLink`, an ``asyncio.Protocol`` that is also a gravpy Link.

The wire (see :mod:`transports.tcp` for the whole story): each side first sends a 12-byte
greeting, ``b"GRAVTCP"``, a version byte (1) and its ``max_frame_bytes`` as a big-endian u32. Then
frames, each a big-endian u32 length and that many bytes. A length with the top bit set is not a
frame but the **close**: the low 31 bits are the length of a UTF-8 reason (at most 1,024 bytes).

Why a Protocol and not streams: bytes are cut into frames in ``data_received`` and handed straight
to a waiting ``recv`` -- no reader task, no extra hop per frame. A core that set a frame sink
(``take_frames``) gets them still sooner: while its ``recv`` waits with nothing queued, each frame
goes to the sink from ``data_received`` itself, and the waiting task is woken only when the sink
asks (it returns False; ``recv`` then returns ``b""`` once, ahead of any frame, and frames queue for
``recv`` until it waits again). Receiving is bounded by
``max_queue`` frames: past it, reading from the socket pauses until ``recv`` catches up (TCP then
slows the sender). Sending writes to the socket's buffer at once; above ``write_limit`` bytes
buffered, ``send`` waits (the transport's flow control) -- that buffer is the bounded send queue,
and its overflow policy is to make the sender wait.

Closing, like a WebSocket close: the closer writes the close frame after what it sent and waits (at
most ``close_timeout``) for the peer to hang up; the peer, on reading the close frame, keeps what
it received for ``recv``, drops what it had not sent, and hangs up. A peer that hangs up without a
close frame leaves a link that is **lost**. A length over ``max_frame_bytes`` is refused before its
body is read: the receiver closes the link with the reason, and a sender that knows the limit (from
the greeting) refuses the frame itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections import deque
from collections.abc import Callable, Sequence
from typing import Final, cast

from gravpy.errors import LinkClosedError, UsageError
from gravpy.transport_kit import (
    CLOSED_BY_LOCAL,
    CLOSED_BY_PEER,
    LOST,
    describe_failure,
    link_closed,
)
from transports._addresses import format_address

__all__ = ["GREETING", "MAX_REASON_BYTES", "BadGreeting", "Refused", "TcpLink", "close_frame"]

GREETING: Final = struct.Struct(">7sBI")
_MAGIC: Final = b"GRAVTCP"
_VERSION: Final = 1
_HEADER: Final = struct.Struct(">I")
_CLOSE_BIT: Final = 0x8000_0000
MAX_REASON_BYTES: Final = 1024
_JOIN_BELOW: Final = 1 << 14  # smaller frames go out in one write with their header


class BadGreeting(Exception):
    """What came first was not a gravpy TCP greeting: not a gravpy endpoint, or another version."""


class Refused(Exception):
    """The acceptor sent a close frame instead of its greeting; the message is its reason."""


def _reason_bytes(reason: str) -> bytes:
    return reason.encode()[:MAX_REASON_BYTES].decode(errors="ignore").encode()


def close_frame(reason: str) -> bytes:
    """The close frame with ``reason`` (cut to ``MAX_REASON_BYTES`` on a character boundary)."""
    data = _reason_bytes(reason)
    return _HEADER.pack(_CLOSE_BIT | len(data)) + data


class TcpLink(asyncio.Protocol):
    """A gravpy :class:`~gravpy.plugins.Link` over one TCP (or TLS) connection."""

    transport: Final = "tcp"  # the Link's transport name; the socket is ``_sock``

    def __init__(
        self,
        *,
        initiator: bool,
        max_frame_bytes: int,
        max_queue: int,
        write_limit: int,
        close_timeout: float,
        on_greeted: Callable[[TcpLink], None] | None = None,
        on_lost: Callable[[TcpLink], None] | None = None,
        refusal: Callable[[object, str], str | None] | None = None,
    ) -> None:
        self.initiator = initiator
        self.remote_address = "?"
        self.peer_max_frame = 0
        self._max_frame = max_frame_bytes
        self._max_queue = max_queue
        self._write_limit = write_limit
        self._close_timeout = close_timeout
        self._on_greeted, self._on_lost = on_greeted, on_lost
        self._refusal = refusal
        self._loop = asyncio.get_running_loop()
        self._sock: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._need = 0  # bytes the buffer must hold before it is worth parsing again
        self._greeting: asyncio.Future[int] = self._loop.create_future()
        self.timed_out = False  # accepted, and dropped at its deadline: no greeting had come
        self._frames: deque[bytes] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._writable = asyncio.Event()
        self._writable.set()
        self._recv_error: LinkClosedError | None = None
        self._send_error: LinkClosedError | None = None
        self._lost: asyncio.Future[None] = self._loop.create_future()
        self._timer: asyncio.TimerHandle | None = None
        self._expired = False  # the greeting's deadline passed before TLS completed
        self.heard = False  # some bytes of the peer's greeting arrived (an acceptor's eviction)
        self._paused = False
        self._closing = False  # our close frame is written: what comes is read for the peer's
        self._sink: Callable[[bytes], bool] | None = None
        self._poked = False  # the sink asked for the reader: recv returns b"" first

    # -- asyncio.Protocol ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports have the asyncio.Transport methods without subclassing it
        transport = cast(asyncio.Transport, transport)
        self._sock = transport
        if self._expired:  # TLS completed after the deadline: the link was already given up
            transport.abort()
            return
        self.remote_address = format_address(transport.get_extra_info("peername"))
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport.set_write_buffer_limits(high=self._write_limit)
        peercert = transport.get_extra_info("peercert")
        refused = self._refusal(peercert, self.remote_address) if self._refusal else None
        if refused is not None:
            self._greeting.cancel()
            self._close_here(refused)  # the close frame, in place of the greeting
            return
        transport.write(GREETING.pack(_MAGIC, _VERSION, self._max_frame))

    def data_received(self, data: bytes) -> None:
        if self._recv_error is not None and not self._closing:
            return  # ended: what still comes is dropped
        buffer = self._buffer
        if buffer:
            buffer += data
            if len(buffer) < self._need:
                return  # a frame still incomplete: no need to look again yet
            data = bytes(buffer)
            buffer.clear()
        pos = 0 if self._greeting.done() else self._read_greeting(data)
        if pos >= 0:
            self._cut_frames(data, pos)
        frames = self._frames
        if frames:
            waiter = self._waiter
            if self._sink is not None and waiter is not None and not waiter.done():
                self._hand_to_sink(frames)  # the reader waits with nothing queued: no hop
            else:
                self._wake_reader()
            if len(frames) >= self._max_queue and not self._paused and self._sock is not None:
                self._paused = True
                self._sock.pause_reading()  # recv() resumes reading once it has caught up

    def _hand_to_sink(self, frames: deque[bytes]) -> None:
        sink = self._sink
        assert sink is not None
        while frames:
            if not sink(frames.popleft()):  # the sink wants its reader: the rest waits for recv
                self._poked = True
                self._wake_reader()
                return

    def _cut_frames(self, data: bytes, pos: int) -> None:
        """Queue the whole frames of ``data`` from ``pos``; keep the rest for the next bytes."""
        end, frames, limit, need = len(data), self._frames, self._max_frame, 4
        while end - pos >= 4:
            (size,) = _HEADER.unpack_from(data, pos)
            if size & _CLOSE_BIT:
                need = self._read_close(data, pos, size & ~_CLOSE_BIT)
                if need == 0:
                    return
                break
            if size > limit:
                self._close_here(
                    f"frame of {size} bytes exceeds the limit of {limit}", framed=False
                )
                return
            if end - pos - 4 < size:
                need = 4 + size
                break
            if not self._closing:  # after our close only the peer's close frame matters
                frames.append(data[pos + 4 : pos + 4 + size])
            pos += 4 + size
        if pos < end:
            self._wait_for(data[pos:], need)

    def eof_received(self) -> bool | None:
        return False  # the peer hung up: close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._greeting.done():
            lost = ConnectionResetError("the connection closed before the gravpy greeting")
            lost.__cause__ = exc
            self._greeting.set_exception(lost)
            self._greeting.exception()  # retrieved: a dial that gave up does not ask
        if self._recv_error is None:
            what = describe_failure(exc) if exc is not None else "dropped without a close frame"
            self._end(link_closed(self.remote_address, LOST, what), keep=True)
        if self._timer is not None:
            self._timer.cancel()
        if not self._lost.done():
            self._lost.set_result(None)
        if self._on_lost is not None:
            self._on_lost(self)

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    # -- the Link --------------------------------------------------------------------------------

    async def send(self, frame: bytes) -> None:
        """Send one frame; waits while more than ``write_limit`` bytes are buffered."""
        if not isinstance(frame, bytes | bytearray | memoryview):
            raise UsageError(f"a frame must be bytes, got {type(frame).__name__}")
        if self._send_error is not None:
            raise self._send_error
        size = len(frame)
        if size > self.peer_max_frame:
            await self.close(
                f"frame of {size} bytes exceeds the receiver's limit of {self.peer_max_frame}"
            )
            raise self._send_failure() or link_closed(self.remote_address, CLOSED_BY_LOCAL)
        sock = self._sock
        assert sock is not None
        if size < _JOIN_BELOW:
            sock.write(_HEADER.pack(size) + frame)
        else:
            sock.write(_HEADER.pack(size))
            sock.write(frame)
        if not self._writable.is_set():
            await self._writable.wait()
            failure = self._send_failure()
            if failure is not None:
                raise failure

    def _send_failure(self) -> LinkClosedError | None:
        """Why sending fails, read afresh after an ``await`` (the attribute itself is narrowed to
        None above it, and a mypyc-compiled build would then insist it is None)."""
        return self._send_error

    def write_now(self, frame: bytes) -> bool:
        """Write one frame at once if the link is open and below ``write_limit``; else write
        nothing and return False (``send`` is the way that waits)."""
        sock = self._sock
        size = len(frame)
        if (
            sock is None
            or self._send_error is not None
            or not self._writable.is_set()
            or size > self.peer_max_frame
            or sock.is_closing()
        ):
            return False
        if size < _JOIN_BELOW:
            sock.write(_HEADER.pack(size) + frame)
        else:
            sock.write(_HEADER.pack(size))
            sock.write(frame)
        return True

    def take_frames(self, sink: Callable[[bytes], bool] | None) -> None:
        """From now on hand frames to ``sink`` while ``recv`` waits with nothing queued (see the
        module docstring); None: every frame goes to ``recv`` again."""
        self._sink = sink

    async def recv(self) -> bytes:
        """The next frame; LinkClosedError (who closed it, why) once closed and drained.

        ``b""`` once after the frame sink returned False, before any frame (a wake-up, not a frame).
        """
        while True:
            if self._poked:
                self._poked = False
                return b""
            if self._frames:
                frame = self._frames.popleft()
                if self._paused and len(self._frames) < self._max_queue // 2 + 1:
                    self._paused = False
                    if self._sock is not None and not self._sock.is_closing():
                        self._sock.resume_reading()
                return frame
            if self._recv_error is not None:
                raise self._recv_error
            if self._waiter is not None:
                raise UsageError(
                    f"link to {self.remote_address}: recv() called from two tasks at once"
                )
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    async def close(self, reason: str = "") -> None:
        """Close with ``reason`` after what was sent; waits (``close_timeout``) for the peer. Idempotent."""
        if self._recv_error is None:
            self._close_here(reason)
        try:
            await asyncio.shield(self._lost)
        except asyncio.CancelledError:
            self.abort()  # whoever waited gave up: nothing is left open behind them
            raise

    async def refuse(self, frames: Sequence[bytes], reason: str) -> None:
        """End a refused handshake: ``frames`` (the REJECT) and the close frame go out in one
        write, and this side hangs up at once instead of waiting for the peer to (a refused peer
        gets no more of this node's time). The peer reads the frames, then the reason."""
        sock = self._sock
        fits = all(len(frame) <= self.peer_max_frame for frame in frames)
        if self._recv_error is None and sock is not None and not sock.is_closing() and fits:
            self._close_here(reason, b"".join(_HEADER.pack(len(f)) + f for f in frames))
            sock.close()
            return
        for frame in frames:
            await self.send(frame)
        await self.close(reason)

    def abort(self) -> None:
        """Drop the connection at once, without a close frame."""
        if self._sock is not None:
            self._sock.abort()

    async def wait_greeted(self) -> int:
        """Wait for the peer's greeting; its ``max_frame_bytes``. Raises BadGreeting or OSError."""
        return await asyncio.shield(self._greeting)

    def expire_handshake(self, seconds: float) -> None:
        """Drop the connection if the peer's greeting has not come within ``seconds``."""
        self._timer = self._loop.call_later(seconds, self._handshake_expired)

    @property
    def connected(self) -> bool:
        """True once the connection is made (with TLS: once its handshake completed)."""
        return self._sock is not None

    def handshake_failed(self) -> None:
        """Its TLS handshake failed or was dropped: the connection is never made; no deadline."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._expired = True

    def turn_away(self, reason: str) -> None:
        """Refuse the connection before its greeting came: the close frame with ``reason``
        (after the greeting already written), then drop it at once, without waiting for the peer."""
        sock = self._sock
        if sock is None or sock.is_closing():
            return
        sock.write(close_frame(reason))
        sock.abort()

    def _handshake_expired(self) -> None:
        if self._sock is None:  # TLS never completed; asyncio tells no protocol of a failed
            self._expired = True  # handshake, so its end is here (else the link is kept forever)
            if self._on_lost is not None:
                self._on_lost(self)
            return
        if not self._greeting.done():
            self.timed_out = True
            self.abort()

    # -- how it ends -----------------------------------------------------------------------------

    def _read_greeting(self, data: bytes) -> int:
        """Take the greeting off ``data``: where frames start, or -1 (wait for more, or refused)."""
        self.heard = True
        if len(data) >= 4 and data[0] & 0x80:  # a close frame: the acceptor refused us
            return self._read_refusal(data)
        if len(data) < GREETING.size and _MAGIC.startswith(data[: len(_MAGIC)]):
            return self._wait_for(data, GREETING.size)
        if len(data) >= GREETING.size:
            magic, version, limit = GREETING.unpack_from(data)
            if magic == _MAGIC and version == _VERSION and limit > 0:
                self.peer_max_frame = limit
                if self._timer is not None:
                    self._timer.cancel()
                self._greeting.set_result(limit)
                if self._on_greeted is not None:
                    self._on_greeted(self)
                return GREETING.size
        shown = data[: GREETING.size]
        wrong = BadGreeting(f"not a gravpy TCP endpoint (it sent {shown!r})")
        return self._fail_greeting(wrong, LOST, "not a gravpy TCP peer")

    def _read_refusal(self, data: bytes) -> int:
        """The acceptor's close frame in place of its greeting: the dial fails with its reason."""
        size = _HEADER.unpack_from(data)[0] & ~_CLOSE_BIT
        if size > MAX_REASON_BYTES:
            wrong = BadGreeting(f"not a gravpy TCP endpoint (a close reason of {size} bytes)")
            return self._fail_greeting(wrong, LOST, "not a gravpy TCP peer")
        if len(data) < 4 + size:
            return self._wait_for(data, 4 + size)
        reason = data[4 : 4 + size].decode(errors="replace")
        return self._fail_greeting(Refused(f"refused: {reason}"), CLOSED_BY_PEER, reason)

    def _wait_for(self, data: bytes, need: int) -> int:
        """Keep ``data`` until ``need`` bytes are here; -1, for ``data_received``."""
        self._buffer += data
        self._need = need
        return -1

    def _fail_greeting(self, exc: Exception, closed_by: str, reason: str) -> int:
        """The greeting went wrong: the dial (if any) fails with ``exc``; drop the connection."""
        self._greeting.set_exception(exc)
        self._greeting.exception()  # retrieved: an acceptor has no dial to raise it
        self._end(link_closed(self.remote_address, closed_by, reason), keep=False)
        self.abort()
        return -1

    def _read_close(self, data: bytes, pos: int, size: int) -> int:
        """The peer's close frame at ``pos``: 0 once handled, else the bytes it needs in all."""
        if size > MAX_REASON_BYTES:
            reason = f"a close reason of {size} bytes (at most {MAX_REASON_BYTES})"
            self._close_here(reason, framed=False)
            return 0
        if len(data) - pos - 4 < size:
            return 4 + size
        reason = data[pos + 4 : pos + 4 + size].decode(errors="replace")
        self._end(link_closed(self.remote_address, CLOSED_BY_PEER, reason), keep=True)
        if self._sock is not None:
            self._sock.close()  # hang up: the closer waits for it
        return 0

    def _close_here(self, reason: str, last: bytes = b"", *, framed: bool = True) -> None:
        """Close from this side: the close frame goes after what was sent (and ``last``, frames
        already framed), then wait for the hang-up. Until then what arrives on a greeted link is
        still cut into frames (unless the peer broke the framing: not ``framed``), only to find
        the peer's close frame: a peer that closed at the same moment hangs up on ours as we
        hang up on its (neither waits ``close_timeout`` for the other)."""
        sock = self._sock
        if self._closing:  # our close is out; the peer broke the framing since: drop it
            if sock is not None:
                sock.abort()
            return
        partial, need = bytes(self._buffer), self._need  # a frame cut short: its rest follows
        self._end(link_closed(self.remote_address, CLOSED_BY_LOCAL, reason), keep=False)
        if sock is None or sock.is_closing():
            return
        greeting = self._greeting
        if framed and greeting.done() and not greeting.cancelled() and not greeting.exception():
            self._closing = True
            self._buffer += partial
            self._need = need
        data = _reason_bytes(reason)
        sock.write(last + _HEADER.pack(_CLOSE_BIT | len(data)) + data)
        if self._paused:
            self._paused = False
            sock.resume_reading()  # to see the hang-up
        self._timer = self._loop.call_later(self._close_timeout, sock.abort)

    def _end(self, error: LinkClosedError, *, keep: bool) -> None:
        """Fail recv (after the frames received if ``keep``) and send with ``error``; first wins."""
        if self._recv_error is not None:
            return
        self._recv_error = self._send_error = error
        if not keep:
            self._frames.clear()
        self._buffer.clear()
        self._writable.set()  # senders waiting for room see the error
        self._wake_reader()

    def _wake_reader(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def __repr__(self) -> str:
        role = "dialled" if self.initiator else "accepted"
        return f"<TcpLink {role} {self.remote_address}>"

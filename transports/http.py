"""HTTP transport: a link is a session of plain HTTP/1.1 requests, every one made by the dialler.

For networks where only plain HTTP passes (proxies, firewalls that refuse the WebSocket upgrade).
The core does the handshake, liveness and routing exactly as over WebSocket; this module only moves
opaque frames. Built on aiohttp: ``web.AppRunner`` and ``web.TCPSite`` listen, one
``ClientSession`` per transport dials.

Wire use
--------

Only the dialling side opens connections, so a dialler behind NAT or an outgoing-only proxy still
gets traffic both ways: frames for the acceptor ride in POST bodies, frames for the dialler in the
answers to the long polls it keeps outstanding. Paths are under ``path`` (default ``/meta/http``):

``POST {path}/open`` with ``X-Grav-Max-Frame-Bytes`` (the dialler's limit)
    200 and JSON ``{"version": 1, "session": ID, "max_frame_bytes": N, "poll_timeout": S}``; the
    acceptor hands a new link to ``on_link``. ``ID`` (``secrets.token_urlsafe``, 144 bits) is the
    session's only credential, so later requests carry it in the ``X-Grav-Session`` header, never
    in the URL (URLs end up in proxy and access logs).
``POST {path}/send`` with ``X-Grav-Session``, ``X-Grav-Seq: n``
    A body of frames for the acceptor; 204 once they are queued. Bodies are numbered 1, 2, ... and
    a number already taken is answered 204 and ignored, so a send can be retried. Backpressure:
    the answer is held until the frames fit in the acceptor's queue. One send is in flight per
    link, and every frame queued meanwhile goes into the next (batching is what makes HTTP fast).
    410 with the reason once the acceptor closed the link: the dialler sends nothing more but
    keeps polling for the frames the acceptor sent before it closed.
``GET {path}/recv`` with ``X-Grav-Session``, ``X-Grav-Ack: n``, ``X-Grav-Wait: s``, ``X-Grav-Room: b``
    A long poll: 200 with the next batch (numbered in ``X-Grav-Batch``) as soon as the acceptor
    has frames; 204 after ``s`` seconds (at most the acceptor's ``poll_timeout``) without any; 410
    with the close reason once the acceptor closed the link and every frame went out. ``Ack`` is
    the last batch received: the acceptor keeps a batch until it is acknowledged and sends it again
    to a poll that does not acknowledge it, so an answer lost with its connection costs a poll, not
    frames. ``Room`` is how many bytes the dialler can buffer: a batch holds no more (but at least
    one frame); ``Room: 0`` only says "still here" and is answered 204 at once. A newer poll ends
    an older one that is still waiting (204).
``POST {path}/close`` with ``X-Grav-Session``, the reason as the UTF-8 body
    The dialler closed the link; 204.

A body is frames, each a 4-byte big-endian length and that many bytes, and holds at most the
receiver's ``max_frame_bytes`` + 4 bytes. Every answer carries ``Cache-Control: no-store``.

Why long polls rather than one streamed (chunked) answer: an answer that ends after each batch
passes proxies that buffer bodies (many corporate and antivirus proxies do), a lost answer is
recovered by the acknowledgement above, and the dialler bounds its buffer with ``Room``. Under load a
poll returns at once with a full batch, so the round trip per batch costs little.

The acceptor never fails on what a client sends. Unknown session: 404. Another path or method:
404/405. A body over the limit or a frame over ``max_frame_bytes``: 413; a body that is not frames,
a bad header, a batch or acknowledgement out of sequence: 400 -- and these close the session with
that reason. Opening with the session table full or while stopping: 503. A session with no request
for 3 x ``poll_timeout`` is reaped, its link closed with the reason; a dialler whose own buffer is
full keeps polling with ``Room: 0``. Bodies are never decompressed, redirects never followed.

The dialler retries a request once when its connection dropped (a stale keep-alive connection) or
a proxy answered 502/503/504; numbered sends and acknowledged batches make that safe. A poll with
no answer within its wait + 10 s means the acceptor is gone: the link is lost. No proxy from the
environment (``trust_env=False``), no cookies.

Every aiohttp (and socket) exception, and every HTTP answer that ends a link, is translated in one
place, :class:`_ErrorMap`: :class:`~gravpy.errors.LinkClosedError` for a link (the message says who
closed it and why), :class:`~gravpy.errors.TransportError` for listen and dial failures, with the
original exception as ``__cause__``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import secrets
import socket
import struct
import time
import warnings
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator
from ssl import SSLContext
from types import TracebackType
from typing import Any, Final, NamedTuple
from urllib.parse import urlsplit

import aiohttp
import structlog
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from gravpy.errors import GravError, LinkClosedError, ProtocolError, TransportError, UsageError
from gravpy.plugins import LinkHandler
from gravpy.proto import DEFAULT_LIMITS
from transports.websocket import _format_address, _wildcard_guess

__all__ = ["HttpAcceptedLink", "HttpDialledLink", "HttpTransport"]

_log = structlog.get_logger(__name__)

_SCHEMES: Final = ("http", "https")
_VERSION: Final = 1
_PREFIX: Final = struct.Struct(">I")  # the length before each frame in a body
_SESSION: Final = "X-Grav-Session"
_MAX_FRAME: Final = "X-Grav-Max-Frame-Bytes"
_SEQ: Final = "X-Grav-Seq"
_ACK: Final = "X-Grav-Ack"
_WAIT: Final = "X-Grav-Wait"
_ROOM: Final = "X-Grav-Room"
_BATCH: Final = "X-Grav-Batch"
_SESSION_ID: Final = re.compile(r"[A-Za-z0-9_-]{16,128}")
_MAX_REASON_BYTES: Final = 1024
_SMALL_BODY: Final = 4096  # the answer to open
_POLL_GRACE: Final = 10.0  # a poll unanswered after its wait + this: the acceptor is gone
_IDLE_POLLS: Final = 3  # a session without a request for this many poll_timeouts is reaped
_ATTEMPTS: Final = 2  # a request whose connection dropped, or that a proxy failed, goes once more
_RETRY_STATUSES: Final = frozenset({502, 503, 504})
_RETRY_ERRORS: Final = (
    aiohttp.ServerDisconnectedError,
    aiohttp.ClientConnectionResetError,
    aiohttp.ClientPayloadError,
)


# -- errors: the one place ------------------------------------------------------------------------


class _HttpStatus(Exception):
    """An HTTP answer other than the one expected; :class:`_ErrorMap` says what it means."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"HTTP {status}: {text}" if text else f"HTTP {status}")
        self.status = status
        self.text = text


class _Refusal(ProtocolError):
    """What the other side sent breaks this transport's wire use; ``status`` is the HTTP answer."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class _ErrorMap:
    """``with errors:`` turns aiohttp, socket and HTTP-status failures into gravpy's. The one place."""

    __slots__ = ("action", "on_link", "remote")

    def __init__(self, remote: str, action: str, *, on_link: bool = False) -> None:
        self.remote = remote
        self.action = action
        self.on_link = on_link  # True: a failure ends a link, it is not a failed dial

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None or isinstance(exc, GravError) or not isinstance(exc, Exception):
            return  # no error, already ours, or CancelledError/KeyboardInterrupt: pass through
        raise self.translate(exc) from exc

    def translate(self, exc: Exception) -> GravError:
        if self.on_link:
            return LinkClosedError(self._link_ended(exc))
        if isinstance(exc, _HttpStatus):
            return TransportError(f"{self.action}: refused with {exc}")
        if isinstance(exc, TimeoutError):
            return TransportError(f"{self.action}: timed out")
        if isinstance(exc, aiohttp.ClientError | OSError | ValueError):
            return TransportError(f"{self.action}: {type(exc).__name__}: {exc}")
        return TransportError(f"{self.action}: unexpected {type(exc).__name__}: {exc}")

    def _link_ended(self, exc: Exception) -> str:
        link = f"link to {self.remote}"
        if isinstance(exc, _HttpStatus):
            if exc.status == 410:
                return (
                    f"{link} closed by peer: {exc.text}" if exc.text else f"{link} closed by peer"
                )
            if exc.status == 404:
                return (
                    f"{link} lost: the acceptor has no such session (stopped, restarted or reaped)"
                )
            if 400 <= exc.status < 500:
                return f"{link} closed by peer (HTTP {exc.status}): {exc.text}"
            return f"{link} lost: {exc}"
        if isinstance(exc, TimeoutError):
            return f"{link} lost: the acceptor did not answer in time"
        return f"{link} lost: {type(exc).__name__}: {exc}"


# -- bodies ---------------------------------------------------------------------------------------


def _encode_batch(frames: Iterable[bytes]) -> bytes:
    """A body: each frame as a 4-byte big-endian length and its bytes."""
    parts: list[bytes] = []
    for frame in frames:
        parts.append(_PREFIX.pack(len(frame)))
        parts.append(frame)
    return b"".join(parts)


def _decode_batch(body: bytes, max_frame_bytes: int) -> list[bytes]:
    """The frames of a body; raises _Refusal (413 for a frame over the limit, else 400)."""
    frames: list[bytes] = []
    pos, end = 0, len(body)
    while pos < end:
        if end - pos < _PREFIX.size:
            raise _Refusal(f"malformed body: {end - pos} stray bytes at offset {pos}")
        (size,) = _PREFIX.unpack_from(body, pos)
        pos += _PREFIX.size
        if size > max_frame_bytes:
            raise _Refusal(f"frame of {size} bytes exceeds the limit of {max_frame_bytes}", 413)
        if size > end - pos:
            raise _Refusal(f"malformed body: a frame of {size} bytes is cut at {end - pos}")
        frames.append(body[pos : pos + size])
        pos += size
    return frames


async def _read_limited(stream: aiohttp.StreamReader, limit: int) -> bytes | None:
    """The whole body, or None once it is longer than ``limit`` bytes (reading stops there)."""
    body = bytearray()
    while chunk := await stream.readany():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


async def _read_text(stream: aiohttp.StreamReader) -> str:
    """The start of a text body (a reason): at most ``_MAX_REASON_BYTES``, decoded leniently."""
    body = bytearray()
    while len(body) < _MAX_REASON_BYTES and (chunk := await stream.readany()):
        body += chunk
    return body[:_MAX_REASON_BYTES].decode(errors="replace")


def _payload(body: bytes) -> aiohttp.BytesPayload:
    """``body`` for a request, with Content-Length.

    aiohttp warns (ResourceWarning) about bytes bodies over 1 MiB, meant for data read from files;
    ours are already in memory and at most ``max_frame_bytes`` + 4, so writing them cannot block.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        return aiohttp.BytesPayload(body, content_type="application/octet-stream")


def _cut_reason(reason: str) -> bytes:
    """``reason`` as UTF-8, cut to ``_MAX_REASON_BYTES`` on a character boundary."""
    return reason.encode()[:_MAX_REASON_BYTES].decode(errors="ignore").encode()


# -- links ----------------------------------------------------------------------------------------


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
        self.error: str | None = None
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

    def end(self, error: str, *, drop: bool) -> None:
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
            raise LinkClosedError(out.error)
        out.push((data,))

    async def recv(self) -> bytes:
        """Return the next frame; raises LinkClosedError once the link is closed and drained."""
        inbound = self.inbound
        await inbound.wait_until(lambda: bool(inbound.frames) or inbound.error is not None)
        if not inbound.frames:
            raise LinkClosedError(inbound.error)
        return inbound.pop()

    async def close(self, reason: str = "") -> None:
        raise NotImplementedError

    def _end_locally(self, reason: str) -> bool:
        """Closed here: recv fails at once, queued frames still go. False if it had already ended."""
        if self.inbound.error is not None:
            return False
        self.end_reason = reason
        message = f"link to {self.remote_address} closed locally"
        message += f": {reason}" if reason else ""
        self.inbound.end(message, drop=True)
        self.outbound.end(message, drop=False)
        return True

    def _end_remotely(self, message: str) -> None:
        """Closed by the peer or lost: frames received are still read, nothing more goes out."""
        self.inbound.end(message, drop=False)
        self.outbound.end(message, drop=True)

    def __repr__(self) -> str:
        role = "dialled" if self.initiator else "accepted"
        return f"<{type(self).__name__} {role} {self.remote_address}>"


class HttpAcceptedLink(_HttpLink):
    """The acceptor's end of a session: frames come in send bodies and leave in poll answers."""

    initiator = False

    def __init__(self, session: str, remote: str, peer_max_frame: int, queue_bytes: int) -> None:
        super().__init__(remote, peer_max_frame, queue_bytes)
        self.session = session
        self.in_seq = 0  # the last send body queued
        self.out_seq = 0  # the last batch handed to a poll
        self.unacked: bytes | None = None  # that batch, until a poll acknowledges it
        self.polls = 0  # counts polls: a newer poll ends an older one
        self.busy = 0  # requests in progress
        self.last_seen = time.monotonic()

    async def close(self, reason: str = "") -> None:
        """Close; the dialler's polls get the frames already sent, then ``reason``. Idempotent."""
        self._end_locally(reason)

    @contextlib.contextmanager
    def in_use(self) -> Iterator[None]:
        """Around a request: the session is not idle while it runs."""
        self.busy += 1
        self.last_seen = time.monotonic()
        try:
            yield
        finally:
            self.busy -= 1
            self.last_seen = time.monotonic()

    def idle_for(self, now: float) -> float:
        return 0.0 if self.busy else now - self.last_seen

    def acknowledge(self, ack: int) -> bytes | None:
        """Apply a poll's ``Ack``; returns the batch to send again if the last one was lost."""
        if self.unacked is not None and ack == self.out_seq:
            self.unacked = None
        elif self.unacked is not None and ack == self.out_seq - 1:
            return self.unacked
        elif ack != self.out_seq:
            raise _Refusal(f"acknowledgement {ack} does not match batch {self.out_seq}")
        return None

    def next_batch(self, room: int) -> bytes:
        """Take the next batch for a poll that can buffer ``room`` bytes; kept until acknowledged."""
        frames = self.outbound.take(min(room, self.peer_max_frame + _PREFIX.size))
        self.out_seq += 1
        self.unacked = _encode_batch(frames)
        return self.unacked


class _Opened(NamedTuple):
    """The acceptor's answer to ``open``."""

    session: str
    max_frame_bytes: int
    poll_timeout: float


class _Reply(NamedTuple):
    status: int
    batch: int  # X-Grav-Batch, or -1
    body: bytes


class _ClientPool:
    """The transport's one aiohttp ClientSession: open while a dial or a dialled link uses it.

    A leaf only dials and is never started or stopped, so the session cannot wait for ``stop``.
    """

    __slots__ = ("_http", "_users")

    def __init__(self) -> None:
        self._http: aiohttp.ClientSession | None = None
        self._users = 0

    def acquire(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0),  # a poll holds a connection: no pool cap
                timeout=aiohttp.ClientTimeout(total=None),  # each request sets its own
                trust_env=False,
                auto_decompress=False,
                skip_auto_headers=("Accept-Encoding",),
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        self._users += 1
        return self._http

    async def release(self) -> None:
        self._users -= 1
        if self._users == 0 and self._http is not None:
            http, self._http = self._http, None
            await http.close()


class HttpDialledLink(_HttpLink):
    """The dialler's end: a writer POSTs what is queued in batches; a reader keeps a poll waiting.

    Both run in a task the link owns from ``dial`` until the link ends; ``close`` waits for it.
    """

    initiator = True

    def __init__(
        self,
        pool: _ClientPool,
        base: str,
        remote: str,
        opened: _Opened,
        *,
        max_frame_bytes: int,
        queue_bytes: int,
        poll_wait: float,
        connect_timeout: float,
        close_timeout: float,
    ) -> None:
        super().__init__(remote, opened.max_frame_bytes, queue_bytes)
        self._pool = pool
        self._http = pool.acquire()
        self._base = base
        self._session = opened.session
        self._max_frame = max_frame_bytes
        self._poll_wait = poll_wait
        self._connect_timeout = connect_timeout
        self._close_timeout = close_timeout
        self._errors = _ErrorMap(remote, f"link to {remote}", on_link=True)
        self._goodbye: str | None = None  # the reason to tell the acceptor when the loops end
        self._draining = False  # the acceptor refused a send (410): the reader drains, then ends
        self._runner = asyncio.create_task(self._run(), name=f"http link to {base}")

    async def close(self, reason: str = "") -> None:
        """Send what is queued, then tell the acceptor ``reason``; at most ``close_timeout`` s.

        Idempotent.
        """
        if self._end_locally(reason):
            self._goodbye = reason
        runner = self._runner
        try:
            await asyncio.wait({runner}, timeout=self._close_timeout)
        finally:
            if not runner.done():
                runner.cancel()
                await asyncio.wait({runner})

    async def _run(self) -> None:
        try:
            await self._pump()
            if self._goodbye is not None:
                await self._say_goodbye(self._goodbye)
        finally:
            self._end_remotely(f"link to {self.remote_address} closed locally")
            await self._pool.release()

    async def _pump(self) -> None:
        """Run the writer and the reader until one ends, then end the link with its reason."""
        writer = asyncio.create_task(self._write_loop(), name=f"http send to {self._base}")
        reader = asyncio.create_task(self._read_loop(), name=f"http poll {self._base}")
        try:
            await asyncio.wait({writer, reader}, return_when=asyncio.FIRST_COMPLETED)
            if self._draining:  # frames the acceptor sent before it closed are still to come
                await asyncio.wait({reader})
        finally:
            writer.cancel()
            reader.cancel()
            await asyncio.wait({writer, reader})
        for task in (writer, reader):
            if not task.cancelled() and (exc := task.exception()) is not None:
                self._ended_by(exc)

    def _ended_by(self, exc: BaseException) -> None:
        if isinstance(exc, ProtocolError):
            if self._end_locally(str(exc)):  # the acceptor broke the wire use: refuse, tell it
                self._goodbye = str(exc)
        elif isinstance(exc, LinkClosedError):
            self._goodbye = None  # the acceptor ended the session, or cannot be reached
            self._end_remotely(str(exc))
        else:
            _log.error("http_link_failed", transport="http", peer=self.remote_address, exc_info=exc)
            self._end_remotely(f"link to {self.remote_address} lost: internal error: {exc!r}")

    async def _write_loop(self) -> None:
        out, seq = self.outbound, 0
        limit = self.peer_max_frame + _PREFIX.size
        while True:
            await out.wait_until(lambda: bool(out.frames) or out.error is not None)
            if not out.frames:
                return  # ended, and everything queued before went out
            seq += 1
            body = _encode_batch(out.take(limit))
            reply = await self._request(
                "POST",
                "send",
                {_SEQ: str(seq)},
                expect=(204, 410),
                body=body,
                limit=_MAX_REASON_BYTES,
            )
            if reply.status == 410:  # the acceptor closed: send nothing more, receive what it sent
                closed = _HttpStatus(410, reply.body.decode(errors="replace"))
                out.end(str(self._errors.translate(closed)), drop=True)
                self._draining = True
                return

    async def _read_loop(self) -> None:
        ack, limit = 0, self._max_frame + _PREFIX.size
        while True:
            room = await self._room()
            headers = {_ACK: str(ack), _WAIT: f"{self._poll_wait:g}", _ROOM: str(room)}
            reply = await self._request(
                "GET", "recv", headers, expect=(200, 204), limit=limit, wait=self._poll_wait
            )
            if reply.status == 204:
                continue
            if reply.batch != ack + 1:
                raise _Refusal(f"batch {reply.batch} out of sequence: expected {ack + 1}")
            self.inbound.push(_decode_batch(reply.body, self._max_frame))
            ack += 1

    async def _room(self) -> int:
        """The bytes the inbound queue can take; 0 if it stayed full for a whole poll wait."""
        inbound = self.inbound
        if inbound.full:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll_wait):
                    await inbound.wait_until(lambda: not inbound.full)
        return max(0, inbound.limit - inbound.size)

    async def _say_goodbye(self, reason: str) -> None:
        """Tell the acceptor the link is closed and why; best effort, within ``close_timeout``."""
        try:
            async with asyncio.timeout(self._close_timeout):
                await self._request("POST", "close", {}, expect=(204,), body=_cut_reason(reason))
        except (LinkClosedError, ProtocolError, TimeoutError) as exc:
            _log.debug("http_goodbye_failed", peer=self.remote_address, error=str(exc))

    async def _request(
        self,
        method: str,
        op: str,
        headers: dict[str, str],
        *,
        expect: tuple[int, ...],
        body: bytes | None = None,
        limit: int = 0,
        wait: float | None = None,
    ) -> _Reply:
        """One request of the session, sent once more if its connection dropped or a proxy failed.

        ``wait`` is how long the acceptor may hold it (a poll); ``limit`` bounds the answer's body.
        """
        headers[_SESSION] = self._session
        read = None if wait is None else wait + _POLL_GRACE  # a held send has no read timeout
        timeout = aiohttp.ClientTimeout(sock_connect=self._connect_timeout, sock_read=read)
        call = (method, f"{self._base}/{op}", headers, body, timeout)
        with self._errors:
            for _ in range(_ATTEMPTS - 1):
                try:
                    return await self._request_once(*call, expect=expect, limit=limit)
                except _RETRY_ERRORS:
                    pass
                except _HttpStatus as exc:
                    if exc.status not in _RETRY_STATUSES:
                        raise
            return await self._request_once(*call, expect=expect, limit=limit)

    async def _request_once(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        body: bytes | None,
        timeout: aiohttp.ClientTimeout,
        *,
        expect: tuple[int, ...],
        limit: int,
    ) -> _Reply:
        async with self._http.request(
            method,
            url,
            headers=headers,
            data=None if body is None else _payload(body),
            timeout=timeout,
            allow_redirects=False,
        ) as resp:
            if resp.status not in expect:
                raise _HttpStatus(resp.status, await _read_text(resp.content))
            data = await _read_limited(resp.content, limit)
            if data is None:
                raise _Refusal(f"an answer of over {limit} bytes from the acceptor")
            batch = resp.headers.get(_BATCH, "")
            return _Reply(resp.status, int(batch) if batch.isdigit() else -1, data)


# -- the transport --------------------------------------------------------------------------------


def _header_int(request: web.Request, name: str) -> int:
    raw = request.headers.get(name, "")
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 15):
        raise _Refusal(f"bad or missing {name} header: {raw[:40]!r}")
    return int(raw)


def _header_seconds(request: web.Request, name: str) -> float:
    raw = request.headers.get(name, "")
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise _Refusal(f"bad or missing {name} header: {raw[:40]!r}")
    return value


def _plain(status: int, text: str = "") -> web.Response:
    if status == 204:
        return web.Response(status=204)
    return web.Response(status=status, text=text)


async def _read_request(request: web.Request, limit: int) -> bytes:
    """The request's body; raises _Refusal (413) past ``limit`` bytes, (400) if unreadable."""
    length = request.content_length
    if length is not None and length > limit:
        raise _Refusal(f"body of {length} bytes exceeds the limit of {limit} bytes", 413)
    try:
        body = await _read_limited(request.content, limit)
    except HttpProcessingError as exc:
        raise _Refusal(f"unreadable body: {exc.message}") from exc
    if body is None:
        raise _Refusal(f"body exceeds the limit of {limit} bytes", 413)
    return body


async def _answer_headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["Cache-Control"] = "no-store"
    response.headers["Server"] = "gravpy"


def _peer_of(request: web.Request) -> str:
    peer = request.transport.get_extra_info("peername") if request.transport else None
    return _format_address(peer) if peer else str(request.remote)


_SessionHandler = Callable[[web.Request, HttpAcceptedLink], Awaitable[web.Response]]


class HttpTransport:
    """Listens on ``host:port`` under ``path`` and dials ``http://``/``https://`` URLs.

    ``port=0`` binds an ephemeral port; :meth:`endpoints` reports the real one. Pass ``ssl`` to
    listen with TLS (endpoints are then ``https://``). ``dial`` accepts ``http(s)://host[:port]/path``
    and ``host:port`` (``http://`` and this transport's ``path`` are added). ``queue_bytes`` bounds
    each direction's queue at each end of a link; ``poll_timeout`` is how long a poll waits empty
    (at most the acceptor's); ``max_sessions`` caps the accepted links; ``close_timeout`` bounds a
    close and the wait for requests still running on ``stop``.

    Links this transport dials belong to the caller, who closes them; ``stop`` does not.
    """

    name: Final = "http"
    schemes: Final = _SCHEMES

    def __init__(
        self,
        host: str = "0.0.0.0",
        port: int = 8081,
        path: str = "/meta/http",
        *,
        max_frame_bytes: int = DEFAULT_LIMITS.max_frame_bytes,
        poll_timeout: float = 20.0,
        queue_bytes: int = 1 << 20,
        max_sessions: int = 1024,
        close_timeout: float = 5.0,
        ssl: SSLContext | None = None,
    ) -> None:
        if not 0 <= port <= 65535:
            raise UsageError(f"port must be between 0 and 65535, got {port!r}")
        if not path.startswith("/") or path.endswith("/") or "?" in path or "#" in path:
            raise UsageError(f"path must start with '/' and not end with one, got {path!r}")
        if not 1 <= max_frame_bytes < 1 << 32:
            raise UsageError(
                f"max_frame_bytes must be between 1 and 2**32 - 1, got {max_frame_bytes!r}"
            )
        for label, count in (("queue_bytes", queue_bytes), ("max_sessions", max_sessions)):
            if count < 1:
                raise UsageError(f"{label} must be >= 1, got {count!r}")
        for label, seconds in (("poll_timeout", poll_timeout), ("close_timeout", close_timeout)):
            if not (math.isfinite(seconds) and seconds > 0):
                raise UsageError(f"{label} must be a positive number of seconds, got {seconds!r}")
        self.host, self.port, self.path = host, port, path
        self.max_frame_bytes = max_frame_bytes
        self.poll_timeout = poll_timeout
        self.queue_bytes = queue_bytes
        self.max_sessions = max_sessions
        self.close_timeout = close_timeout
        self._ssl = ssl
        self._runner: web.AppRunner | None = None
        self._on_link: LinkHandler | None = None
        self._endpoints: list[str] = []
        self._sessions: dict[str, HttpAcceptedLink] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._reaper: asyncio.Task[None] | None = None
        self._stopping = False
        self._pool = _ClientPool()

    # -- listening --------------------------------------------------------------------------------

    async def start(self, on_link: LinkHandler) -> None:
        """Bind and listen; returns once listening. Raises TransportError if it cannot bind."""
        if self._runner is not None:
            raise UsageError("this HttpTransport is already started")
        runner = web.AppRunner(
            self._application(),
            access_log=None,
            handler_cancellation=True,  # a poll whose dialler hung up ends at once
            auto_decompress=False,  # no compression bombs: bodies are taken as sent
            shutdown_timeout=self.close_timeout,
        )
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, ssl_context=self._ssl)
        try:
            with _ErrorMap(f"{self.host}:{self.port}", f"listen on {self.host}:{self.port}"):
                await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner, self._on_link = runner, on_link
        self._endpoints = self._list_endpoints(runner.addresses)
        self._reaper = asyncio.create_task(self._reap_idle(), name=f"http reaper {self.path}")

    def endpoints(self) -> list[str]:
        """URLs peers can dial, with the bound port.

        When bound to a wildcard address (``0.0.0.0``, ``::``) this is a best guess: the address of
        the interface holding the default route (found without sending anything), then loopback.
        """
        if self._runner is None:
            raise UsageError("endpoints() is only known after start()")
        return list(self._endpoints)

    async def stop(self) -> None:
        """Close every accepted link, wait for their handlers, stop listening. Idempotent."""
        runner = self._runner
        if runner is None or self._stopping:
            return
        self._stopping = True
        try:
            for link in list(self._sessions.values()):
                link._end_locally("transport stopped")  # waiting polls answer 410 with this
            if self._tasks:
                await asyncio.wait(set(self._tasks))
            if self._reaper is not None:
                self._reaper.cancel()
                await asyncio.wait({self._reaper})
            await runner.cleanup()
        finally:
            self._runner, self._on_link, self._reaper = None, None, None
            self._sessions.clear()
            self._endpoints = []
            self._stopping = False

    def _application(self) -> web.Application:
        app = web.Application(client_max_size=self.max_frame_bytes + _PREFIX.size)
        app.router.add_post(f"{self.path}/open", self._open)
        app.router.add_post(f"{self.path}/send", self._in_session(self._queue_batch))
        app.router.add_get(f"{self.path}/recv", self._in_session(self._poll), allow_head=False)
        app.router.add_post(f"{self.path}/close", self._in_session(self._peer_closed))
        app.on_response_prepare.append(_answer_headers)
        return app

    async def _open(self, request: web.Request) -> web.Response:
        if self._stopping or self._on_link is None:
            return _plain(503, "the transport is stopping")
        if len(self._sessions) >= self.max_sessions:
            return _plain(503, f"too many sessions ({self.max_sessions})")
        try:
            peer_max = _header_int(request, _MAX_FRAME)
        except _Refusal as exc:
            return _plain(exc.status, str(exc))
        session = secrets.token_urlsafe(18)
        link = HttpAcceptedLink(session, _peer_of(request), max(1, peer_max), self.queue_bytes)
        self._sessions[session] = link
        task = asyncio.create_task(self._serve_link(link, self._on_link), name=f"http {link!r}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        answer = {
            "version": _VERSION,
            "session": session,
            "max_frame_bytes": self.max_frame_bytes,
            "poll_timeout": self.poll_timeout,
        }
        return web.json_response(answer)

    def _in_session(
        self, serve: _SessionHandler
    ) -> Callable[[web.Request], Awaitable[web.Response]]:
        """A handler for requests of a session: 404 if unknown; a refusal closes the session."""

        async def handle(request: web.Request) -> web.Response:
            link = self._sessions.get(request.headers.get(_SESSION, ""))
            if link is None:
                return _plain(404, "no such session: closed, reaped or never opened")
            with link.in_use():
                try:
                    return await serve(request, link)
                except _Refusal as exc:
                    link._end_locally(str(exc))
                    return _plain(exc.status, str(exc))

        return handle

    async def _queue_batch(self, request: web.Request, link: HttpAcceptedLink) -> web.Response:
        """``send``: queue the body's frames for ``recv``, answering once they fit."""
        if link.ended:
            return _plain(410, link.end_reason or "")
        seq = _header_int(request, _SEQ)
        frames = _decode_batch(
            await _read_request(request, self.max_frame_bytes + _PREFIX.size), self.max_frame_bytes
        )
        if seq > link.in_seq + 1:
            raise _Refusal(f"batch {seq} out of sequence: expected {link.in_seq + 1}")
        inbound = link.inbound
        await inbound.wait_until(lambda: link.ended or not inbound.full)
        if link.ended:
            return _plain(410, link.end_reason or "")
        if seq == link.in_seq + 1:  # else a repeat of a batch already queued
            inbound.push(frames)
            link.in_seq = seq
        return _plain(204)

    async def _poll(self, request: web.Request, link: HttpAcceptedLink) -> web.Response:
        """``recv``: the next batch as soon as there is one, 204 after the wait, 410 once closed."""
        ack, room = _header_int(request, _ACK), _header_int(request, _ROOM)
        wait = min(_header_seconds(request, _WAIT), self.poll_timeout)
        again = link.acknowledge(ack)
        if room == 0:
            return _plain(204)  # "still here" from a dialler that cannot take frames now
        if again is not None:
            return web.Response(body=again, headers={_BATCH: str(link.out_seq)})
        link.polls += 1
        poll, out = link.polls, link.outbound
        out.wake()  # ends an older poll still waiting
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                await out.wait_until(
                    lambda: bool(out.frames) or out.error is not None or link.polls != poll
                )
        if link.polls != poll:
            return _plain(204)
        if out.frames:
            batch = link.next_batch(room)
            return web.Response(body=batch, headers={_BATCH: str(link.out_seq)})
        if out.error is not None:
            self._sessions.pop(link.session, None)
            return _plain(410, link.end_reason or "")
        return _plain(204)

    async def _peer_closed(self, request: web.Request, link: HttpAcceptedLink) -> web.Response:
        """``close``: the dialler closed the link; ``recv`` drains, then raises with its reason."""
        reason = (await _read_request(request, _MAX_REASON_BYTES)).decode(errors="replace")
        suffix = f": {reason}" if reason else ""
        link._end_remotely(f"link to {link.remote_address} closed by peer{suffix}")
        self._sessions.pop(link.session, None)
        return _plain(204)

    async def _serve_link(self, link: HttpAcceptedLink, on_link: LinkHandler) -> None:
        """The per-link handler task: the link lives while ``on_link`` runs."""
        try:
            await on_link(link)
        except LinkClosedError:
            pass  # the link closed under the handler: a normal end
        except Exception:
            _log.exception("link_handler_failed", transport=self.name, peer=link.remote_address)
            await link.close("link handler failed")
        finally:
            await link.close()

    async def _reap_idle(self) -> None:
        """Every ``poll_timeout``, close and forget sessions silent for 3 x ``poll_timeout``."""
        limit = _IDLE_POLLS * self.poll_timeout
        while True:
            await asyncio.sleep(self.poll_timeout)
            now = time.monotonic()
            for session, link in list(self._sessions.items()):
                if link.idle_for(now) > limit:
                    del self._sessions[session]
                    link._end_locally(f"session idle for {limit:g} s: the dialler stopped polling")

    def _list_endpoints(self, addresses: list[Any]) -> list[str]:
        scheme = "https" if self._ssl is not None else "http"
        found: list[str] = []
        for address in addresses:
            host, port = str(address[0]), int(address[1])
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            hosts = _wildcard_guess(family) if host in ("0.0.0.0", "::") else [host]
            for h in hosts:
                url = f"{scheme}://{_format_address((h, port))}{self.path}"
                if url not in found:
                    found.append(url)
        return found

    # -- dialling ---------------------------------------------------------------------------------

    async def dial(self, url: str, *, timeout: float) -> HttpDialledLink:
        """Open a session at ``url`` within ``timeout`` seconds.

        Raises UsageError for a URL this transport cannot dial and TransportError (``__cause__``
        set) when the connection or the ``open`` request fails, is refused or times out.
        """
        base = self.normalize_url(url)
        parts = urlsplit(base)
        default_port = 443 if parts.scheme == "https" else 80
        remote = _format_address((parts.hostname, parts.port or default_port))
        http = self._pool.acquire()
        try:
            with _ErrorMap(remote, f"dial {base}"):
                async with asyncio.timeout(timeout):
                    opened = await self._open_session(http, base)
            return HttpDialledLink(
                self._pool,
                base,
                remote,
                opened,
                max_frame_bytes=self.max_frame_bytes,
                queue_bytes=self.queue_bytes,
                poll_wait=min(self.poll_timeout, opened.poll_timeout),
                connect_timeout=timeout,
                close_timeout=self.close_timeout,
            )
        finally:
            await self._pool.release()  # the link holds its own use of the pool

    async def _open_session(self, http: aiohttp.ClientSession, base: str) -> _Opened:
        headers = {_MAX_FRAME: str(self.max_frame_bytes)}
        async with http.post(f"{base}/open", headers=headers, allow_redirects=False) as resp:
            if resp.status != 200:
                raise _HttpStatus(resp.status, await _read_text(resp.content))
            return _parse_opened(await _read_limited(resp.content, _SMALL_BODY))

    def normalize_url(self, url: str) -> str:
        """``url`` as a full ``http(s)://host[:port]/path`` URL; raises UsageError if it is not one."""
        raw = url.strip()
        if "://" not in raw:
            raw = "http://" + raw
        try:
            parts = urlsplit(raw)
            port = parts.port  # raises ValueError for a bad port
        except ValueError as exc:
            raise UsageError(f"not an HTTP URL: {url!r} ({exc})") from exc
        if port == 0:
            raise UsageError(f"not an HTTP URL: {url!r} (port 0 cannot be dialled)")
        if parts.scheme not in _SCHEMES:
            raise UsageError(f"not an HTTP URL: {url!r} (scheme must be one of {_SCHEMES})")
        if not parts.hostname or parts.username is not None or parts.query or parts.fragment:
            raise UsageError(f"not an HTTP URL: {url!r} (a host, and no user, query or fragment)")
        return parts._replace(path=parts.path.rstrip("/") or self.path).geturl()

    def __repr__(self) -> str:
        state = ", ".join(self._endpoints) if self._runner else "not listening"
        return f"<HttpTransport {state}>"


def _parse_opened(body: bytes | None) -> _Opened:
    """The acceptor's answer to ``open``; raises ValueError if it is not a gravpy session."""
    try:
        answer = json.loads(body) if body is not None else None
    except ValueError:
        answer = None
    if not isinstance(answer, dict) or answer.get("version") != _VERSION:
        raise ValueError("the answer to open is not a gravpy HTTP session (version 1)")
    session, limit, poll = (
        answer.get("session"),
        answer.get("max_frame_bytes"),
        answer.get("poll_timeout"),
    )
    if not (isinstance(session, str) and _SESSION_ID.fullmatch(session)):
        raise ValueError("the answer to open has no valid session id")
    if type(limit) is not int or not 1 <= limit < 1 << 32:
        raise ValueError(f"the answer to open has a bad max_frame_bytes: {limit!r}")
    if not isinstance(poll, int | float) or isinstance(poll, bool) or not 0 < poll < math.inf:
        raise ValueError(f"the answer to open has a bad poll_timeout: {poll!r}")
    return _Opened(session, limit, float(poll))

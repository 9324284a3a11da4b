"""The accepting end: one session as :class:`HttpAcceptedLink`, and the request helpers.

The aiohttp application that serves sessions is :class:`~transports.http.HttpTransport`'s; the
helpers here read its requests and write its answers.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Awaitable, Callable, Iterator

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from transports._addresses import format_address
from transports.http.link import _HttpLink
from transports.http.wire import _PREFIX, _encode_batch, _read_limited, _Refusal


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


# -- requests and answers -------------------------------------------------------------------------


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
    return format_address(peer) if peer else str(request.remote)


_SessionHandler = Callable[[web.Request, HttpAcceptedLink], Awaitable[web.Response]]

"""The wire pieces of the HTTP transport: headers, limits, body framing, the one error map.

Constants and helpers that both ends use; the wire use itself is described in the package docstring
(:mod:`transports.http`).
"""

from __future__ import annotations

import errno
import re
import struct
import warnings
from collections.abc import Iterable
from typing import Final

import aiohttp

from gravpy.errors import GravError, LinkClosedError, ProtocolError, TransportError
from gravpy.transport_kit import CERT_REFUSED_HINT, CLOSED_BY_PEER, LOST, ErrorMap, link_closed

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


class _ErrorMap(ErrorMap):
    """aiohttp, socket, TLS and HTTP-status failures as gravpy errors; see the package docstring."""

    def dial_error(self, exc: Exception) -> GravError:
        if isinstance(exc, _HttpStatus):
            return TransportError(f"{self.action}: refused with {exc}")
        error = super().dial_error(exc)
        if isinstance(exc, aiohttp.ServerDisconnectedError) and self.action.startswith(
            "dial http://"
        ):  # what a TLS listener does with a plain HTTP request: hang up
            return TransportError(f"{error} (a TLS listener? then dial https://)")
        hung_up = isinstance(exc, aiohttp.ServerDisconnectedError) or (
            isinstance(exc, aiohttp.ClientOSError)
            and not isinstance(exc, aiohttp.ClientConnectorError)  # (refused, unreachable)
            and exc.errno == errno.ECONNRESET
        )
        if hung_up and self.action.startswith("dial https://"):
            return TransportError(f"{error} {CERT_REFUSED_HINT}")
        return error

    def link_error(self, exc: Exception) -> GravError:
        if isinstance(exc, _HttpStatus):
            return self._status_ended(exc)
        if isinstance(exc, TimeoutError):
            return link_closed(self.remote, LOST, "the acceptor did not answer in time")
        return super().link_error(exc)

    def _status_ended(self, exc: _HttpStatus) -> LinkClosedError:
        if exc.status == 410:
            return link_closed(self.remote, CLOSED_BY_PEER, exc.text)
        if exc.status == 404:
            why = "the acceptor has no such session (stopped, restarted or reaped)"
            return link_closed(self.remote, LOST, why)
        if 400 <= exc.status < 500:
            return link_closed(self.remote, CLOSED_BY_PEER, exc.text, code=exc.status)
        return link_closed(self.remote, LOST, str(exc))


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

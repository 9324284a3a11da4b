"""The dialling end: :class:`HttpDialledLink` and the one aiohttp client session it shares."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from typing import NamedTuple

import aiohttp

from gravpy import _log as logs
from gravpy.errors import LinkClosedError, ProtocolError
from transports.http.link import _HttpLink
from transports.http.wire import (
    _ACK,
    _ATTEMPTS,
    _BATCH,
    _MAX_REASON_BYTES,
    _POLL_GRACE,
    _PREFIX,
    _RETRY_ERRORS,
    _RETRY_STATUSES,
    _ROOM,
    _SEQ,
    _SESSION,
    _SESSION_ID,
    _VERSION,
    _WAIT,
    _cut_reason,
    _decode_batch,
    _encode_batch,
    _ErrorMap,
    _HttpStatus,
    _payload,
    _read_limited,
    _read_text,
    _Refusal,
)

_log = logs.get_logger("gravpy.transports.http")


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

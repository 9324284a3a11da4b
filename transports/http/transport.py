"""The HTTP transport: :class:`HttpTransport` listens with an aiohttp app and dials URLs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from gravpy.errors import UsageError
from gravpy.plugins import LinkHandler
from gravpy.proto import DEFAULT_LIMITS
from gravpy.tls import SslOption, TlsContexts, as_tls
from gravpy.transport_kit import CLOSED_BY_PEER, check_url_path, link_closed, serve_link
from transports._addresses import format_address, wildcard_hosts
from transports.http.client import HttpDialledLink, _ClientPool, _Opened, _parse_opened
from transports.http.guard import ConnectionGuard, GuardedRunner, RateLimitFilter
from transports.http.server import (
    HttpAcceptedLink,
    _answer_headers,
    _header_int,
    _header_seconds,
    _peer_of,
    _plain,
    _read_request,
    _SessionHandler,
)
from transports.http.wire import (
    _ACK,
    _BATCH,
    _IDLE_POLLS,
    _MAX_FRAME,
    _MAX_REASON_BYTES,
    _PREFIX,
    _ROOM,
    _SCHEMES,
    _SEQ,
    _SESSION,
    _SMALL_BODY,
    _VERSION,
    _WAIT,
    _decode_batch,
    _ErrorMap,
    _HttpStatus,
    _read_limited,
    _read_text,
    _Refusal,
)
from transports.tls_door import TlsDoor, TlsFailures

_SERVER_LOG = logging.getLogger("gravpy.transports.http.server")
_SERVER_LOG.addFilter(RateLimitFilter())  # a flood of bad requests logs a few lines, not 13,000


class HttpTransport:
    """Listens on ``host:port`` under ``path`` and dials ``http://``/``https://`` URLs.

    ``port=0`` binds an ephemeral port; :meth:`endpoints` reports the real one. ``ssl`` (a
    :class:`~gravpy.tls.TlsContexts` or one context, see :mod:`gravpy.tls`): with a server context
    it listens with TLS (endpoints are then ``https://``); a client context is what ``https://``
    dials trust and present (else the system's trust store). ``dial`` accepts ``http(s)://host[:port]/path``
    and ``host:port`` (``http://`` and this transport's ``path`` are added). ``queue_bytes`` bounds
    each direction's queue at each end of a link; ``poll_timeout`` is how long a poll waits empty
    (at most the acceptor's); ``max_sessions`` caps the accepted links; ``close_timeout`` bounds a
    close and the wait for requests still running on ``stop``. ``max_connections`` caps the open
    connections (the excess is refused at once); a connection must send a request's headers within
    ``header_timeout`` and a body within ``body_timeout`` (``transports.http.guard``).

    Links this transport dials belong to the caller, who closes them; ``stop`` does not.
    """

    name: Final = "http"
    schemes: Final = _SCHEMES
    preference: Final = 30  # the slowest: for networks where only plain HTTP passes

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
        ssl: SslOption = None,
        max_connections: int = 1024,
        header_timeout: float = 10.0,
        body_timeout: float = 10.0,
    ) -> None:
        if not 0 <= port <= 65535:
            raise UsageError(f"port must be between 0 and 65535, got {port!r}")
        check_url_path(path, http=True)
        if not 1 <= max_frame_bytes < 1 << 32:
            raise UsageError(
                f"max_frame_bytes must be between 1 and 2**32 - 1, got {max_frame_bytes!r}"
            )
        counts = (
            ("queue_bytes", queue_bytes),
            ("max_sessions", max_sessions),
            ("max_connections", max_connections),
        )
        for label, count in counts:
            if count < 1:
                raise UsageError(f"{label} must be >= 1, got {count!r}")
        timeouts = (
            ("poll_timeout", poll_timeout),
            ("close_timeout", close_timeout),
            ("header_timeout", header_timeout),
            ("body_timeout", body_timeout),
        )
        for label, seconds in timeouts:
            if not (math.isfinite(seconds) and seconds > 0):
                raise UsageError(f"{label} must be a positive number of seconds, got {seconds!r}")
        self.host, self.port, self.path = host, port, path
        self.max_frame_bytes = max_frame_bytes
        self.poll_timeout = poll_timeout
        self.queue_bytes = queue_bytes
        self.max_sessions = max_sessions
        self.close_timeout = close_timeout
        self.body_timeout = body_timeout
        self.guard = ConnectionGuard(max_connections, header_timeout)
        self.tls = as_tls(ssl)
        self.tls_failures = TlsFailures(self.name)
        self._runner: web.AppRunner | None = None
        self._on_link: LinkHandler | None = None
        self._endpoints: list[str] = []
        self._sessions: dict[str, HttpAcceptedLink] = {}
        self.sessions_refused = 0  # opens answered 503: max_sessions links were open
        self._tasks: set[asyncio.Task[None]] = set()
        self._reaper: asyncio.Task[None] | None = None
        self._stopping = False
        self._pool = _ClientPool()
        self._pool.ssl = self.tls.client

    @property
    def tls_handshakes_failed(self) -> int:
        """TLS handshakes on the listener that failed or timed out (logged, a few per burst)."""
        return self.tls_failures.count

    @property
    def connections_timed_out(self) -> int:
        """Connections dropped because no request came within ``header_timeout`` of opening or
        of the last answer (or, the listener full, closed early for idling that long)."""
        return self.guard.timed_out

    @property
    def connections_refused(self) -> int:
        """Connections refused at once (``max_connections`` were open), and opens refused with
        503 (``max_sessions`` links were open)."""
        return self.guard.refused + self.sessions_refused

    def use_tls(self, tls: TlsContexts) -> None:
        """Take the contexts of ``tls`` this transport has none of (before ``start``)."""
        self.tls = self.tls.merged(tls)
        self._pool.ssl = self.tls.client

    # -- listening --------------------------------------------------------------------------------

    async def start(self, on_link: LinkHandler) -> None:
        """Bind and listen; returns once listening. Raises TransportError if it cannot bind."""
        if self._runner is not None:
            raise UsageError("this HttpTransport is already started")
        runner = GuardedRunner(
            self._application(),
            self.guard,
            logger=_SERVER_LOG,
            access_log=None,
            handler_cancellation=True,  # a poll whose dialler hung up ends at once
            auto_decompress=False,  # no compression bombs: bodies are taken as sent
            shutdown_timeout=self.close_timeout,
        )
        if self.tls.server is not None:  # TLS after the cap (transports.tls_door)
            timeout = self.guard.header_timeout
            self.guard.door = TlsDoor(
                self.tls.server, timeout, self.close_timeout, self.tls_failures
            )
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
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
            if self.guard.door is not None:  # no handshake completes during the cleanup
                await self.guard.door.close()
            await runner.cleanup()
        finally:
            self._runner, self._on_link, self._reaper = None, None, None
            self._sessions.clear()
            self._endpoints = []
            self._stopping = False

    def _application(self) -> web.Application:
        app = web.Application(
            client_max_size=self.max_frame_bytes + _PREFIX.size,
            middlewares=[self.guard.middleware],
        )
        app.router.add_post(f"{self.path}/open", self._open)
        app.router.add_post(f"{self.path}/send", self._in_session(self._queue_batch))
        app.router.add_get(f"{self.path}/recv", self._in_session(self._poll), allow_head=False)
        app.router.add_post(f"{self.path}/close", self._in_session(self._peer_closed))
        app.on_response_prepare.append(_answer_headers)
        return app

    async def _open(self, request: web.Request) -> web.Response:
        if self._stopping or self._on_link is None:
            return _plain(503, "the transport is stopping")
        refusal = self.tls.refusal(
            request.transport and request.transport.get_extra_info("peercert")
        )
        if refusal is not None:  # (counted and logged as a failed TLS handshake)
            self.tls_failures.failed(request.remote or "?", refusal)
            return _plain(403, refusal)
        if len(self._sessions) >= self.max_sessions:
            self._evict_ended()
        if len(self._sessions) >= self.max_sessions:
            self.sessions_refused += 1
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
            await self._body(request, self.max_frame_bytes + _PREFIX.size), self.max_frame_bytes
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
        reason = (await self._body(request, _MAX_REASON_BYTES)).decode(errors="replace")
        link._end_remotely(link_closed(link.remote_address, CLOSED_BY_PEER, reason))
        self._sessions.pop(link.session, None)
        return _plain(204)

    async def _body(self, request: web.Request, limit: int) -> bytes:
        """The request's body, within ``body_timeout`` (else 408: a dribbled body is cut off)."""
        try:
            async with asyncio.timeout(self.body_timeout):
                return await _read_request(request, limit)
        except TimeoutError:
            raise _Refusal(f"body not received within {self.body_timeout:g} s", 408) from None

    async def _serve_link(self, link: HttpAcceptedLink, on_link: LinkHandler) -> None:
        """The per-link handler task: the link lives while ``on_link`` runs."""
        await serve_link(link, on_link, transport=self.name)

    def _evict_ended(self) -> None:
        """The table is full: forget sessions whose link already ended (a bare ``open`` whose
        handshake never completed holds its place no longer than the handshake deadline)."""
        for session, link in list(self._sessions.items()):
            if link.ended:
                del self._sessions[session]

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
        scheme = "https" if self.tls.server is not None else "http"
        found: list[str] = []
        for address in addresses:
            host, port = str(address[0]), int(address[1])
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            hosts = wildcard_hosts(family) if host in ("0.0.0.0", "::") else [host]
            for h in hosts:
                url = f"{scheme}://{format_address((h, port))}{self.path}"
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
        remote = format_address((parts.hostname, parts.port or default_port))
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

"""Who may open the dashboard: anyone on loopback, only token holders beyond it.

Theory of operation. The dashboard listens where the monitor listens. On a loopback address
(127.0.0.0/8, ::1, ``localhost``) only local users reach it and no token is asked, but the
request's ``Host`` header must name loopback too (``localhost``, 127.0.0.0/8 or ``[::1]``, any
port, or the monitor's own listen host): a web page whose DNS name an attacker rebinds to
127.0.0.1 is then the browser's same origin as the attacker's site, and its requests carry that
name, so they are refused (403) instead of reading the tail and the events (DNS rebinding). Beyond
loopback the tail shows message data, so every dashboard request must carry the token read from
``--dashboard-token-file``: as ``Authorization: Bearer <token>``, or as the ``gravd_dashboard``
cookie that ``/?token=<token>`` sets (HttpOnly, SameSite=Strict) before redirecting to ``/``, so
the token leaves the address bar at once (a rebinding page never holds the token nor the cookie,
which the browser keeps for the monitor's own name). Without a token file there, the dashboard
refuses with 403 and says why; ``/healthz``, ``/v1/node`` and ``/metrics`` are not affected (they are the
monitor's, not the dashboard's). ``/v1/events`` is behind the same gate (``for_monitor`` builds
the one gate the monitor shares between them), whether or not the dashboard itself is on. Tokens
are compared in constant time. Every refusal is counted in ``refused`` (``/v1/dashboard``).
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from gravpy.daemon.parsers import Address
from gravpy.errors import UsageError

__all__ = ["COOKIE", "Access", "host_name", "is_loopback", "read_token"]

COOKIE = "gravd_dashboard"
MIN_TOKEN_CHARS = 16
_SHOWN_HOST_CHARS = 80  # of a refused Host header, quoted in the answer
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def is_loopback(host: str) -> bool:
    """True if ``host`` (a monitor listen address) only accepts local connections."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_name(header: str) -> str | None:
    """The host named by a ``Host`` header, lower-cased, without its port (``[::1]:80`` gives
    ``::1``); None if the header is not ``host[:port]``."""
    port = ""
    if header.startswith("["):
        name, bracket, rest = header[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            return None
        port = rest[1:]
    else:
        name, colon, port = header.rpartition(":")
        if not colon:
            name, port = header, ""
    if not name or (port and not (port.isascii() and port.isdigit())):
        return None
    return name.lower()


def _same(offered: str, token: str) -> bool:
    """``offered`` is ``token``, compared in constant time. A header's bytes that are not UTF-8
    reach us as surrogate escapes, which ``str.encode`` refuses: such a token is wrong, not an
    error."""
    try:
        given = offered.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return False
    return hmac.compare_digest(given, token.encode())


def read_token(path: Path) -> str:
    """The token in ``path`` (whitespace around it ignored); raises ``UsageError``."""
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read the dashboard token file {path}: {exc}") from None
    if len(token) < MIN_TOKEN_CHARS or any(c.isspace() for c in token):
        raise UsageError(
            f"{path}: a dashboard token is at least {MIN_TOKEN_CHARS} characters, no spaces "
            f"(make one with: head -c 24 /dev/urandom | base64 > {path.name})"
        )
    return token


class Access:
    """The dashboard's gate for a monitor listening on ``address``."""

    def __init__(self, address: Address, token: str | None) -> None:
        self.open = is_loopback(address.host) and token is None
        self.token = token
        self.refused = 0
        self._own_host = address.host.lower()

    @classmethod
    def for_monitor(cls, address: Address, token_file: Path | None) -> Access:
        """The gate of a monitor on ``address`` with this token file (``UsageError`` if unreadable)."""
        return cls(address, read_token(token_file) if token_file else None)

    def guard(self, handler: Handler) -> Handler:
        """``handler``, answering 401/403 first unless the request may pass."""

        async def guarded(request: web.Request) -> web.StreamResponse:
            problem = self.problem(request)
            if problem is not None:
                return problem
            return await handler(request)

        return guarded

    def problem(self, request: web.Request) -> web.Response | None:
        """None if ``request`` may pass, else the answer that refuses it (counted)."""
        problem = self._problem(request)
        if problem is not None:
            self.refused += 1
        return problem

    def _problem(self, request: web.Request) -> web.Response | None:
        if self.open:
            return self._foreign_host(request.headers.get("Host", ""))
        if self.token is None:
            return web.json_response(
                {
                    "error": "the dashboard and /v1/events need --dashboard-token-file when the "
                    "monitor listens beyond loopback (they show message data)"
                },
                status=403,
            )
        if self._holds_token(request):
            return None
        return web.json_response(
            {"error": "open /?token=<token> once, or send Authorization: Bearer <token>"},
            status=401,
        )

    def _foreign_host(self, header: str) -> web.Response | None:
        """None if ``header`` names loopback or this monitor's host, else the 403 refusing it."""
        name = host_name(header)
        if name is not None and (name == self._own_host or is_loopback(name)):
            return None
        shown = header[:_SHOWN_HOST_CHARS] + ("..." if len(header) > _SHOWN_HOST_CHARS else "")
        return web.json_response(
            {
                "error": f"Host {shown!r} is not a loopback name: without --dashboard-token-file "
                "the dashboard and /v1/events answer only requests for localhost, 127.0.0.0/8 "
                "or [::1] (a page elsewhere whose name points at 127.0.0.1 must not read them: "
                "DNS rebinding)"
            },
            status=403,
        )

    def _holds_token(self, request: web.Request) -> bool:
        assert self.token is not None
        header = request.headers.get("Authorization", "")
        offered = [header[7:]] if header.startswith("Bearer ") else []
        offered.append(request.cookies.get(COOKIE, ""))
        return any(_same(o, self.token) for o in offered if o)

    def login(self, request: web.Request) -> web.Response | None:
        """For ``/?token=...``: raise the redirect to ``/`` that sets the cookie.

        None when no token is offered (or none is configured); a 401 answer for a wrong one.
        """
        offered = request.query.get("token")
        if offered is None or self.token is None:
            return None
        if not _same(offered, self.token):
            self.refused += 1
            return web.json_response({"error": "wrong token"}, status=401)
        redirect = web.HTTPSeeOther("/")
        redirect.set_cookie(COOKIE, self.token, httponly=True, samesite="Strict", path="/")
        raise redirect
